"""`autotune report`: write the HTML report of the tuned results (plots embedded) and print its Markdown
summary. Parses the options, picks the default results directories, and words the user's mistakes (a bad
device id, an output path that cannot be written, results that cannot be read) as one-line errors;
`autotune.report` does the rest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autotune.core import results
from autotune.core.errors import UserError
from autotune.report import build_report, markdown_summary, write_html

HELP = "write an HTML report (plots embedded) of the tuned results and print a Markdown summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", metavar="DIR", action="append",
                        help="results directory (repeatable; default: $AUTOTUNE_RESULTS or the per-user one, "
                             "then the shipped results/)")
    parser.add_argument("-o", "--output", metavar="FILE", default="report.html",
                        help="HTML file to write (default report.html)")
    parser.add_argument("--device", action="append", metavar="ID", help="only these device ids (repeatable)")
    parser.add_argument("--layer", metavar="NAME|KEY",
                        help="layer drawn in the explain section: a built-in suite name or a problem key")


def _default_dirs() -> list[Path]:
    # The user's results first, then the shipped ones (deduplicated: the same when run from the repository).
    return list(dict.fromkeys([results.results_dir(None), results.shipped_results_dir()]))


def run(args: argparse.Namespace) -> int:
    dirs = [Path(d) for d in args.results] if args.results else _default_dirs()
    present = sorted({f.stem for d in dirs if d.is_dir() for f in d.glob("*.csv")})
    for dev in args.device or []:
        results.device_file(Path("."), dev)   # raises UserError for an id that no results file can have
        if dev not in present:
            raise UserError(f"--device {dev}: no results for this device in {', '.join(map(str, dirs))} "
                            f"(devices with results: {', '.join(present) or 'none'})")
    # checked before the (slow) build, so the mistake is reported at once; never over the results
    out = results.check_output_path("-o", args.output, dirs, parent_must_exist=False)
    try:
        report = build_report(dirs, args.device, args.layer)
    except OSError as exc:   # a results file or directory the user named cannot be read
        raise UserError(f"cannot read the results: {exc}") from exc
    try:
        write_html(report, out)
    except OSError as exc:
        raise UserError(f"-o {out}: cannot write the report: {exc.strerror or exc}") from exc
    sys.stdout.write(markdown_summary(report, str(out)))
    return 0
