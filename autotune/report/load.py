"""Reading the results files for a report: the rows this version can use, and a note for everything left out
(missing directories, unreadable rows, other schema versions, devices without results), so that empty, partial
or mixed results are reported as such instead of failing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from autotune.core import results
from autotune.core.problem import Problem
from autotune.report.text import distinct


def _study_key(df: pd.DataFrame) -> pd.Series:
    """The `study` column, or backend/op/problem where a row has none."""
    fallback = df["backend"].astype(str) + "/" + df["op"].astype(str) + "/" + df["problem"].astype(str)
    if "study" not in df.columns:
        return fallback
    s = df["study"].astype(str).replace({"nan": "", "<NA>": "", "None": ""})
    return s.where(s.str.len() > 0, fallback)


def _is_default(df: pd.DataFrame) -> pd.Series:
    if "is_default" not in df.columns:
        return pd.Series(False, index=df.index)
    return pd.to_numeric(df["is_default"], errors="coerce").fillna(0).astype(int) == 1


def load(directories: Sequence[str | Path], devices: Sequence[str] | None = None
         ) -> tuple[pd.DataFrame, list[str]]:
    """Rows usable by this version (schema checked), with `gflops` recomputed and the derived columns
    `study_key` and `is_default_row`; and notes about everything left out."""
    notes: list[str] = []
    errors: list[str] = []
    for d in directories:
        if not Path(d).exists():
            notes.append(f"results directory {d} does not exist")
        elif not Path(d).is_dir():
            notes.append(f"results directory {d} is not a directory")
    df = results.read_dirs(directories, errors=errors)
    if errors:
        notes.append(f"{len(errors)} row(s) or file(s) could not be used: " + "; ".join(errors[:10])
                     + (f"; and {len(errors) - 10} more" if len(errors) > 10 else ""))
    if len(df) and "schema" in df.columns:
        schema = pd.to_numeric(df["schema"], errors="coerce")
        other = schema.notna() & (schema > results.SCHEMA_VERSION)
        for s, n in schema[other].value_counts().sort_index().items():
            notes.append(f"{n} row(s) of schema {int(s)} ignored (this autotune reads schemas 1 to "
                         f"{results.SCHEMA_VERSION})")
        if schema.isna().any():
            notes.append(f"{int(schema.isna().sum())} row(s) without a schema number, read as schema "
                         f"{results.SCHEMA_VERSION}")
        df = df.loc[~other].reset_index(drop=True)
    if devices:
        present = set(df["device"]) if len(df) else set()
        for dev in devices:
            if dev not in present:
                notes.append(f"no results for device {dev}")
        df = df[df["device"].isin(list(devices))].reset_index(drop=True)
    if len(df):
        df = df.copy()
        # GFLOP/s from the one FLOP convention (Problem.flops) and the measured median, whatever the writer
        # put in the gflops column (left out by some writers; untrusted like the rest of the file).
        timed = df["time_s"].notna() & (df["time_s"] > 0)
        if timed.any():
            flops = {}
            for key, op in set(zip(df.loc[timed, "problem"], df.loc[timed, "op"])):
                flops[(key, op)] = Problem.from_key(key).flops(op)
            df.loc[timed, "gflops"] = [
                flops[(k, op)] / t / 1e9
                for k, op, t in zip(df.loc[timed, "problem"], df.loc[timed, "op"], df.loc[timed, "time_s"])]
        df.loc[~timed, "gflops"] = np.nan
        df["study_key"] = _study_key(df)
        df["is_default_row"] = _is_default(df)
        versions = distinct(df.get("autotune_version", pd.Series(dtype=str)))
        if len(versions) > 1:
            notes.append(f"results written by several autotune versions ({', '.join(versions)}): "
                         "compare with care")
    return df, notes
