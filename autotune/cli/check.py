"""`autotune check`: every available backend against the reference (library: `autotune.check`). Exit status 1 if
anything is wrong."""

from __future__ import annotations

import argparse
import sys

from autotune import check
from autotune.core.errors import UserError
from autotune.problems import load_problems

HELP = "check every available backend against the reference"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", metavar="FILE", help="problems CSV (default: built-in corner cases)")
    p.add_argument("--backends", nargs="+", metavar="NAME", help="backends to check (default: every available one)")
    p.add_argument("--configs", type=int, default=1, metavar="K",
                   help="configs per op: the default, plus K-1 sampled valid ones")


def run(args: argparse.Namespace) -> int:
    if args.configs < 1:
        raise UserError(f"--configs must be >= 1 (the default config plus K-1 sampled ones), got {args.configs}")
    problems = load_problems(args.problems) if args.problems else check.corner_problems()
    table = check.check(problems, args.backends, args.configs,
                        say=lambda m: print(f"check: {m}", file=sys.stderr, flush=True))
    print(table.to_string(index=False, float_format="{:.2e}".format))
    return 1 if (table.result != "ok").any() else 0
