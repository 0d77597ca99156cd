"""`autotune devices`: every registered backend and its devices here, with availability and, when a backend
cannot run, the reason (and how to fix it). Parses, calls `autotune.inventory.device_table`, prints."""

from __future__ import annotations

import argparse

import pandas as pd

from autotune.inventory import device_table

HELP = "list every backend and device, with availability and the reason when unavailable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")


def run(args: argparse.Namespace) -> int:
    table = device_table()
    if args.csv:
        print(table.to_csv(index=False), end="")
    else:
        print(format_table(table))
    return 0


def format_table(table: pd.DataFrame) -> str:
    """Left-aligned columns (pandas right-aligns text, which makes long reasons hard to read)."""
    cells = [[str(c) for c in table.columns]]
    cells += [["" if pd.isna(v) else ("yes" if v is True else "no" if v is False else str(v)) for v in row]
              for row in table.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)
