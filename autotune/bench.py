"""`autotune bench`: every available backend side by side with PyTorch's own CPU `conv_transpose2d` (and its
backward ops: `aten.convolution_backward`, which autograd calls, for the input and weight gradients, and
`grad_output.sum((0, 2, 3))` for the bias gradient), timed in the same run, per problem and op.

Each backend runs its default config, the best config recorded in the results (`--configs tuned`), or the best
of a search over its space done right here (`--configs grid`, at most `--max-configs` valid configs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

import backends
from autotune import model_args, results
from autotune.devices import cpu_device_id, cpu_device_name
from autotune.problem import OPS, Problem
from autotune.problems import load_problems, select
from autotune.timing import Timing, measure
from backends.base import Backend, Config, Device, config_json
from backends.numpy import reference

HELP = "time every backend (and PyTorch as the baseline) on a set of problems"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", metavar="FILE", help="problems CSV (default: the built-in suite)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these problems of the file")
    model_args.add_arguments(p)
    p.add_argument("--backends", nargs="+", metavar="NAME", help="backends to run (default: every available one)")
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), metavar="OP",
                   help=f"ops to time (default: all of {', '.join(OPS)})")
    p.add_argument("--configs", choices=("default", "tuned", "grid"), default="default",
                   help="default config; best recorded in the results (else default); or search the space here")
    p.add_argument("--max-configs", type=int, default=24, metavar="K", help="configs timed per op with --configs grid")
    p.add_argument("--budget", type=float, default=0.5, metavar="S", help="seconds of repetitions per measurement")
    p.add_argument("--results", metavar="DIR", help="results directory read by --configs tuned")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--csv", metavar="FILE", help="also save the long table (one row per problem, op, backend)")
    p.add_argument("--record", action="store_true",
                   help="append every measurement (PyTorch's as status 'baseline') to the device's results file "
                        "in the results directory, for reports and dispatch")


# ---- PyTorch baseline -----------------------------------------------------------------------------------------
def _torch() -> Any:
    try:
        import torch
        return torch
    except ImportError:
        return None


def torch_runner(op: str, p: Problem, inputs: tuple) -> Any:
    """A zero-argument callable running PyTorch's CPU op, or None if torch is missing or cannot express `p`."""
    torch = _torch()
    pad = p.symmetric_padding
    if torch is None or pad is None or p.dtype not in ("float32", "float64"):
        return None
    t = [None if a is None else torch.from_numpy(a) for a in inputs]
    if op == "forward":
        x, w, b = t

        def fwd() -> None:
            with torch.no_grad():
                torch.nn.functional.conv_transpose2d(x, w, b, p.stride, pad, p.output_padding, p.groups, p.dilation)
        return fwd
    gy = t[0]
    if op == "backward_bias":
        # What a bias gradient costs in torch: a reduction. (aten.convolution_backward with only the bias in its
        # output mask took 200x longer here: it does the convolution's work too, which would flatter us.)
        def bias_grad() -> None:
            gy.sum((0, 2, 3))
        return bias_grad
    x = t[1] if op == "backward_weight" else torch.zeros(p.input_shape, dtype=gy.dtype)
    w = t[1] if op == "backward_input" else torch.zeros(p.weight_shape, dtype=gy.dtype)
    mask = [op == "backward_input", op == "backward_weight", False]

    def bwd() -> None:
        torch.ops.aten.convolution_backward(gy, x, w, [p.C_out], list(p.stride), list(pad), list(p.dilation),
                                            True, list(p.output_padding), p.groups, mask)
    return bwd


# ---- configs ---------------------------------------------------------------------------------------------------
def tuned_config(rows: pd.DataFrame, backend: Backend, op: str, p: Problem, device: Device) -> Config | None:
    """The fastest valid `ok` config recorded for (device, backend, op, problem), or None."""
    if rows.empty:
        return None
    key = p.for_op(op).key
    mine = rows[(rows.device == device.id) & (rows.backend == backend.name) & (rows.op == op) & (rows.problem == key)
                & (rows.status == "ok")].sort_values("time_s")
    space = backend.space(op, p, device)
    for text in mine.config:
        try:
            return space.validate(json.loads(text))
        except (ValueError, TypeError):
            continue
    return None


