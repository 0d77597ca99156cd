"""The `autotune` command line. Each verb is a module of this package exposing `HELP`, `add_arguments(parser)` and
`run(args) -> int`: it parses, calls the library with explicit arguments, and prints. This file only maps verbs to
modules (imported lazily, so `--help` stays fast) and turns the library's user errors into one clear line instead of
a traceback; any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from autotune.core.errors import UserError

# Set (to anything but "" or 0) to show compiler output; read by the OpenCL backend (backends/opencl).
VERBOSE_ENV = "AUTOTUNE_VERBOSE"
# verb -> module
COMMANDS = {
    "bench": "autotune.cli.bench",
    "check": "autotune.cli.check",
    "devices": "autotune.cli.devices",
    "explain": "autotune.cli.explain",
    "report": "autotune.cli.report",
    "tune": "autotune.cli.tune",
    "which": "autotune.cli.which",
    "inspect": "autotune.cli.inspect",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autotune", description="Tune and run transposed-convolution kernels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="show the OpenCL compiler's output (also: the environment variable "
                        f"{VERBOSE_ENV}=1)")
    for verb, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP, parents=[common])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:  # through the environment, so that the tuner's trial workers see it too
        os.environ[VERBOSE_ENV] = "1"
        os.environ.setdefault("PYOPENCL_COMPILER_OUTPUT", "1")
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"autotune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autotune {args.command}: interrupted", file=sys.stderr)
        return 130
