"""`autotune tune`: parse the options (presets fill in what is not given), run the tuner (autotune.tuner),
print its summary table on stdout; progress and warnings go to stderr."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from typing import Any

from autotune.cli import model_args
from autotune.core import allocator, results
from autotune.core.errors import UserError
from autotune.core.problem import OPS
from autotune.problems import load_problems, select
from autotune.tuner import SAMPLERS, STORAGE_FILE, TuneOptions, format_summary, tune

HELP = "tune every backend's kernels per device, problem and op with Optuna; results go to one CSV per device"
# Presets: defaults for options not given on the command line. `quick` is the README's main job: a few suite
# layers, every op, a few minutes in all; `suite` every suite layer within 10 minutes (seeded studies, the abandon
# rule and the OpenCL binary cache make that budget reach most of what 30 configs per study reach).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"only": ["fcn_score_up2", "dcgan_g3", "dilated_up", "odd_shapes"], "trials": 12,
              "time_budget": 300.0, "timing_budget": 0.2},
    "suite": {"trials": 30, "time_budget": 600.0},  # issue 12: the whole suite in 10 minutes on a 2-core CPU
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", nargs="+", metavar="ID",
                        help="device ids or kinds (cpu, gpu) to tune (default: every device; interpreters "
                        "are never tuned)")
    parser.add_argument("--backends", nargs="+", metavar="NAME",
                        help="backends to tune (default: all available)")
    parser.add_argument("--ops", nargs="+", choices=OPS, metavar="OP",
                        help=f"ops to tune (default: all of {', '.join(OPS)})")
    parser.add_argument("--problems", metavar="FILE", help="problems CSV (default: the built-in suite)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="tune only these problems (by name)")
    model_args.add_arguments(parser)
    parser.add_argument("--trials", type=int, metavar="N",
                        help="configs measured per study in total, earlier runs' included (default 20); "
                        "constraint-pruned and repeated points do not count")
    parser.add_argument("--timeout", type=float, metavar="S", help="seconds per study")
    parser.add_argument("--time-budget", type=float, metavar="S",
                        help="seconds for the whole run, shared evenly by the studies left")
    parser.add_argument("--results", metavar="DIR",
                        help="results directory (default: $AUTOTUNE_RESULTS, else a per-user data directory)")
    parser.add_argument("--storage", metavar="URL",
                        help=f"Optuna storage, any SQLAlchemy URL (default: a SQLite file {STORAGE_FILE} in "
                        "the results directory); share it to tune from several machines")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                        help="tpe (default), random, or grid (exhaustive)")
    parser.add_argument("--seed", type=int, help="sampler seed (default: random)")
    parser.add_argument("--trial-timeout", type=float, default=120.0, metavar="S",
                        help="time limit of one trial (build, check and timing); a trial over it is killed "
                        "and recorded as timeout (default 120)")
    parser.add_argument("--timing-budget", type=float, metavar="S",
                        help="seconds spent timing one config (default 0.3)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="defaults for options not given: quick = a few suite layers in a few minutes; "
                        "suite = the whole suite")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--system-malloc", action="store_true", help=allocator.SYSTEM_MALLOC_HELP)


def options_from_args(args: argparse.Namespace) -> TuneOptions:
    """TuneOptions from the parsed command line: a given option wins over the preset, the preset over the
    library's default. The results directory is resolved here and passed on (never through the
    environment)."""
    preset = PRESETS.get(args.preset or "", {})

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else preset.get(name, default)

    # Checked here to name the flags (the library's own messages name its arguments, e.g. time_budget_s).
    for flag, value in (("--trials", pick("trials", 20)), ("--timeout", args.timeout),
                        ("--time-budget", pick("time_budget", None)), ("--trial-timeout", args.trial_timeout),
                        ("--timing-budget", pick("timing_budget", 0.3))):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UserError(f"{flag} must be > 0, got {value:g}")
    only = pick("only", None)
    problems = model_args.problems(args, only) or select(load_problems(args.problems), only)
    return TuneOptions(problems=problems, results=results.results_dir(args.results),
                       ops=tuple(args.ops or OPS), backends=args.backends, devices=args.devices,
                       trials=pick("trials", 20),
                       timeout_s=args.timeout, time_budget_s=pick("time_budget", None), storage=args.storage,
                       sampler=args.sampler, seed=args.seed, trial_timeout_s=args.trial_timeout,
                       timing_budget_s=pick("timing_budget", 0.3), progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the trial worker is stopped and storage connections closed.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = options_from_args(args)
    note = allocator.timing_malloc(args.system_malloc)  # before the trial workers start: they inherit it
    table = tune(options, sys.stderr)
    print(format_summary(table))
    print(f"results: {options.results}", file=sys.stderr)
    if options.progress:  # after the run, so that an error stays the one line it prints
        print(f"timed with {note}", file=sys.stderr)
    return 0