def candidate_configs(args: argparse.Namespace, rows: pd.DataFrame, backend: Backend, op: str, p: Problem,
                      device: Device) -> list[Config]:
    space = backend.space(op, p, device)
    default = space.validate(backend.default_config(op, p, device))
    if args.configs == "tuned":
        return [tuned_config(rows, backend, op, p, device) or default]
    if args.configs == "grid":
        valid = [c for c in space.grid() if space.violation(c) is None]
        if len(valid) > args.max_configs:
            rng = np.random.default_rng(0)
            valid = [valid[i] for i in sorted(rng.choice(len(valid), args.max_configs, replace=False))]
        return [default] + [c for c in valid if c != default]
    return [default]


# ---- the run ---------------------------------------------------------------------------------------------------
def _inputs(op: str, p: Problem) -> tuple:
    rng = np.random.default_rng(0)
    return tuple(None if s is None else rng.standard_normal(s).astype(p.dtype) for s in p.operand_shapes(op))


def _row(name: str, op: str, p: Problem, backend: str, device: str, config: str, t: Timing | None, status: str,
         err: float | None = None) -> dict[str, Any]:
    return {"problem_name": name, "op": op, "backend": backend, "device": device, "config": config, "status": status,
            "time_s": t.median_s if t else math.nan, "time_min_s": t.min_s if t else math.nan,
            "time_max_s": t.max_s if t else math.nan, "reps": t.reps if t else 0,
            "gflops": p.flops(op) / t.median_s / 1e9 if t else math.nan, "max_abs_err": err, "problem": p.key}


def _time_backend(args: argparse.Namespace, rows: pd.DataFrame, backend: Backend, device: Device, op: str,
                  p: Problem, inputs: tuple, expected: np.ndarray) -> tuple[Config | None, Timing | None, str, float]:
    """Time each candidate config; return the fastest correct one."""
    best: tuple[Config | None, Timing | None, str, float] = (None, None, "no valid config", math.nan)
    for config in candidate_configs(args, rows, backend, op, p, device):
        try:
            kernel = backend.prepare(op, p, device, config)
            out = np.asarray(kernel(*inputs), dtype=np.float64)
            err = float(np.abs(out - expected).max(initial=0.0))
            scale = float(np.abs(expected).max(initial=1.0))
            if not np.isfinite(err) or err > 1e-3 * max(1.0, scale):
                best = best if best[1] else (config, None, f"wrong answer (max abs err {err:.3g})", err)
                continue
            t = measure(backend.runner(kernel, inputs, device), budget_s=args.budget)
        except Exception as exc:  # a config that fails is reported, the bench goes on
            best = best if best[1] else (config, None, f"error: {type(exc).__name__}: {exc}"[:200], math.nan)
            continue
        if best[1] is None or t.median_s < best[1].median_s:
            best = (config, t, "ok", err)
    return best


def run(args: argparse.Namespace) -> int:
    problems = model_args.problems(args, args.only) or select(load_problems(args.problems), args.only)
    names = args.backends or backends.names()
    chosen: list[tuple[Backend, Device]] = []
    for name in names:
        backend = backends.get(name)
        ok, why = backend.available()
        if not ok:
            if args.backends:
                raise ValueError(f"backend {name!r} is not available here: {why}")
            print(f"bench: skipping backend {name}: {why}", file=sys.stderr)
            continue
        # Interpreter devices (Triton without a GPU) compute correctly but their timings are not speed.
        chosen.extend((backend, d) for d in backend.devices() if d.kind != "interpreter")
    if not chosen:
        raise ValueError("no backend with a device to time")
    rows = results.read_dirs([results.results_dir(args.results), results.shipped_results_dir()], errors=[]) \
        if args.configs == "tuned" else pd.DataFrame()
    torch = None if args.no_torch else _torch()
    if torch is None and not args.no_torch:
        print("bench: torch is not installed: no PyTorch baseline (pip install convt-autotune[torch])", file=sys.stderr)

    table: list[dict[str, Any]] = []
    start = time.perf_counter()
    total = len(problems) * len(args.ops)
    for i, named in enumerate(problems):
        for j, op in enumerate(args.ops):
            p = named.problem
            done = i * len(args.ops) + j
            print(f"bench: [{done + 1}/{total}] {named.name} {op} ({time.perf_counter() - start:.0f}s)",
                  file=sys.stderr, flush=True)
            inputs = _inputs(op, p)
            expected = reference.run(op, p, inputs)
            run_torch = torch_runner(op, p, inputs) if torch is not None else None
            if run_torch is not None:
                table.append(_row(named.name, op, p, "torch", cpu_device_id(), f"torch {torch.__version__}",
                                  measure(run_torch, budget_s=args.budget), "baseline"))
            for backend, device in chosen:
                why = backend.supports(p, device)
                if why:
                    table.append(_row(named.name, op, p, backend.name, device.id, "", None, f"unsupported: {why}"))
                    continue
                config, t, status, err = _time_backend(args, rows, backend, device, op, p, inputs, expected)
                table.append(_row(named.name, op, p, backend.name, device.id,
                                  config_json(config) if config is not None else "", t, status, err))
    df = pd.DataFrame(table)
    if args.record:
        record(df, problems, chosen, torch, args.results)
    print_table(df)
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"bench: saved {len(df)} rows to {args.csv}", file=sys.stderr)
    return 0


