"""The summary of a run: per problem, op and device, the fastest `ok` config over the planned backends."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.core import results
from autotune.tuner.plan import StudyPlan

COLUMNS = ["problem", "op", "device", "backend", "config", "time_ms", "gflops", "speedup_vs_default",
           "trials_ok", "trials"]


def summarize(results_dir: Path, plans: Sequence[StudyPlan]) -> pd.DataFrame:
    """Per problem, op and device: the fastest `ok` config over the planned backends, its GFLOP/s, and its
    speed-up over its backend's default config (all rows in the results files count, earlier runs too)."""
    frames = []
    for device_id in sorted({p.device.id for p in plans}):
        path = results.device_file(results_dir, device_id)
        if path.is_file():
            frames.append(results.read_file(path))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    # Plans and rows indexed once, so the table costs one pass over each (not plans x plans x rows).
    backends_of: dict[tuple[str, str, str, str], set[str]] = {}
    for p in plans:
        backends_of.setdefault((p.problem_name, p.op, p.device.id, p.problem.key), set()).add(p.backend.name)
    groups = {key: g for key, g in df.groupby(["device", "op", "problem"], sort=False)}
    out = []
    for (name, op, device_id, problem_key), names in backends_of.items():
        group = groups.get((device_id, op, problem_key), df.iloc[:0])
        rows = group[group["backend"].isin(names)]
        ok = rows[rows["status"] == "ok"]
        entry: dict[str, Any] = {"problem": name, "op": op, "device": device_id, "trials_ok": len(ok),
                                 "trials": len(rows)}
        if len(ok):
            best = ok.loc[ok["time_s"].idxmin()]
            defaults = ok[(ok["backend"] == best["backend"]) & (pd.to_numeric(ok["is_default"]) == 1)]
            entry.update(backend=best["backend"], config=best["config"], time_ms=best["time_s"] * 1e3,
                         gflops=best["gflops"],
                         speedup_vs_default=(defaults["time_s"].median() / best["time_s"]) if len(defaults)
                         else float("nan"))
        out.append(entry)
    return pd.DataFrame(out, columns=COLUMNS)


def format_summary(table: pd.DataFrame) -> str:
    if table.empty:
        return "no results"
    return table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3g}")
