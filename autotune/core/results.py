"""Results: one CSV file per device, one row per measured trial, readable with `pandas.read_csv`.

Writers append one complete line per trial under an exclusive lock and flush it, so a killed run loses at most
the trial in flight and concurrent writers lose no row. Files are untrusted when read back: a file that cannot be
parsed raises `ResultsFileError` naming the path and line; rows whose values are not valid are dropped with a
reason (`read_file(..., errors=...)`); a row cut short by a killed writer lacks its last field (`schema`) and is
dropped the same way. A file that cannot be read (or appended to: a foreign header) is never overwritten: the tuner
calls `set_aside_if_unreadable`, which renames it to `<name>.corrupt-<UTC time>` (not a `.csv`, so readers skip
it), reports path and line, and lets a new file start.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.core import __version__
from autotune.core.errors import UserError
from autotune.core.problem import OPS, Problem
from autotune.core.timing import current_threads, load_average

SCHEMA_VERSION = 2
# The required columns first (docs/design.md, results schema), then ours.
REQUIRED = ("device", "device_name", "backend", "op", "problem", "dtype", "N", "C_in", "H", "W", "C_out", "kH",
            "kW", "config", "status", "time_s", "gflops", "max_abs_err", "timestamp")
# Schema 1's columns: files with this header are still read, and upgraded (rows kept) before an append.
COLUMNS_V1 = REQUIRED + ("stride", "padding", "output_padding", "dilation", "groups", "bias", "time_min_s",
                         "time_max_s", "reps", "reason", "study", "trial", "is_default", "backend_version",
                         "autotune_version", "schema")
# Schema 2 adds what wrote a row (`source`), the threads it ran with and the load average at the time.
COLUMNS = COLUMNS_V1[:-1] + ("source", "threads", "load_avg", "schema")
# What wrote a row: a tuning trial, `autotune bench`, or a measurement at a call's first use.
SOURCES = ("tune", "bench", "first-call")
# `ok`, or the failure kind.
STATUSES = ("ok", "pruned", "abandoned", "build_error", "wrong_answer", "out_of_resources", "timeout", "crash", "error",
            "baseline")
ENV_VAR = "AUTOTUNE_RESULTS"
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,120}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class ResultsFileError(UserError):
    """A results file that cannot be read: never overwritten, reported with its path and line."""


def results_dir(arg: str | os.PathLike[str] | None = None) -> Path:
    """--results DIR, else $AUTOTUNE_RESULTS, else a per-user data directory."""
    if arg:
        return Path(arg)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    import platformdirs
    return Path(platformdirs.user_data_dir("convt-autotune")) / "results"


def shipped_results_dir() -> Path:
    """The `results/` shipped with the project (read after the user's own)."""
    return Path(__file__).resolve().parents[2] / "results"


def device_file(directory: str | os.PathLike[str], device_id: str) -> Path:
    if not _SLUG.fullmatch(device_id):
        raise UserError(f"device id {device_id!r} is not a slug of lower-case letters, digits and dashes")
    return Path(directory) / f"{device_id}.csv"


def problem_columns(problem: Problem) -> dict[str, Any]:
    """The columns that describe a problem (its key plus readable dimensions)."""
    (t, b), (left, r) = problem.padding
    return {"problem": problem.key, "dtype": problem.dtype, "N": problem.N, "C_in": problem.C_in, "H": problem.H,
            "W": problem.W, "C_out": problem.C_out, "kH": problem.kH, "kW": problem.kW,
            "stride": f"{problem.stride[0]}:{problem.stride[1]}", "padding": f"{t}:{b}:{left}:{r}",
            "output_padding": f"{problem.output_padding[0]}:{problem.output_padding[1]}",
            "dilation": f"{problem.dilation[0]}:{problem.dilation[1]}", "groups": problem.groups,
            "bias": int(problem.bias)}


def utc_timestamp() -> str:
    """The one timestamp format of the results: UTC, ISO 8601, `Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def make_row(*, device_id: str, device_name: str, backend: str, op: str, problem: Problem, config: str,
             status: str, source: str, time_s: float | None = None, time_min_s: float | None = None,
             time_max_s: float | None = None, reps: int | None = None, max_abs_err: float | None = None,
             reason: str | None = None, study: str | None = None, trial: int | None = None,
             is_default: bool | None = None, backend_version: str | None = None,
             threads: int | None = None, load_avg: float | None = None) -> dict[str, Any]:
    """The one builder of result rows (tune and bench): problem columns, GFLOP/s from the median time, a UTC
    timestamp, the versions, what wrote it (`source`, one of SOURCES), the threads the measurement ran with
    (default `current_threads()`) and the load average (default: now). `problem` is the op's own problem
    (`Problem.for_op`)."""
    def number(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else float(v)

    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    t = number(time_s)
    return {"device": device_id, "device_name": device_name, "backend": backend, "op": op,
            **problem_columns(problem), "config": config, "status": status, "time_s": t,
            "gflops": problem.flops(op) / t / 1e9 if t else None, "max_abs_err": number(max_abs_err),
            "timestamp": utc_timestamp(), "time_min_s": number(time_min_s), "time_max_s": number(time_max_s),
            "reps": reps, "reason": " ".join(str(reason or "").split())[:500] or None, "study": study,
            "trial": trial, "is_default": None if is_default is None else int(is_default),
            "backend_version": backend_version, "autotune_version": __version__, "source": source,
            "threads": current_threads() if threads is None else int(threads),
            "load_avg": number(load_average() if load_avg is None else load_avg)}


def format_row(row: dict[str, Any]) -> str:
    """One CSV line (with its newline) in COLUMNS order; unknown keys are an error, missing ones empty."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown result column(s) {sorted(unknown)}")
    # `schema` is the last column: a row cut short by a killed writer lacks it, and readers drop such rows.
    row = {**row, "schema": SCHEMA_VERSION}
    # One line per row, always: line breaks inside values (an error message) become spaces.
    row = {k: " ".join(v.splitlines()) if isinstance(v, str) else v for k, v in row.items()}
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if row.get(c) is None else row.get(c) for c in COLUMNS])
    return buf.getvalue()


