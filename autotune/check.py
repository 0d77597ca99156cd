"""`autotune check`: every available backend, on each of its devices, against the reference.

Runs each op with the backend's default config (or `--configs K` sampled valid configs) on small problems that
each stress one semantic corner (`autotune/data/corners.csv`, or `--problems FILE`), and prints the largest error
per backend, device and op. Exit status 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import random
import sys
from importlib import resources

import numpy as np
import pandas as pd

import backends
from autotune.core.problem import OPS
from autotune.problems import load_problems
from autotune.core import reference

HELP = "check every available backend against the reference"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", metavar="FILE", help="problems CSV (default: built-in corner cases)")
    p.add_argument("--backends", nargs="+", metavar="NAME", help="backends to check (default: every available one)")
    p.add_argument("--configs", type=int, default=1, metavar="K",
                   help="configs per op: the default, plus K-1 sampled valid ones")


def run(args: argparse.Namespace) -> int:
    if args.problems:
        problems = load_problems(args.problems)
    else:
        with resources.as_file(resources.files("autotune").joinpath("data/corners.csv")) as path:
            problems = load_problems(path)
    names = args.backends or backends.names()
    rng = np.random.default_rng(0)
    rows = []
    for name in names:
        backend = backends.get(name)
        ok, why = backend.available()
        if not ok:
            print(f"check: {name}: not available: {why}", file=sys.stderr)
            if args.backends:
                rows.append({"backend": name, "device": "-", "op": "-", "checked": 0, "max_rel_err": np.nan,
                             "result": f"unavailable: {why}"})
            continue
        for device in backend.devices():
            for op in OPS:
                worst, checked, failures = 0.0, 0, []
                for named in problems:
                    p = named.problem
                    if backend.supports(p, device):
                        continue
                    space = backend.space(op, p, device)
                    configs = [space.validate(backend.default_config(op, p, device))]
                    others = [c for c in space.grid() if space.violation(c) is None and c != configs[0]] \
                        if space.size <= 4096 else []
                    configs += random.Random(0).sample(others, min(len(others), args.configs - 1))
                    inputs = tuple(None if s is None else rng.standard_normal(s).astype(p.dtype)
                                   for s in p.operand_shapes(op))
                    ref = reference.run(op, p, inputs)
                    for config in configs:
                        try:
                            out = np.asarray(backend.prepare(op, p, device, config)(*inputs), dtype=np.float64)
                            err = float(np.abs(out - ref).max()) / max(1.0, float(np.abs(ref).max()))
                        except Exception as exc:  # reported, not raised: check every backend
                            failures.append(f"{named.name} {config}: {type(exc).__name__}: {exc}")
                            continue
                        checked += 1
                        worst = max(worst, err)
                        if not np.isfinite(err) or err > 1e-4:
                            failures.append(f"{named.name} {config}: relative error {err:.3g}")
                for f in failures:
                    print(f"check: {name} {device.id} {op}: FAIL {f}", file=sys.stderr)
                rows.append({"backend": name, "device": device.id, "op": op, "checked": checked,
                             "max_rel_err": worst, "result": "FAIL" if failures else "ok"})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="{:.2e}".format))
    return 1 if (table.result != "ok").any() else 0
