"""`autotune bench`: every available backend side by side with PyTorch, timed in the same run (library:
`autotune.bench`)."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from autotune import bench
from autotune.cli import model_args
from autotune.core import allocator, results
from autotune.core.errors import UserError
from autotune.core.problem import OPS
from autotune.problems import load_problems, select

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
    p.add_argument("--timing-budget", dest="timing_budget", type=float, default=0.5, metavar="S",
                   help="seconds spent timing one config (repetitions per measurement; default 0.5)")
    p.add_argument("--budget", dest="timing_budget", type=float, help=argparse.SUPPRESS)  # deprecated alias
    p.add_argument("--results", metavar="DIR", help="results directory read by --configs tuned")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--no-dispatch", action="store_true",
                   help="do not time the `dispatch` column (what a plain call runs, tuned results in place)")
    p.add_argument("--csv", metavar="FILE", help="also save the long table (one row per problem, op, backend)")
    p.add_argument("--system-malloc", action="store_true", help=allocator.SYSTEM_MALLOC_HELP)
    p.add_argument("--record", action="store_true",
                   help="append every measurement (PyTorch's as status 'baseline') to the device's results file "
                        "in the results directory, for reports and dispatch")


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if "--budget" in sys.argv[1:] or any(a.startswith("--budget=") for a in sys.argv[1:]):
        _say("--budget is deprecated: it is --timing-budget, as in `autotune tune`")
    if not args.timing_budget > 0:
        raise UserError(f"--timing-budget must be > 0 seconds, got {args.timing_budget}")
    if args.max_configs < 1:
        raise UserError(f"--max-configs must be >= 1, got {args.max_configs}")
    directory = results.results_dir(args.results)
    if args.csv:  # checked first, before the run; never over the results
        results.check_output_path("--csv", args.csv, [directory])
    problems = model_args.problems(args, args.only) or select(load_problems(args.problems), args.only)
    _say(allocator.timing_malloc(args.system_malloc))  # once the arguments are known good, before any timing
    df, chosen = bench.bench(problems, args.ops, args.backends, configs=args.configs, max_configs=args.max_configs,
                             budget_s=args.timing_budget, results_dirs=[directory, results.shipped_results_dir()],
                             with_torch=not args.no_torch, with_dispatch=not args.no_dispatch, say=_say,
                             record_to=directory if args.record else None)
    if args.record:  # each measurement was appended as it was taken
        recorded = df.status.isin(["ok", "baseline"]) & (df.backend != bench.DISPATCH)
        _say(f"recorded {int(recorded.sum())} rows in {directory}")
    print_table(df)
    if args.csv:
        try:
            df.to_csv(args.csv, index=False)
        except OSError as exc:
            raise UserError(f"--csv {args.csv}: cannot write: {exc.strerror or exc}") from None
        _say(f"saved {len(df)} rows to {args.csv}")
    return 0


def print_table(df: pd.DataFrame) -> None:
    peak = df[df.backend == bench.PEAK_BACKEND]
    if not peak.empty:
        print(f"Ceiling: this CPU's measured BLAS sgemm peak, {peak.gflops.iloc[0]:.1f} GFLOP/s "
              f"({int(peak.threads.iloc[0])} thread(s))")
    wide, geo = bench.summary(df)
    if not peak.empty and bench.DISPATCH in wide.columns:
        wide[f"{bench.DISPATCH}/sgemm"] = wide[bench.DISPATCH] / float(peak.gflops.iloc[0])
    with pd.option_context("display.width", 200, "display.max_rows", 1000, "display.max_columns", 50,
                           "display.float_format", "{:.2f}".format):
        print("GFLOP/s (higher is better); <backend>/torch = backend GFLOP/s over PyTorch's default call, same run; "
              f"{bench.DISPATCH} = what a plain call runs (tuned results in place, host arrays)")
        print(wide.to_string())
        if not geo.empty:
            print("\nGeometric mean of <backend>/torch per op (min..max over problems):")
            print(geo.to_string(index=False))
        failed = df[~df.status.isin(["ok", "baseline"])]
        if not failed.empty:
            print("\nNot timed:")
            print(failed[["problem_name", "op", "backend", "status"]].to_string(index=False))
