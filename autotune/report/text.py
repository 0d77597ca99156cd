"""How values read in the report's cells: numbers, problem labels, shortened text, the order of ops. One
place, so the HTML, the Markdown and the tests agree on every cell."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from autotune.core.problem import OPS
from autotune.report.model import NOT_RUN


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return NOT_RUN
    return f"{v:.{digits}f}"


def fmt_gflops(v: float | None) -> str:
    """Two decimals; three significant digits below 1 GFLOP/s (tiny problems, backward_bias)."""
    if v is None or not math.isfinite(v) or v >= 1:
        return fmt(v, 2)
    return f"{v:.3g}"


def fmt_ms(seconds: float | None) -> str:
    return NOT_RUN if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e3:.3f}"


def is_number(s: str) -> bool:
    """Whether a cell reads as a number (right-aligned in both renderers)."""
    try:
        float(s)
        return True
    except ValueError:
        return False


def short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def distinct(values: Iterable[Any]) -> list[str]:
    """The distinct non-empty values as text, in first-seen order (missing values of any kind left out)."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        s = str(v).strip()
        if s and s not in out:
            out.append(s)
    return out


def suite_names() -> dict[str, str]:
    """problem key -> name in the built-in suite (for readable tables); also the gradient problems' keys."""
    try:
        from autotune.problems import load_problems
        named = load_problems()
    except Exception:  # noqa: BLE001  (the suite is a convenience for labels only)
        return {}
    out: dict[str, str] = {}
    for n in named:
        for op in OPS:
            out.setdefault(n.problem.for_op(op).key, n.name)
    return out


def label(key: str, names: dict[str, str]) -> str:
    return names.get(key, key)


def op_order(op: str) -> int:
    """Sort key: the ops in OPS order, unknown ones last."""
    return OPS.index(op) if op in OPS else len(OPS)


def short_label(key: str, names: dict[str, str]) -> str:
    """A problem's name in the suite, else a compact form of its key (batch, channels in>out, size, kernel,
    stride): short enough for an axis; the full key goes in a tooltip or the appendix."""
    if key in names:
        return names[key]
    try:
        from autotune.core.problem import Problem
        p = Problem.from_key(key)
    except (ValueError, TypeError):
        return short(key, 28)
    g = f" g{p.groups}" if p.groups != 1 else ""
    return f"n{p.N} {p.C_in}>{p.C_out} {p.H}x{p.W} k{p.kH} s{p.stride[0]}{g}"