def _open_locked(path: Path) -> Any:
    """Open `path` for appending and take its exclusive lock, making sure the lock is on the file that is at
    `path` now: another process may have moved the file aside (quarantine) while we waited for the lock."""
    while True:
        f = open(path, "a+", encoding="utf-8", newline="")
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            f.close()
            raise
        if same:
            return f
        f.close()


def append_rows(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append rows under an exclusive lock, header first if the file is new or empty, then flush and fsync.
    Refuses to append to a file whose header is not ours (it is never overwritten)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(format_row(r) for r in rows)
    with _open_locked(path) as f:
        try:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                f.write(",".join(COLUMNS) + "\n")
            else:
                f.seek(0)
                try:
                    header = f.readline().rstrip("\r\n")
                except UnicodeDecodeError:
                    header = ""
                if header.split(",") == list(COLUMNS_V1):
                    _upgrade_v1(path, f)
                elif header.split(",") != list(COLUMNS):
                    raise ResultsFileError(f"{path}, line 1: header is not a results header of schema "
                                           f"{SCHEMA_VERSION}; not appending to it")
                f.seek(0, os.SEEK_END)
                # A previous writer killed mid-line leaves a partial last line: end it so ours stays intact.
                f.seek(f.tell() - 1)
                if f.read(1) != "\n":
                    f.write("\n")
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _upgrade_v1(path: Path, f: Any) -> None:
    """Rewrite the schema-1 file open (and locked) as `f` with the schema-2 header, every row kept as it is (its
    `schema` field still says 1; the new columns empty). A copy of the old file is kept first as
    `<name>.schema1` (not a `.csv`: readers skip it), so an interrupted upgrade loses nothing."""
    f.seek(0)
    old = f.read()
    backup = path.with_name(path.name + ".schema1")
    backup.write_text(old, encoding="utf-8")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    lines = list(csv.reader(io.StringIO(old)))
    for fields in lines[1:]:
        if len(fields) == len(COLUMNS_V1):
            fields = fields[:-1] + ["", "", ""] + fields[-1:]
        writer.writerow(fields)  # a row cut short stays cut short: readers drop it as before
    f.seek(0)
    f.truncate()
    f.write(out.getvalue())
    f.flush()
    os.fsync(f.fileno())
    backup.unlink()


def _row_problem(row: pd.Series) -> str | None:
    """None if the row's values are valid, else the reason."""
    if row["op"] not in OPS:
        return f"op {row['op']!r} is not one of {OPS}"
    if row["status"] not in STATUSES:
        return f"status {row['status']!r} is unknown"
    if not isinstance(row["backend"], str) or not _NAME.fullmatch(row["backend"]):
        return f"backend {row['backend']!r} is not a backend name"
    if not isinstance(row["device"], str) or not _SLUG.fullmatch(row["device"]):
        return f"device {row['device']!r} is not a device id"
    try:
        Problem.from_key(row["problem"])
    except (ValueError, TypeError) as exc:
        return str(exc)
    try:
        config = json.loads(row["config"]) if isinstance(row["config"], str) and row["config"] else {}
    except json.JSONDecodeError:
        return "config is not JSON"
    if not isinstance(config, dict):
        return "config is not a JSON object"
    if row["source"] not in SOURCES:
        return f"source {row['source']!r} is not one of {SOURCES}"
    if "schema" in row.index and (pd.isna(row["schema"]) or row["schema"] < 1):
        return "incomplete row (no schema field: cut short by a killed writer?)"
    if row["status"] == "ok":
        t = row["time_s"]
        if not isinstance(t, float) or not math.isfinite(t) or t <= 0:
            return f"time_s {t!r} is not a positive number"
    return None


def read_file(path: str | os.PathLike[str], errors: list[str] | None = None) -> pd.DataFrame:
    """Read one results file. Raises ResultsFileError (path and line) if it cannot be parsed; invalid rows are
    dropped, and their reasons appended to `errors` when given."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"config": str, "problem": str, "device": str, "backend": str, "op": str,
                                      "status": str, "reason": str, "source": str}, keep_default_na=False,
                         na_values={"time_s": [""], "gflops": [""], "max_abs_err": [""]})
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(COLUMNS))
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ResultsFileError(f"{path}, line {line.group(1) if line else '?'}: not a readable results file "
                               f"({exc})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ResultsFileError(f"{path}, line 1: missing column(s) {', '.join(missing)}")
    # Schema 1 rows say nothing of their source: bench wrote `reason` "autotune bench" (and the baselines), the
    # tuner everything else.
    derived = pd.Series("tune", index=df.index, dtype=object)
    if "reason" in df.columns:
        derived[df["reason"].astype(str).str.startswith("autotune bench")] = "bench"
    derived[df["status"] == "baseline"] = "bench"
    if "source" not in df.columns:
        df["source"] = derived
    else:
        df["source"] = df["source"].astype(str).where(df["source"].astype(str).str.len() > 0, derived)
    for c in ("threads", "load_avg"):
        if c not in df.columns:
            df[c] = math.nan
    # One timestamp format: rows of older writers said `+0000` or `+00:00` for UTC.
    df["timestamp"] = df["timestamp"].astype(str).str.replace(r"(\+00:?00)$", "Z", regex=True)
    for c in ("time_s", "gflops", "max_abs_err", "time_min_s", "time_max_s", "load_avg"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in ("N", "C_in", "H", "W", "C_out", "kH", "kW", "groups", "bias", "reps", "trial", "schema", "threads"):
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce").astype(float)
            # Untrusted text: a non-integral or huge value becomes NA instead of an exception.
            df[c] = v.where(v.notna() & (v.abs() < 2**53) & (v == v.round())).astype("Int64")
    reasons = df.apply(_row_problem, axis=1) if len(df) else pd.Series([], dtype=object)
    bad = reasons.notna()
    if errors is not None:
        for idx in df.index[bad]:
            errors.append(f"{path}, line {int(idx) + 2}: {reasons[idx]}")
    return df.loc[~bad].reset_index(drop=True)


def read_dirs(directories: Iterable[str | os.PathLike[str]], device: str | None = None,
              errors: list[str] | None = None) -> pd.DataFrame:
    """Rows of every results file in `directories` (in order, earlier first), optionally of one device. A file
    that cannot be parsed is reported in `errors` and left as it is."""
    frames = []
    for order, d in enumerate(directories):
        d = Path(d)
        if not d.is_dir():
            continue
        files = [device_file(d, device)] if device else sorted(d.glob("*.csv"))
        for f in files:
            if not f.is_file():
                continue
            try:
                df = read_file(f, errors)
            except ResultsFileError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                continue
            df["file"] = str(f)
            df["file_order"] = order
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "file", "file_order"])
    return pd.concat(frames, ignore_index=True)


def quarantine_name(path: Path) -> Path:
    """Where an unreadable results file is kept aside: `<name>.corrupt-<UTC time>` (never a `.csv`, so readers
    skip it)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return target


def set_aside_if_unreadable(path: str | os.PathLike[str]) -> str | None:
    """If the results file at `path` exists and cannot be read as a results file (not CSV, wrong header, missing
    columns), rename it to `quarantine_name(path)` so that a new file is started and the old one is never
    overwritten, and return a message naming the path, the line and where the file now is; else None.
    Rows that are merely invalid (dropped by `read_file`) do not make a file unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise ResultsFileError(f"{path}: results path exists and is not a regular file")
    with _open_locked(path) as f:
        try:
            try:
                read_file(path)
                f.seek(0)
                header = f.readline().rstrip("\r\n")
                if not header or header.split(",") in (list(COLUMNS), list(COLUMNS_V1)):
                    return None
                problem = f"{path}, line 1: header is not the results header of schema {SCHEMA_VERSION}"
            except (ResultsFileError, UnicodeDecodeError) as exc:
                problem = str(exc)
            target = quarantine_name(path)
            os.rename(path, target)
            return f"{problem}; kept aside as {target}, a new results file is started"
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
