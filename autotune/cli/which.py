"""`autotune which`: what dispatch would run for a problem (backend, config, device) and why. Parses, calls
`autotune.dispatch.which` with the results directories as arguments, prints. (Not `autotune/which.py`: that
module would shadow the function `autotune.which` once imported.)

The problem comes from flags (`--N 1 --C-in 21 --H 32 --W 32 --C-out 21 --kernel 4 --stride 2 --padding 1`) or
by name from a problems file or the built-in suite (`--problem fcn_score_up2 [--problems FILE]`). Pair-valued
flags take `a` or `a:b` (height:width); `--padding` also `t:b:l:r`, as in problems files.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from autotune import dispatch
from autotune.core import results
from autotune.core.errors import UserError
from autotune.core.problem import OPS, Problem
from autotune.problems import load_problems, parse_row, select

HELP = ("say which backend and config a call would run for a problem, and why (exact, nearest, default, "
        "fallback)")

_SHAPE_FLAGS = ("N", "C_in", "H", "W", "C_out", "kernel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("the problem, by name")
    src.add_argument("--problem", metavar="NAME",
                     help="a problem of the problems file (default: built-in suite)")
    src.add_argument("--problems", metavar="FILE", help="problems CSV file (default: the built-in suite)")
    shape = parser.add_argument_group("the problem, by flags")
    for flag, dest in (("--N", "N"), ("--C-in", "C_in"), ("--H", "H"), ("--W", "W"), ("--C-out", "C_out")):
        shape.add_argument(flag, dest=dest, metavar="INT")
    shape.add_argument("--kernel", metavar="K|KH:KW", help="kernel size")
    shape.add_argument("--stride", default="1", metavar="S|SH:SW")
    shape.add_argument("--padding", default="0", metavar="P|PH:PW|T:B:L:R")
    shape.add_argument("--output-padding", dest="output_padding", default="0", metavar="P|PH:PW")
    shape.add_argument("--dilation", default="1", metavar="D|DH:DW")
    shape.add_argument("--groups", default="1", metavar="INT")
    shape.add_argument("--bias", action="store_true", help="the layer has a bias")
    shape.add_argument("--dtype", default="float32", help="float32 (default), float64, float16, bfloat16")
    parser.add_argument("--op", default="all", choices=(*OPS, "all"), help="which op (default: all four)")
    parser.add_argument("--device", metavar="ID", help="a device id, or cuda:N (default: this CPU)")
    parser.add_argument("--results", metavar="DIR",
                        help=f"results directory (default: ${results.ENV_VAR}, else a per-user data "
                        "directory); the shipped results/ is read after it")
    parser.add_argument("--chain", action="store_true", help="also list every candidate, in the order tried")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per op) instead of text")


def problem_from_args(args: argparse.Namespace) -> tuple[str, Problem]:
    """(name, problem) from --problem or from the shape flags; a UserError naming the flag otherwise."""
    given = [f for f in _SHAPE_FLAGS if getattr(args, f) is not None]
    if args.problem:
        if given:
            raise UserError(f"give either --problem or the shape flags, not both (got --problem and "
                             f"{', '.join('--' + f.replace('_', '-') for f in given)})")
        (named,) = select(load_problems(args.problems), [args.problem])
        return named.name, named.problem
    if args.problems:
        raise UserError("--problems FILE needs --problem NAME")
    missing = [f for f in _SHAPE_FLAGS if getattr(args, f) is None]
    if missing:
        def flags(names: list[str] | tuple[str, ...]) -> str:
            return ", ".join("--" + f.replace("_", "-") for f in names)
        raise UserError(f"give --problem NAME, or the flags {flags(_SHAPE_FLAGS)} "
                        f"(missing: {flags(missing)})")
    kernel = args.kernel.split(":")
    if len(kernel) not in (1, 2):
        raise UserError(f"--kernel: expected K or KH:KW, got {args.kernel!r}")
    row = {"name": "flags", "N": args.N, "C_in": args.C_in, "H": args.H, "W": args.W, "C_out": args.C_out,
           "kH": kernel[0], "kW": kernel[-1], "stride": args.stride, "padding": args.padding,
           "output_padding": args.output_padding, "dilation": args.dilation, "groups": args.groups,
           "bias": "1" if args.bias else "0", "dtype": args.dtype}
    return "flags", parse_row(row, "flags").problem


def run(args: argparse.Namespace) -> int:
    name, problem = problem_from_args(args)
    # --results DIR replaces the user's directory; the shipped results are read after it, as in a plain call
    dirs = None if not args.results else [results.results_dir(args.results), results.shipped_results_dir()]
    ops = OPS if args.op == "all" else (args.op,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [dispatch.which(problem, op, device=args.device, results_dirs=dirs) for op in ops]
    for w in caught:
        print(f"autotune which: warning: {str(w.message).removeprefix('autotune: ')}", file=sys.stderr)
    if args.json:
        for a in answers:
            fields = a.as_dict()
            if not args.chain:
                del fields["chain"]
            print(json.dumps({"name": name, **fields}))
        return 0
    print(f"{name}: {problem.key} on {answers[0].device if answers else ''}")
    for a in answers:
        if a.reason == "exact" and a.time_s is not None:
            why = f"measured {a.time_s * 1e3:.4g} ms; {a.source}"
        elif a.reason == "nearest":
            why = f"tuned problem {a.tuned_problem} at distance {a.distance:.2f}; {a.source}"
        else:
            why = a.source
        print(f"  {a.op:<16} {a.backend:<8} {json.dumps(a.config, sort_keys=True):<40} {a.reason:<8} {why}")
        if args.chain:
            for i, c in enumerate(a.chain, 1):
                print(f"      {i}. {c}")
    return 0
