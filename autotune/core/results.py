"""Results: one CSV file per device, one row per measured trial, readable with `pandas.read_csv`.

Writers append one complete line per trial under an exclusive lock and flush it, so a killed run loses at most
the trial in flight and concurrent writers lose no row; a torn last line (a kill, a full disk) is ended with a newline
by the next append. Files are untrusted when read back, row by row, with hard bounds on each field (length, JSON
depth, number size): a row that breaks one, does not parse or is not valid costs that row only, with its reason
naming path and line (`read_file(..., errors=...)`). Only a file whose header is not ours (or of which nothing
reads) is set aside, never overwritten: the tuner calls `set_aside_if_unreadable`, which renames it to
`<name>.corrupt-<UTC time>` (not a `.csv`, so readers skip it), reports path and line, and starts a new file with
the rows that did read.
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

SCHEMA_VERSION = 3
# The required columns first (docs/design.md, results schema), then ours.
REQUIRED = ("device", "device_name", "backend", "op", "problem", "dtype", "N", "C_in", "H", "W", "C_out", "kH",
            "kW", "config", "status", "time_s", "gflops", "max_abs_err", "timestamp")
# Schema 1's columns: files with this header are still read, and upgraded (rows kept) before an append.
COLUMNS_V1 = REQUIRED + ("stride", "padding", "output_padding", "dilation", "groups", "bias", "time_min_s",
                         "time_max_s", "reps", "reason", "study", "trial", "is_default", "backend_version",
                         "autotune_version", "schema")
# Schema 2 adds what wrote a row (`source`), the threads it ran with and the load average at the time.
COLUMNS_V2 = COLUMNS_V1[:-1] + ("source", "threads", "load_avg", "schema")
# Schema 3 adds the kernel-only device time beside `time_s` (the time of the call as a user makes it for host arrays,
# staging included): what a call whose data already lives on the device waits for.
COLUMNS = COLUMNS_V2[:-1] + ("device_time_s", "schema")
# Older headers still read (missing columns empty), and upgraded in place (rows kept) before an append.
OLD_HEADERS = (COLUMNS_V1, COLUMNS_V2)
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


class ResultsWriteError(UserError):
    """A results file or directory that cannot be written (permissions, a full disk): one line naming it."""


def results_dir(arg: str | os.PathLike[str] | None = None) -> Path:
    """--results DIR, else $AUTOTUNE_RESULTS, else a per-user data directory."""
    if arg:
        return Path(arg)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    import platformdirs
    return Path(platformdirs.user_data_dir("convt-autotune")) / "results"


def make_dir(directory: str | os.PathLike[str]) -> Path:
    """Create a results directory (and its parents) if needed; a path that is a file, or cannot be created or
    written, is a ResultsWriteError naming it."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ResultsWriteError(f"--results {d} is a file, not a directory; give a directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsWriteError(f"--results {d}: cannot create the directory ({exc.strerror or exc}); give a "
                                f"writable one") from None
    if not os.access(d, os.W_OK):
        raise ResultsWriteError(f"--results {d}: the directory is not writable; give a writable one")
    return d


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
             time_max_s: float | None = None, reps: int | None = None, device_time_s: float | None = None,
             max_abs_err: float | None = None, reason: str | None = None, study: str | None = None,
             trial: int | None = None,
             is_default: bool | None = None, backend_version: str | None = None,
             threads: int | None = None, load_avg: float | None = None) -> dict[str, Any]:
    """The one builder of result rows (tune and bench): problem columns, GFLOP/s from the median time, a UTC
    timestamp, the versions, what wrote it (`source`, one of SOURCES), the threads the measurement ran with
    (default `current_threads()`) and the load average (default: now). `time_s` is the median time of the call as a
    user makes it with host arrays (staging to and from the device included); `device_time_s` the kernel-only device
    time (data already on the device), the same as `time_s` where the two are one thing. `problem` is the op's own
    problem (`Problem.for_op`)."""
    def number(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else float(v)

    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    t = number(time_s)
    return {"device": device_id, "device_name": device_name, "backend": backend, "op": op,
            **problem_columns(problem), "config": config, "status": status, "time_s": t,
            "gflops": problem.flops(op) / t / 1e9 if t else None, "max_abs_err": number(max_abs_err),
            "timestamp": utc_timestamp(), "time_min_s": number(time_min_s), "time_max_s": number(time_max_s),
            "reps": reps, "device_time_s": number(device_time_s),
            "reason": " ".join(str(reason or "").split())[:500] or None, "study": study,
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
    """Open `path` (binary) for appending and take its exclusive lock, making sure the lock is on the file that is
    at `path` now: another process may have moved the file aside (quarantine) while we waited for the lock."""
    while True:
        try:
            f = open(path, "a+b", buffering=0)  # unbuffered: a failed write is undone at once
        except OSError as exc:
            raise ResultsWriteError(f"{path}: cannot open the results file for appending ({exc.strerror or exc}); "
                                    f"give a writable results directory with --results") from None
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
    Refuses to append to a file whose header is not ours (it is never overwritten). A torn last line (a writer
    killed mid-line, a full disk) is ended with a newline first; a write that fails (a full disk) is undone, so it
    leaves no torn row, and raises ResultsWriteError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsWriteError(f"{path.parent}: cannot create the results directory ({exc.strerror or exc}); "
                                f"give a writable one with --results") from None
    text = "".join(format_row(r) for r in rows).encode("utf-8")
    with _open_locked(path) as f:
        try:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                text = (",".join(COLUMNS) + "\n").encode() + text
            else:
                f.seek(0)
                header = f.readline().removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n").split(b",")
                old = next((h for h in OLD_HEADERS if header == [c.encode() for c in h]), None)
                if old is not None:
                    size = _upgrade(path, f, old)
                elif header != [c.encode() for c in COLUMNS]:
                    raise ResultsFileError(f"{path}, line 1: header is not a results header of schema "
                                           f"{SCHEMA_VERSION}; not appending to it")
                # A previous writer killed mid-line leaves a partial last line: end it so ours stays intact.
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    text = b"\n" + text
            try:
                view = memoryview(text)
                while view:
                    view = view[f.write(view):]
                os.fsync(f.fileno())
            except OSError as exc:
                try:  # undo the partial write: no torn row is left behind
                    f.truncate(size)
                except OSError:
                    pass
                raise ResultsWriteError(f"{path}: cannot append to the results file ({exc.strerror or exc}); "
                                        f"free space or give another directory with --results") from None
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _upgrade(path: Path, f: Any, columns: tuple[str, ...]) -> int:
    """Rewrite the older-schema file (header `columns`, one of OLD_HEADERS) open (binary, locked) as `f` with this
    schema's header, every row kept as it is (its `schema` field still says the old version; the new columns empty;
    a torn or bad line stays as it was, for readers to drop). A copy of the old file is kept first as
    `<name>.schema<N>` (not a `.csv`: readers skip it), so an interrupted upgrade loses nothing. Returns the new
    size."""
    f.seek(0)
    old = f.read()
    backup = path.with_name(f"{path.name}.schema{OLD_HEADERS.index(columns) + 1}")
    position = {c: i for i, c in enumerate(columns)}
    backup.write_bytes(old)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for raw in old.split(b"\n")[1:]:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not line:
            continue
        fields = next(csv.reader([line])) if line.count('"') % 2 == 0 else None
        if fields is not None and len(fields) == len(columns):
            writer.writerow([fields[position[c]] if c in position else "" for c in COLUMNS])
        else:
            out.write(line + "\n")
    data = out.getvalue().encode("utf-8")
    f.seek(0)
    f.truncate()
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
    backup.unlink()
    return len(data)


# Hard bounds on untrusted rows: a row past any of them is dropped (that row only), never parsed further.
MAX_LINE = 64 * 1024  # characters in one row
MAX_FIELD = 16 * 1024  # characters in one field (the config is the longest)
MAX_SHORT = 512  # characters in any field but config and reason
MAX_JSON_DEPTH = 8  # nesting of [ and { in a config
MAX_DIGITS = 40  # characters of one number (in a numeric field or a config)
_INTS = ("N", "C_in", "H", "W", "C_out", "kH", "kW", "groups", "bias", "reps", "trial", "schema", "is_default",
         "threads")
_FLOATS = ("time_s", "gflops", "max_abs_err", "time_min_s", "time_max_s", "load_avg", "device_time_s")
_LONG = ("config", "reason")


class _BadRow(ValueError):
    """A row that breaks a bound or does not parse: dropped, with this reason."""


def _json_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, without recursion (outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _bounded_number(text: str) -> float:
    if len(text) > MAX_DIGITS:
        raise _BadRow(f"a number of {len(text)} characters (at most {MAX_DIGITS})")
    return float(text)


def parse_config(text: str) -> Any:
    """A config's JSON within the bounds (length, depth, number size), else _BadRow (a ValueError)."""
    if len(text) > MAX_FIELD:
        raise _BadRow(f"config of {len(text)} characters (at most {MAX_FIELD})")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _json_depth(text) > MAX_JSON_DEPTH:
        raise _BadRow(f"config nested deeper than {MAX_JSON_DEPTH}")

    def integer(s: str) -> int:
        _bounded_number(s)
        return int(s)

    try:
        return json.loads(text, parse_int=integer, parse_float=_bounded_number)
    except _BadRow:
        raise
    except ValueError:
        raise _BadRow("config is not JSON") from None


def _parse_row(header: list[str], limits: list[int], line: str) -> dict[str, str]:
    """One physical line as a row of text fields, within the bounds; _BadRow drops it."""
    if len(line) > MAX_LINE:
        raise _BadRow(f"row of {len(line)} characters (at most {MAX_LINE})")
    if '"' not in line:
        fields = line.split(",")
    elif line.count('"') % 2:
        raise _BadRow("incomplete row (an unclosed quote: cut short by a killed writer or a full disk?)")
    else:
        fields = next(csv.reader([line]))
    if len(fields) < len(header):
        raise _BadRow("incomplete row (no schema field: cut short by a killed writer?)")
    if len(fields) > len(header):
        raise _BadRow(f"{len(fields)} fields, the header has {len(header)}")
    for name, text, limit in zip(header, fields, limits):
        if len(text) > limit:
            raise _BadRow(f"field {name} of {len(text)} characters (at most {limit})")
    return dict(zip(header, fields))


def _row_problem(row: dict[str, str], seen: dict[tuple[str, str], str | None] | None = None) -> str | None:
    """None if the row's values are valid, else the reason. `seen` memoizes the checks of problem keys and configs
    (many rows share them)."""
    seen = {} if seen is None else seen
    if row["op"] not in OPS:
        return f"op {row['op']!r} is not one of {OPS}"
    if row["status"] not in STATUSES:
        return f"status {row['status']!r} is unknown"
    if not _NAME.fullmatch(row["backend"]):
        return f"backend {row['backend']!r} is not a backend name"
    if not _SLUG.fullmatch(row["device"]):
        return f"device {row['device']!r} is not a device id"
    for kind, text in (("problem", row["problem"]), ("config", row["config"])):
        if (kind, text) not in seen:
            seen[kind, text] = _field_problem(kind, text)
        if seen[kind, text] is not None:
            return seen[kind, text]
    if row.get("source") and row["source"] not in SOURCES:
        return f"source {row['source']!r} is not one of {SOURCES}"
    if "schema" in row and not (row["schema"].isdigit() and int(row["schema"]) >= 1):
        return "incomplete row (no schema field: cut short by a killed writer?)"
    if row["status"] == "ok":
        try:
            t = float(row["time_s"])
        except ValueError:
            t = math.nan
        if not math.isfinite(t) or t <= 0:
            return f"time_s {row['time_s'] or '(empty)'} is not a positive number"
    return None


def _field_problem(kind: str, text: str) -> str | None:
    """None if a problem key or config is valid, else the reason."""
    if kind == "problem":
        try:
            Problem.from_key(text)
        except (ValueError, TypeError) as exc:
            return str(exc)
        return None
    try:
        config = parse_config(text) if text else {}
    except _BadRow as exc:
        return str(exc)
    return None if isinstance(config, dict) else "config is not a JSON object"


def _frame(rows: list[dict[str, str]], header: list[str]) -> pd.DataFrame:
    """The good rows, typed: numbers column by column (each field is at most MAX_DIGITS characters by now)."""
    df = pd.DataFrame.from_records(rows, columns=header)
    for c in _FLOATS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in _INTS:
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce").astype(float)
            # Untrusted text: a non-integral or huge value becomes NA instead of an exception.
            df[c] = v.where(v.notna() & (v.abs() < 2**53) & (v == v.round())).astype("Int64")
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
    for c in ("threads", "load_avg", "device_time_s"):  # columns of later schemas: empty in older rows
        if c not in df.columns:
            df[c] = pd.array([pd.NA] * len(df), dtype="Int64") if c == "threads" else math.nan
    # One timestamp format: rows of older writers said `+0000` or `+00:00` for UTC.
    df["timestamp"] = df["timestamp"].astype(str).str.replace(r"(\+00:?00)$", "Z", regex=True)
    return df


def scan_file(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, list[str], int]:
    """(the good rows, a reason per dropped row naming path and line, the number of data lines) of one results
    file, read row by row: one bad or torn row costs that row only. Raises ResultsFileError (path and line 1)
    when the header is not a results header, and for a file that cannot be opened."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return pd.DataFrame(columns=list(COLUMNS)), [], 0
    try:
        head = lines[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path}, line 1: not a readable results file (not UTF-8 text)") from None
    header = head.split(",") if len(head) <= MAX_LINE else []
    missing = [c for c in REQUIRED if c not in header]
    if missing or len(set(header)) != len(header):
        raise ResultsFileError(f"{path}, line 1: not a results header (missing column(s) "
                               f"{', '.join(missing) or '-'})")
    good: list[dict[str, str]] = []
    errors: list[str] = []
    seen: dict[tuple[str, str], str | None] = {}
    limits = [MAX_FIELD if c in _LONG else MAX_DIGITS if c in _FLOATS or c in _INTS else MAX_SHORT for c in header]
    for number, raw in enumerate(lines[1:], start=2):
        try:
            line = raw.decode("utf-8").rstrip("\r")
            if not line:
                continue
            row = _parse_row(header, limits, line)
            why = _row_problem(row, seen)
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        except _BadRow as exc:
            why = str(exc)
        except (Exception, RecursionError) as exc:  # untrusted text: nothing in it may escape this row
            why = f"unreadable row ({type(exc).__name__})"
        if why is None:
            good.append(row)
        else:
            errors.append(f"{path}, line {number}: {why}")
    return _frame(good, header), errors, len(lines) - 1


def read_file(path: str | os.PathLike[str], errors: list[str] | None = None) -> pd.DataFrame:
    """Read one results file row by row. Raises ResultsFileError (path and line) if its header is not a results
    header; each invalid or torn row is dropped (that row only), its reason appended to `errors` when given."""
    df, bad, _ = scan_file(path)
    if errors is not None:
        errors.extend(bad)
    return df


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
    """If the results file at `path` exists and cannot be appended to as it is (nothing in it reads, or its header
    is not ours), rename it to `quarantine_name(path)` (never overwritten), start a new file with the rows of it
    that do read, and return a message naming the path, the line and where the file now is; else None. Rows that
    are merely invalid or torn (dropped by `read_file`, one by one) do not make a file unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise ResultsFileError(f"{path}: results path exists and is not a regular file")
    with _open_locked(path) as f:
        try:
            good = pd.DataFrame()
            try:
                good, _, _ = scan_file(path)
                with open(path, "rb") as raw:
                    header = raw.readline().removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n")
                if not header or header.split(b",") in [[c.encode() for c in h] for h in (COLUMNS, *OLD_HEADERS)]:
                    return None
                problem = f"{path}, line 1: header is not the results header of schema {SCHEMA_VERSION}"
            except ResultsFileError as exc:
                problem = str(exc)
            target = quarantine_name(path)
            os.rename(path, target)
            carried = ""
            if len(good):
                rows = [{c: (None if pd.isna(v) else v) for c, v in r.items() if c in COLUMNS and c != "schema"}
                        for r in good.to_dict("records")]
                append_rows(path, rows)
                carried = f" ({len(rows)} readable row(s) carried into it)"
            return f"{problem}; kept aside as {target}, a new results file is started{carried}"
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_results_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            header = f.readline(MAX_LINE).removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n").split(b",")
    except OSError:
        return False
    return all(c.encode() in header for c in REQUIRED)


def check_output_path(option: str, path: str | os.PathLike[str],
                      directories: Iterable[str | os.PathLike[str]] = (), parent_must_exist: bool = True) -> Path:
    """An output file (`report -o`, `bench --csv`) that the command may write, checked before any work: never in a
    results directory (`directories`, the user's, the shipped one) nor a file with a results header, and its
    directory must exist (unless not `parent_must_exist`: the writer creates it) and be writable. Raises UserError
    naming the option and what to do."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{option} {out} is a directory; give a file name")
    where = out.resolve().parent
    dirs = {Path(d).resolve() for d in (*directories, results_dir(), shipped_results_dir())}
    if where in dirs:
        raise UserError(f"{option} {out} is inside the results directory {where}: writing it would overwrite or "
                        f"add to the results; give a path outside it")
    if out.exists() and _is_results_file(out):
        raise UserError(f"{option} {out} is a results file: writing it would overwrite the results; give another "
                        f"path")
    if not parent_must_exist:
        return out
    if not where.is_dir():
        raise UserError(f"{option} {out}: directory {out.parent} does not exist; create it or give another path")
    if not os.access(where, os.W_OK):
        raise UserError(f"{option} {out}: directory {out.parent} is not writable; give another path")
    return out