def record(df: pd.DataFrame, problems: list, chosen: list[tuple[Backend, Device]], torch: Any,
           results_arg: str | None) -> None:
    """Append the timed rows to each device's results file (failed ones are the tuner's business)."""
    from autotune import __version__
    by_name = {n.name: n.problem for n in problems}
    devices = {d.id: (b.version(), d.id, d.name) for b, d in chosen}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    per_file: dict[Any, list[dict[str, Any]]] = {}
    for r in df[df.status.isin(["ok", "baseline"])].itertuples():
        # PyTorch's baseline ran on this CPU.
        version, device_id, device_name = devices.get(r.device, (None, cpu_device_id(), cpu_device_name()))
        if r.backend == "torch":
            version = f"torch {torch.__version__}"
        p = by_name[r.problem_name].for_op(r.op)
        row = {"device": device_id, "device_name": device_name, "backend": r.backend, "op": r.op,
               **results.problem_columns(p), "config": "{}" if r.backend == "torch" else r.config,
               "status": r.status, "time_s": r.time_s, "gflops": r.gflops,
               "max_abs_err": None if pd.isna(r.max_abs_err) else r.max_abs_err, "timestamp": stamp,
               "time_min_s": r.time_min_s, "time_max_s": r.time_max_s, "reps": r.reps, "reason": "autotune bench",
               "backend_version": version, "autotune_version": __version__, "schema": results.SCHEMA_VERSION}
        per_file.setdefault(results.device_file(results.results_dir(results_arg), device_id), []).append(row)
    for path, rows in per_file.items():
        results.append_rows(path, rows)
        print(f"bench: recorded {len(rows)} rows in {path}", file=sys.stderr)


def summary(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wide table per problem and op, geometric means of GFLOP/s ratios against torch per backend and op)."""
    ok = df[df.status.isin(["ok", "baseline"])]
    wide = ok.pivot_table(index=["problem_name", "op"], columns="backend", values="gflops", aggfunc="max", sort=False)
    order = [p for p in dict.fromkeys(df.problem_name)]
    wide = wide.reindex(pd.MultiIndex.from_tuples([(p, o) for p in order for o in dict.fromkeys(df.op)
                                                   if (p, o) in wide.index], names=wide.index.names))
    geo = []
    if "torch" in wide.columns:
        for b in (c for c in wide.columns if c != "torch"):
            wide[f"{b}/torch"] = wide[b] / wide["torch"]
            for op, part in wide.groupby(level="op", sort=False):
                r = part[f"{b}/torch"].dropna()
                r = r[r > 0]
                if len(r):
                    geo.append({"backend": b, "op": op, "problems": len(r),
                                "geomean_ratio": float(np.exp(np.log(r).mean())), "min_ratio": float(r.min()),
                                "max_ratio": float(r.max())})
    return wide, pd.DataFrame(geo)


def print_table(df: pd.DataFrame) -> None:
    wide, geo = summary(df)
    with pd.option_context("display.width", 200, "display.max_rows", 1000, "display.max_columns", 50,
                           "display.float_format", "{:.2f}".format):
        print("GFLOP/s (higher is better); <backend>/torch = backend GFLOP/s over PyTorch's, same run")
        print(wide.to_string())
        if not geo.empty:
            print("\nGeometric mean of <backend>/torch per op (min..max over problems):")
            print(geo.to_string(index=False))
        failed = df[~df.status.isin(["ok", "baseline"])]
        if not failed.empty:
            print("\nNot timed:")
            print(failed[["problem_name", "op", "backend", "status"]].to_string(index=False))
