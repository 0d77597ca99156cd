"""The `autotune` command line. Each verb lives in its own module exposing `HELP`, `add_arguments(parser)` and
`run(args) -> int`; this file only maps verbs to modules (imported lazily, so `--help` stays fast) and turns user
mistakes into one clear line instead of a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> module
COMMANDS = {
    "bench": "autotune.bench",
    "check": "autotune.check",
    "explain": "autotune.explain",
    "report": "autotune.report",
    "which": "autotune.cmd_which",
    "tune": "autotune.tuner",
    "devices": "autotune.device_table",
    "inspect": "autotune.cli_inspect",
}


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autotune", description="Tune and run transposed-convolution kernels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for verb, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (UserError, ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"autotune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autotune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
