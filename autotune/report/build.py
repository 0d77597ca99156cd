"""Assembling the report: per device its sections, then the comparison across devices and the explain picture;
notes say what is missing instead of failing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autotune.core.errors import UserError
from autotune.report import plots, sections
from autotune.report.load import load
from autotune.report.model import Report, Section
from autotune.report.text import distinct, suite_names

TITLE = "Transposed-convolution autotuning report"


def build_report(directories: Sequence[str | Path], devices: Sequence[str] | None = None,
                 layer: str | None = None) -> Report:
    """The report of the results files in `directories` (earlier first), of `devices` only when given; `layer`
    (a suite name or a problem key) is drawn in the explain section, by default a measured strided layer.
    Raises UserError for an unknown `layer`; missing or unreadable results become notes."""
    df, notes = load(directories, devices)
    names = suite_names()
    out: list[Section] = []
    found = sorted(set(df["device"])) if len(df) else []
    if not found:
        notes.append("no results found in " + ", ".join(str(d) for d in directories)
                     + ": run `autotune tune` (or `autotune bench`) first; nothing to tabulate")
    for dev in found:
        part = df[df["device"] == dev]
        name = ", ".join(distinct(part["device_name"])) or dev
        out.append(Section(f"device-{dev}", f"Device {dev} ({name})", level=2))
        # Studies are tuning runs: bench's (and first calls') measurements count for the winners, not as studies.
        tuned = part[part["source"] == "tune"] if "source" in part.columns else part
        env = sections.environment(part)
        env.blocks.append(sections.problem_keys(part, names))
        for s in (sections.overview(part, names), sections.best(part, names), sections.speedup(tuned, names),
                  sections.convergence(tuned, names, dev), sections.importance(tuned, dev),
                  sections.failures(part), env):
            s.id = f"{s.id}-{dev}"   # unique ids: every device has the same sections
            out.append(s)
    out.append(sections.comparison(df, names, found) if found else
               Section("comparison", "Comparison across devices", ["No results: nothing to compare."], 2))
    try:
        out.append(sections.explain_layer(df, layer, names))
    except ValueError as exc:
        # The picture is an extra: a default layer it cannot draw is a note; the layer the user asked for is
        # their mistake to hear about.
        if layer:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"--layer {layer!r}: {exc}") from exc
        notes.append(f"explain picture left out: {exc}")
    if not plots.available():
        notes.append("matplotlib is not installed: plots left out (pip install convt-autotune[report])")
    return Report(TITLE, [str(d) for d in directories], notes, out, found)
