"""The report of the tuned results: one self-contained HTML page (plots embedded as base64 PNG, no network
needed to view it) and a Markdown summary.

Per device: the best GFLOP/s of every backend side by side with PyTorch's baseline, tuned against default
speed-up, each study's convergence, which parameters mattered, failed trials by reason, and the environment;
with several devices, a comparison across them; and the stride-phase picture of one layer (`autotune
explain`). Empty, partial or mixed-version results are reported as such ("no default-config trial ...")
instead of failing.

Modules: `load` (results files -> rows and notes), `analysis` (the numbers), `plots` (figures, matplotlib
imported lazily), `sections` (numbers -> document blocks), `build` (the whole report), `model` (the document),
`html` and `markdown` (renderers), `text` (cell formatting). The command line is `autotune.cli.report`.
"""

from __future__ import annotations

from autotune.report.analysis import MIN_OPTUNA_TRIALS, optuna_importance, variance_importance
from autotune.report.build import build_report
from autotune.report.html import render_html, write_html
from autotune.report.load import load
from autotune.report.markdown import markdown_summary
from autotune.report.model import NOT_RUN, SECTION_TITLES, SECTIONS, Image, Pre, Report, Section, Table
from autotune.report.text import fmt_gflops, fmt_ms

__all__ = ["MIN_OPTUNA_TRIALS", "NOT_RUN", "SECTIONS", "SECTION_TITLES", "Image", "Pre", "Report", "Section",
           "Table", "build_report", "fmt_gflops", "fmt_ms", "load", "markdown_summary", "optuna_importance",
           "render_html", "variance_importance", "write_html"]
