"""The report's Markdown summary (printed by `autotune report`): notes and the headline tables only; per-study
detail and the plots stay in the HTML page."""

from __future__ import annotations

from autotune.report.model import NOT_RUN, Report, Table
from autotune.report.text import is_number

# Sections kept in the summary (id prefixes); convergence and importance detail stay in the HTML.
KEEP = ("overview", "best", "speedup", "failures")


def table_markdown(t: Table, max_rows: int = 60) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ") or " "
    numeric = [bool(t.rows) and all(is_number(r[i]) or r[i] == NOT_RUN for r in t.rows)
               for i in range(len(t.columns))]
    lines = ["| " + " | ".join(cell(c) for c in t.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows[:max_rows]]
    if len(t.rows) > max_rows:
        lines.append(f"\n... {len(t.rows) - max_rows} more rows in the HTML report")
    return "\n".join(lines)


def markdown_summary(r: Report, html_path: str | None = None) -> str:
    """The summary; `html_path`, when given, is named at the end as where the full report is."""
    out = [f"# {r.title}", "",
           f"Results: {', '.join(r.sources)}; devices: {', '.join(r.devices) or 'none'}", ""]
    if r.notes:
        out += ["## Notes", "", *[f"- {n}" for n in r.notes], ""]
    for s in r.sections:
        if s.level == 2:
            if s.id == "explain":
                continue
            out += [f"## {s.title}", ""]
        elif not s.id.startswith(KEEP):
            continue
        else:
            out += [f"### {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                if s.id.startswith(("speedup", "environment")):
                    continue   # one row per study: too long for a terminal; the HTML has it
                out += [table_markdown(b), ""]
            elif isinstance(b, str):
                out += [b, ""]
    if html_path:
        out.append(f"HTML report with plots: {html_path}")
    return "\n".join(out).rstrip() + "\n"
