"""The summary of a run: per problem, op and device, the fastest `ok` config over the planned backends."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.core import results
from autotune.core.problem import Problem
from autotune.tuner.plan import StudyPlan
from autotune.tuner.study import RETIMED

COLUMNS = ["problem", "op", "device", "backend", "config", "time_ms", "gflops", "speedup_vs_default",
           "trials_ok", "trials"]


def summarize(results_dir: Path, plans: Sequence[StudyPlan]) -> pd.DataFrame:
    """Per problem, op and device: the fastest `ok` config over the planned backends (ranked as dispatch ranks it:
    the median of its rows' medians, re-timed rows included), its GFLOP/s, and its speed-up over its backend's
    default config (all rows in the results files count, earlier runs too; `trials` does not count re-timed
    rows)."""
    frames = []
    for device_id in sorted({p.device.id for p in plans}):
        path = results.device_file(results_dir, device_id)
        if path.is_file():
            frames.append(results.read_file(path))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    # Plans and rows indexed once, in plain Python (a pandas filter per key costs milliseconds, minutes over
    # thousands of problems): one pass over each.
    backends_of: dict[tuple[str, str, str, str], set[str]] = {}
    for p in plans:
        backends_of.setdefault((p.problem_name, p.op, p.device.id, p.problem.key), set()).add(p.backend.name)
    # (device, op, problem, backend) -> [trials, ok trials, {config: its ok times}, default times]
    stats: dict[tuple[str, str, str, str], list[Any]] = {}
    is_default = pd.to_numeric(df["is_default"], errors="coerce").fillna(0).tolist() if "is_default" in df else \
        [0] * len(df)
    retimed = df["reason"].fillna("").astype(str).str.startswith(RETIMED).tolist()
    for dev, op, key, name, status, t, config, default, again in zip(
            df["device"], df["op"], df["problem"], df["backend"], df["status"], df["time_s"], df["config"],
            is_default, retimed):
        s = stats.setdefault((dev, op, key, name), [0, 0, {}, []])
        s[0] += not again  # a re-timed config is not another trial
        if status != "ok":
            continue
        s[1] += not again
        s[2].setdefault(config, []).append(t)
        if default == 1:
            s[3].append(t)
    for s in stats.values():  # each config ranked as dispatch ranks it: the median of its rows' medians
        ranked = [(statistics.median(times), config) for config, times in s[2].items()]
        s[2] = min(ranked) if ranked else None
    out = []
    for (name, op, device_id, problem_key), names in backends_of.items():
        mine = [(b, stats[(device_id, op, problem_key, b)]) for b in sorted(names)
                if (device_id, op, problem_key, b) in stats]
        entry: dict[str, Any] = {"problem": name, "op": op, "device": device_id,
                                 "trials_ok": sum(s[1] for _, s in mine), "trials": sum(s[0] for _, s in mine)}
        timed = [(s[2][0], b, s) for b, s in mine if s[2] is not None]
        if timed:
            t, backend, s = min(timed, key=lambda x: x[0])
            flops = Problem.from_key(problem_key).flops(op)
            entry.update(backend=backend, config=s[2][1], time_ms=t * 1e3, gflops=flops / t / 1e9,
                         speedup_vs_default=statistics.median(s[3]) / t if s[3] else float("nan"))
        out.append(entry)
    return pd.DataFrame(out, columns=COLUMNS)


def format_summary(table: pd.DataFrame) -> str:
    if table.empty:
        return "no results"
    return table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3g}")
