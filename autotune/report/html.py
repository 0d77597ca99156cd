"""The report as one self-contained HTML page: plots embedded as base64 PNG and inline CSS, so it can be
viewed offline and sent as a single file."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from autotune.report.model import COLLAPSE_ROWS, Block, Image, Pre, Report, Table
from autotune.report.text import is_number

MAX_TABLE_ROWS = 400   # per table; the rest is counted, not shown

CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}\n"
       "table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;"
       "padding:.2em .5em;\n"
       "text-align:left}th{background:#f2f2f2}td.num{text-align:right}caption{caption-side:top;text-align:left;\n"
       "color:#555;font-size:.9em}img{max-width:100%;display:block;margin:.5em 0}pre{background:#f7f7f7;"
       "padding:.7em;\n"
       "overflow-x:auto;font-size:.8em}.notes li{color:#8a4b00}section.device{border-top:2px solid #888;"
       "margin-top:2em}\n"
       "nav a{margin-right:1em}.scroll{overflow-x:auto;max-width:100%}td{overflow-wrap:break-word}"
       "td.num{white-space:nowrap}\n"
       "h3{margin-top:1.6em}")


def _td(c: str, tips: dict[str, str]) -> str:
    cls = ' class="num"' if is_number(c) else ""
    tip = f' title="{html.escape(tips[c])}"' if c in tips else ""
    return f"<td{cls}{tip}>{html.escape(c)}</td>"


def table_html(t: Table) -> str:
    folded = not t.always_open and len(t.rows) > COLLAPSE_ROWS
    out = [f"<details><summary>{html.escape(t.caption or 'table')} ({len(t.rows)} rows)</summary>"] if folded else []
    out.append('<div class="scroll"><table>')
    if t.caption and not folded:
        out.append(f"<caption>{html.escape(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
               + "</tr></thead><tbody>")
    for row in t.rows[:MAX_TABLE_ROWS]:
        out.append("<tr>" + "".join(_td(c, t.tips) for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    if len(t.rows) > MAX_TABLE_ROWS:
        out.append(f"<p>... and {len(t.rows) - MAX_TABLE_ROWS} more rows not shown.</p>")
    if folded:
        out.append("</details>")
    return "\n".join(out)


def _block_html(b: Block) -> str:
    if isinstance(b, Table):
        return table_html(b)
    if isinstance(b, Image):
        data = base64.b64encode(b.png).decode("ascii")
        return f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
    if isinstance(b, Pre):
        return f"<pre>{html.escape(b.text)}</pre>"
    return f"<p>{html.escape(str(b))}</p>"


def render_html(r: Report) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(r.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(r.title)}</h1>",
           f"<p>Generated {now} from {html.escape(', '.join(r.sources))}. Devices: "
           f"{html.escape(', '.join(r.devices) or 'none')}.</p>"]
    nav = [f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in r.sections if s.level == 2]
    out.append("<nav>" + " ".join(nav) + "</nav>")
    out.append('<section id="notes"><h2>Notes</h2>')
    if r.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in r.notes) + "</ul>")
    else:
        out.append("<p>Nothing missing: every row was read.</p>")
    out.append("</section>")
    # A device's level-3 sections nest inside its level-2 section, which stays open until the next level 2.
    open_device = False
    for s in r.sections:
        if s.level == 2:
            if open_device:
                out.append("</section>")
                open_device = False
            cls = ' class="device"' if s.id.startswith("device-") else ""
            out.append(f'<section id="{html.escape(s.id)}"{cls}><h2>{html.escape(s.title)}</h2>')
            out += [_block_html(b) for b in s.blocks]
            if s.id.startswith("device-"):
                open_device = True
            else:
                out.append("</section>")
        else:
            out.append(f'<section id="{html.escape(s.id)}"><h3>{html.escape(s.title)}</h3>')
            out += [_block_html(b) for b in s.blocks]
            out.append("</section>")
    if open_device:
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(report: Report, path: str | Path) -> Path:
    """Write the page to `path` (parent directories created); OSError as raised, for the caller to word."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
