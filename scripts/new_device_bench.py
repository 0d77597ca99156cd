#!/usr/bin/env python
"""Issue 12's "a new device is fast in minutes" number: the first call on a device with no results of its own
against this device's tuned best.

For each suite problem and op, on this machine's CPU, two dispatch decisions are measured in the same run with
the same timing loop (`core.timing.measure`, the backend's runner):
- first call: the head of dispatch's chain when only the shipped results (`--shipped`, other devices') are
  present: the transfer rule, else the defaults (what an untuned device gets before any tuning);
- tuned: the head of the chain from `--tuned DIR`, results of `autotune tune --results DIR` on this machine.
It prints per (problem, op) both times and their ratio, and per op the geometric mean of first/tuned (target: at
most 1.25). Without `--tuned` only the first-call times are printed. With `--benchmark`, the first call is made as
with `autotune.benchmark = True`: the candidates are timed first (`first_call.tune`, `--benchmark-budget` seconds,
rows into a temporary directory) and the fastest of them is measured; the tuning time is printed per row.

Usage: .venv/bin/python scripts/new_device_bench.py --tuned DIR [--shipped results] [--only NAME...]
       [--ops forward backward_input backward_weight backward_bias] [--budget 0.3]
e.g.   autotune tune --preset suite --results /tmp/tuned-here && \\
       .venv/bin/python scripts/new_device_bench.py --tuned /tmp/tuned-here
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotune import api, bench, dispatch, first_call  # noqa: E402
from autotune.core import allocator, results, timing, verify  # noqa: E402
from autotune.core.devices import cpu_device_id  # noqa: E402
from autotune.problems import load_problems, select  # noqa: E402


def _times(choices: dict[str, dispatch.Choice], budget: float) -> dict[str, float]:
    """Each choice's median time, timed in interleaved rounds (`bench.interleaved`), the fastest round kept."""
    runs = {}
    for label, choice in choices.items():
        inputs = verify.make_inputs(choice.op, choice.problem)[0]
        runs[label] = choice.backend.runner(choice.kernel, inputs, choice.device)
    timed = bench.interleaved(runs, budget)
    return {label: t.median_s if isinstance(t, timing.Timing) else math.nan for label, t in timed.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tuned", help="results directory tuned on this machine")
    ap.add_argument("--shipped", default=str(ROOT / "results"), help="other devices' results (the shipped ones)")
    ap.add_argument("--only", nargs="+", default=None, help="suite problem names (default: all)")
    ap.add_argument("--ops", nargs="+", default=["forward", "backward_input", "backward_weight", "backward_bias"])
    ap.add_argument("--budget", type=float, default=0.3, help="timing budget per measurement, seconds")
    ap.add_argument("--benchmark", action="store_true", help="first call with first-call tuning on")
    ap.add_argument("--benchmark-budget", type=float, default=first_call.BUDGET_S)
    ap.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc as it is")
    args = ap.parse_args()
    print(f"# {allocator.timing_malloc(args.system_malloc)}")  # as `autotune tune` and `bench` time
    if args.benchmark:  # first-call rows go to a scratch directory, never the user's results
        os.environ[results.ENV_VAR] = tempfile.mkdtemp(prefix="new-device-bench-")
    ratios: dict[str, list[float]] = {op: [] for op in args.ops}
    print(f"{'problem':20s} {'op':16s} {'first rule':10s} {'first ms':>9s} {'tuned ms':>9s} {'ratio':>6s}")
    for named in select(load_problems(), args.only):
        for op in args.ops:
            dispatch.clear_cache()
            chain = dispatch.choices(op, named.problem, results_dirs=[args.shipped])
            tuning = ""
            if args.benchmark:
                start = time.perf_counter()
                first_call.tune(op, chain, verify.make_inputs(op, named.problem)[0], cpu_device_id(),
                                dispatch.table(cpu_device_id(), (Path(args.shipped),)), args.benchmark_budget,
                                api._convert)
                tuning = f" {time.perf_counter() - start:6.2f}s"
            chosen = {"first": chain[0]}
            if args.tuned:
                dispatch.clear_cache()
                chosen["tuned"] = dispatch.choices(op, named.problem, results_dirs=[args.tuned])[0]
            first = chosen["first"]
            times = _times(chosen, args.budget)
            t_first, t_tuned = times["first"], times.get("tuned", math.nan)
            if args.tuned:
                ratios[op].append(t_first / t_tuned)
            print(f"{named.name:20s} {op:16s} {first.reason:10s} {t_first * 1e3:9.3f} {t_tuned * 1e3:9.3f} "
                  f"{t_first / t_tuned:6.2f}{tuning}", flush=True)
    if args.tuned:
        for op, r in ratios.items():
            if r:
                gm = math.exp(sum(math.log(v) for v in r) / len(r))
                print(f"{op:16s} first call / tuned best, geometric mean over {len(r)} problems: {gm:.2f}x "
                      f"(target <= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
