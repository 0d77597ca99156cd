"""`autotune devices`: every registered backend and its devices here, with availability and, when a backend cannot
run, the reason (and how to fix it)."""

from __future__ import annotations

import argparse

import pandas as pd

HELP = "list every backend and device, with availability and the reason when unavailable"
COLUMNS = ["backend", "available", "device", "kind", "name", "note"]


def device_table() -> pd.DataFrame:
    """One row per (backend, device); one row with the reason for a backend that is unavailable or has none."""
    from autotune.trial import backend_names, get_backend

    rows = []
    for name in backend_names():
        try:
            backend = get_backend(name)
            ok, why = backend.available()
        except Exception as exc:  # a broken plug-in is listed, not fatal
            rows.append({"backend": name, "available": False, "note": f"cannot load: {type(exc).__name__}: {exc}"})
            continue
        if not ok:
            rows.append({"backend": name, "available": False, "note": why})
            continue
        try:
            devices = backend.devices()
        except Exception as exc:
            rows.append({"backend": name, "available": False,
                         "note": f"listing devices failed: {type(exc).__name__}: {exc}"})
            continue
        if not devices:
            rows.append({"backend": name, "available": False, "note": "no device found"})
        version = backend.version()
        for d in devices:
            note = version
            if d.kind == "interpreter":
                note = f"{version}; interpreter: correct but slow, never tuned for speed".lstrip("; ")
            rows.append({"backend": name, "available": True, "device": d.id, "kind": d.kind, "name": d.name,
                         "note": note})
    return pd.DataFrame(rows, columns=COLUMNS)


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
