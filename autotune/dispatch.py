"""Dispatch: which backend, device and config should run an (op, problem) on a device, best first, and why.

Library code with explicit arguments: it neither converts arrays nor calls kernels (`autotune.api` does both,
and owns the try-the-next-candidate loop). A device is an id: this CPU is `cpu_id()`, a CUDA device
`gpu_device_id(i)`. The candidates, best first (`candidates(op, problem, device_id, table)`):

1. **exact**: the `ok` rows of (device, op, problem.for_op(op).key), at most one per backend (its fastest
   config that is still valid), ordered by measured median time.
2. **nearest**: no exact row: the tuned problem of the same op and device at the smallest `distance()`, and
   its per-backend winners, each config re-validated against the backend's space *for the new problem*
   (invalid ones are skipped; if none fits, the next nearest problem is tried), by their times there; a vendor
   library's tuned config only where it beat the library's default call there by `TRANSFER_MARGIN`, else that call.
3. **transfer**: no exact row: the winners of the same (op, problem) measured on the most similar other device
   of the same kind (`autotune.core.devices.device_distance`: vendor, model, ISA vector width where known,
   core count or memory) in the same results directories (shipped ones included), each config re-validated
   against the backend's space *on this device* (invalid ones are never used; if none fits, the next most
   similar device is tried), in their order there, except that a vendor library's measurement (the torch backend,
   PyTorch's plain call) goes before every config that was not `TRANSFER_MARGIN` (1.25) times faster there.
   `which` names it: "from <device id>".
4. **default**: on a GPU, the first available backend in registry order (`backends.names()`: opencl, triton,
   other registered ones, numpy last) with a speed-timed device of that id that supports the problem, with its
   `default_config`; on a CPU, the torch backend's default (PyTorch's plain call: faster than numpy's default on
   average for every op on the CPUs measured) where the process has already imported torch, else numpy's
   `default_config` (BLAS is a safe bet untuned; an untuned OpenCL kernel on PoCL is not).
5. **fallback**: `numpy` with its default config, always last (the float64 reference, cast back, for dtypes
   the numpy backend does not compute), so a call always has something that runs.

Results are read with `results.read_dirs(dirs, device=...)`, `dirs` being the caller's results directories or,
by default, the user's directory then the shipped one (`default_results_dirs()`). Rows are untrusted: rows of
another device, unknown backend names, garbage values and unparsable files are ignored with a warning; configs
are validated against the backend's space before anything is prepared (an invalid config from a file is never
run). For the same (backend, op, problem, config), the rows of the **first** directory that has one decide (so a
user's measurements replace the shipped ones): a config whose **latest** row there failed (a failed correctness
check) is not used; otherwise it is ranked by `rank_time`, the median of the medians of its `ok` rows there (tune,
bench and first-call alike), so one noisy re-measure cannot demote a tuned winner. Within one backend, the configs
with a row measured under its version as it is now (`Backend.version()`, recorded as `backend_version`) go before
those measured only under another (a library upgrade or a changed kernel: those times no longer say how the code
runs); each backend's pick is then ranked against the others' by its time, and a backend measured only under other
versions keeps its order (`which` says "measured with ..., not ..."). The time is the one that matches
the call (`call_time`): on a CPU (host arrays) `time_s`, the call with its staging; on a GPU, for a backend that
takes the call's CUDA tensors as they are (`Backend.takes_device_arrays`), the kernel-only `device_time_s` where
the row has one. Among the configs left the
fastest wins regardless of directory. Backends that are unavailable
here, have no device of that id, or whose device's timings are not speed (`Device.timing_is_speed`: Triton's
interpreter) are never chosen by timing. `baseline` rows are reference timings: the sgemm peak is never a
candidate, but PyTorch's default call (backend `torch`, config `{}`, written by `autotune bench`) is a measurement
of the torch backend's default config (its default *is* torch's plain call), so a device whose results hold only
bench baselines for torch still weighs torch against the other backends (exact and transfer alike).

Costs: a `Table` (the rows of one device and set of directories) is loaded once, and the files' (mtime, size)
are checked again at most every `RELOAD_CHECK_S` seconds; a change is re-read by a background thread while the old
table (and its decisions) keeps serving, then replaces it (`which` reads it at once). Decisions (candidate
lists) are memoized per (op, problem, backend, config) in the table
(`choices`), and also per Problem *object*, so that a repeated call with the same Problem hashes nothing;
kernels are prepared lazily, on first use (`Choice.kernel`). A caller that finds a candidate failing removes
it with `discard`, so later calls go straight to the next one. A forced `backend=` gives that backend alone;
`config=` without `backend=` is a user error (with dispatch, configs come from the results).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import backends
from autotune import log
from autotune.core.devices import cpu_device_id
from autotune.core.errors import ArgumentTypeError, UserError
from autotune.core.problem import OPS, Problem, check_op
from backends.base import Backend, Config, ConfigError, Device, Kernel, config_json

FALLBACK = "numpy"
REASONS = ("exact", "nearest", "transfer", "default", "fallback", "forced", "first-call")
# At most this often (seconds) the results files are stat'ed to see whether they changed.
RELOAD_CHECK_S = 1.0
_BY_ID_MAX = 4096
PathLike = str | os.PathLike[str]

# distance(): penalties for differences that change which algorithm wins, beyond the size ratios.
PENALTY_KERNEL = 8.0
PENALTY_STRIDE = 8.0
PENALTY_DILATION = 4.0
PENALTY_GROUPS_KIND = 8.0
PENALTY_PADDING = 1.0
PENALTY_BIAS = 0.5
PENALTY_DTYPE = 16.0


class _Row(NamedTuple):
    time_s: float
    backend: str
    config: Config
    problem: Problem
    source: str  # file and row identification, for `which`
    current: bool = True  # measured with the backend's version as it is now (`Backend.version()`)


@dataclass(eq=False)
class Choice:
    """One candidate: a backend on a device with a config, why it was chosen, and where the choice came
    from."""

    backend: Backend
    device: Device
    config: Config
    reason: str  # one of REASONS
    op: str
    problem: Problem
    source: str = ""  # the results file and row (exact, nearest), or the rule (default, fallback, forced)
    time_s: float | None = None  # the measured median behind an exact/nearest choice
    distance: float | None = None  # nearest: distance to the tuned problem
    tuned_problem: str | None = None  # nearest: the tuned problem's key
    from_device: str | None = None  # transfer: the device whose measurement this is
    _kernel: Kernel | None = field(default=None, repr=False)

    @property
    def kernel(self) -> Kernel:
        """The prepared kernel, built on first use (so candidates behind a working one are never built)."""
        if self._kernel is None:
            self._kernel = self.backend.prepare(self.op, self.problem, self.device, self.config)
        return self._kernel

    @functools.cached_property
    def expected_shape(self) -> tuple[int, ...]:
        """The shape a correct result has (cached: callers check it on every call)."""
        p = self.problem
        return {"forward": p.output_shape, "backward_input": p.input_shape, "backward_weight": p.weight_shape,
                "backward_bias": p.bias_shape}[self.op]

    @property
    def config_text(self) -> str:
        return config_json(self.config)

    def describe(self) -> str:
        if self.reason == "exact":
            detail = f"measured {_fmt_time(self.time_s)} in {self.source}"
        elif self.reason == "nearest":
            detail = "" if self.distance is None else (
                f"winner of {self.tuned_problem} (distance {self.distance:.2f}, measured "
                f"{_fmt_time(self.time_s)} there) in {self.source}")
        elif self.reason == "transfer":
            detail = f"{self.source} (measured {_fmt_time(self.time_s)} there)"
        else:
            detail = self.source
        head = f"{self.backend.name} on {self.device.id} config={self.config_text} [{self.reason}]"
        return f"{head} {detail}".rstrip()


def _fmt_time(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "?"
    return f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.3f} ms"


@dataclass(frozen=True)
class Which:
    """What a call would run for a problem and op, and why (`autotune.which`)."""

    op: str
    problem: str  # the key dispatch looks up (problem.for_op(op).key)
    device: str
    backend: str
    config: Config
    reason: str  # exact | nearest | default | fallback | forced
    source: str  # results file and row, or the rule applied
    time_s: float | None = None
    distance: float | None = None
    tuned_problem: str | None = None
    chain: tuple[str, ...] = ()  # every candidate in order, described
    from_device: str | None = None  # transfer: the device whose results were borrowed

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (`chain` as a list)."""
        return {**asdict(self), "chain": list(self.chain)}

    def __str__(self) -> str:
        return (f"{self.op}: {self.backend} config={config_json(self.config)} on {self.device} "
                f"[{self.reason}] {self.source}")


# ---- devices -----------------------------------------------------------------------------------------------
_gpu_ids: dict[int, str] = {}


@functools.lru_cache(maxsize=1)
def cpu_id() -> str:
    """This CPU's device id (cached: `cpu_device_id` builds the slug with regexes, too slow to redo per
    call)."""
    return cpu_device_id()


def gpu_device_id(index: int) -> str:
    """The id of CUDA device `index`, as the backends report it (triton first); computed from torch's device
    properties with `devices.device_id` when no backend lists it. Cached per index."""
    found = _gpu_ids.get(index)
    if found is not None:
        return found
    names = backends.names()
    # triton numbers devices as torch does; ask it first, the others only if it does not list the device
    for name in (["triton"] if "triton" in names else []) + [n for n in names if n != "triton"]:
        targets, _ = backends.targets([name])
        # only a device that says which CUDA index it is: enumeration orders differ between APIs
        found = next((t.device.id for t in targets if t.device.kind == "gpu"
                      and t.device.info.get("torch_index", t.device.info.get("index")) == index), None)
        if found:
            break
    if found is None:
        import torch  # only reached for CUDA tensors and `cuda:N`, so torch is installed

        from autotune.core.devices import device_id
        props = torch.cuda.get_device_properties(index)
        vendor = "amd" if getattr(torch.version, "hip", None) else "nvidia"
        # rounded up as the triton backend does: a 79.2 GiB part is an 80 GB one
        found = device_id("gpu", vendor, props.name, memory_gb=math.ceil(props.total_memory / 2**30))
    _gpu_ids[index] = found
    return found


def resolve_device(device: str | None) -> str:
    """A device argument as a device id: None or `cpu` is this CPU; `cuda` / `cuda:N` a local GPU; anything
    else must be a device id (a slug). User errors for anything else."""
    if device is None or device == "cpu":
        return cpu_id()
    if not isinstance(device, str):
        raise ArgumentTypeError(f"device must be a device id (str) or None, got {type(device).__name__}")
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise UserError(f"device {device!r} is not cuda or cuda:N")
        try:
            import torch
            count = torch.cuda.device_count()
        except ImportError:
            count = 0
        if int(index or 0) >= count:
            raise UserError(f"device {device!r}: there is no such CUDA device here ({count} found)")
        return gpu_device_id(int(index or 0))
    _results().device_file(".", device)  # raises UserError if it is not a device id
    return device


# ---- results tables ----------------------------------------------------------------------------------------
@dataclass
class Table:
    """The usable results of one device read from one list of directories, and the decisions made from
    them."""

    device_id: str
    dirs: tuple[Path, ...]
    signature: tuple
    checked: float  # time.monotonic() of the last signature check
    rows: dict[str, dict[str, list[_Row]]]  # op -> problem key -> usable ok rows, fastest first
    # backend name -> its speed-timed device of this id, or None (unavailable, no such device): asked once
    # each
    devices: dict[str, Device | None] = field(default_factory=dict)
    decisions: dict[tuple, list[Choice]] = field(default_factory=dict)
    # backend name -> its version() now, asked once each: a config measured only under other versions ranks after
    # the configs measured under this one (`_from_rows`)
    versions: dict[str, str] = field(default_factory=dict)
    # (id(problem), op, backend) -> (problem, decision): hashing a Problem costs microseconds, an id does not;
    # the entry holds the problem, so its id cannot be reused while the entry exists. api.py hands the same
    # Problem object to repeated identical calls.
    by_id: dict[tuple, tuple[Problem, list[Choice]]] = field(default_factory=dict)
    # transfer: the usable rows of the other devices of the same kind in `dirs`, most similar first, as
    # (distance, device id, rows like `rows`); read on first need (a tuned device never reads them)
    others: list[tuple[float, str, dict[str, dict[str, list[_Row]]]]] | None = None


# (device id, the caller's directories or None for the defaults) -> Table
_tables: dict[tuple[str, tuple[Path, ...] | None], Table] = {}
_lock = threading.RLock()
_reloading: set[tuple[str, tuple[Path, ...] | None]] = set()  # tables being re-read in the background
_generation = [0]  # bumped by clear_cache: a background reload started before it is dropped


def _results() -> Any:
    from autotune.core import results  # lazily: it imports pandas, which `import autotune` should not pay for
    return results


def default_results_dirs() -> list[Path]:
    """The directories a plain call reads: the user's results directory first, then the shipped one."""
    results = _results()
    return [results.results_dir(), results.shipped_results_dir()]


def _signature(dirs: tuple[Path, ...], device_id: str) -> tuple:
    sig: list[tuple[str, int | None, int | None]] = []
    for d in dirs:
        f = _results().device_file(d, device_id)
        try:
            st = os.stat(f)
            sig.append((str(f), st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((str(f), None, None))
    return tuple(sig)


def _warn(message: str) -> None:
    warnings.warn(f"autotune: {message}", RuntimeWarning, stacklevel=4)


def _summarize(problems: list[str], limit: int = 8) -> str:
    shown = "; ".join(problems[:limit])
    return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


_COLUMNS = ("device", "backend", "op", "problem", "config", "status", "time_s", "device_time_s", "timestamp",
            "study", "trial", "source", "schema", "backend_version", "file", "file_order")
# Rows of results schemas before this one timed a staging backend's kernel alone in `time_s`
# (`Backend.stages_host_arrays`).
CALL_TIME_SCHEMA = 3


def rank_time(times: list[float]) -> float:
    """The time that ranks a config: the median of the medians of its ok measurements (one noisy re-measure,
    faster or slower, moves it little; the latest row alone would decide with one sample)."""
    return float(np.median(times))


def call_time(row: Any, resident: bool) -> float:
    """The measured time of a row that matches the call: for a call whose arrays already live on the device and
    go to the kernels as they are (`resident`: CUDA tensors, `Backend.takes_device_arrays`) the kernel-only
    `device_time_s` where the row has one; else (host arrays: NumPy, CPU tensors) `time_s`, the call with its
    staging to and from the device."""
    if resident:
        try:
            t = float(getattr(row, "device_time_s", None))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            t = math.nan
        if math.isfinite(t) and t > 0:
            return t
    return float(row.time_s)


def _resident(table: Table, name: str) -> bool:
    """Whether a call on the table's device hands its arrays to backend `name`'s kernels as they are (so that the
    kernel-only device time is what it waits for): a GPU device whose arrays the backend takes."""
    device = _timed_device(table, name)
    if device is None or device.kind != "gpu":
        return False
    try:
        return bool(backends.get(name).takes_device_arrays(device))
    except Exception:  # a backend that cannot say is ranked by the call's time
        return False


def _kernel_only(row: Any, name: str) -> bool:
    """Whether the row's `time_s` is a staging backend's kernel alone (results schemas 1 and 2): not the time of a
    call on host arrays, which also waits for the copies."""
    try:
        schema = int(getattr(row, "schema", CALL_TIME_SCHEMA))
        return schema < CALL_TIME_SCHEMA and bool(backends.get(name).stages_host_arrays)
    except Exception:  # an unreadable schema field (read_file drops those) or a backend that cannot say
        return False


def _baseline_as_default(row: Any, table: Table, known: set[str]) -> Any:
    """A `baseline` row of a registered backend's name with no config, as bench records PyTorch's default call
    (backend `torch`, config `{}`), is a measurement of that backend's default config: the torch backend's default
    *is* torch's plain call. It becomes an `ok` row of that config (None for other baselines, such as the sgemm
    peak, and where the backend cannot say its default here)."""
    if row.backend not in known or (row.config or "{}") != "{}":
        return None
    device = _timed_device(table, row.backend)
    if device is None:
        return None
    try:
        problem = Problem.from_key(row.problem)
        default = backends.get(row.backend).default_config(row.op, problem, device)
    except Exception:  # a backend that cannot say its default for this problem: the row stays a reference
        return None
    return row._replace(status="ok", config=config_json(default), source=f"{row.source} baseline")


def load_table(device_id: str, dirs: Iterable[PathLike]) -> Table:
    """The results of one device in `dirs` (earlier directories first). Anything unreadable is ignored with a
    warning, never raised: a broken file must not break calls."""
    paths = tuple(Path(d) for d in dirs)
    signature = _signature(paths, device_id)
    table = Table(device_id, paths, signature, time.monotonic(), {op: {} for op in OPS})
    try:
        table.rows = _read(table)
    except Exception as exc:  # e.g. a file without read permission
        _warn(f"results for device {device_id}: not used ({type(exc).__name__}: {exc})")
    return table


def _read(table: Table, source: str | None = None) -> dict[str, dict[str, list[_Row]]]:
    """The usable rows of device `source` (default: the table's own device) in the table's directories, each
    config valid for a backend that runs on the table's device. Another device's rows are read quietly."""
    device_id = source or table.device_id
    errors: list[str] = []
    df = _results().read_dirs(table.dirs, device=device_id, errors=errors)
    # only what is used: extra columns cannot get in the way
    df = df[[c for c in _COLUMNS if c in df.columns]]
    ignored: list[str] = []
    known = set(backends.names())
    # (backend, op, problem, config) -> (directory order, its rows there in file order, config): the first
    # directory that has a config decides for it.
    measured: dict[tuple, tuple[int, list[Any], Config]] = {}
    foreign: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for row in df.itertuples(index=False):
        if row.status == "baseline":
            if row.device != device_id:
                continue  # another device's reference timing: nothing to convert or count
            row = _baseline_as_default(row, table, known)
            if row is None:  # a reference timing of no backend (the sgemm peak), never a candidate
                continue
        if row.device != device_id:
            foreign[row.device] = foreign.get(row.device, 0) + 1
            continue
        if row.backend not in known:
            unknown[row.backend] = unknown.get(row.backend, 0) + 1
            continue
        try:
            config = json.loads(row.config) if row.config else {}
        except (TypeError, ValueError):  # read_file already drops these; kept as a guard
            continue
        key = (row.backend, row.op, row.problem, config_json(config))
        prev = measured.get(key)
        if prev is None or row.file_order < prev[0]:
            measured[key] = (row.file_order, [row], config)
        elif row.file_order == prev[0]:
            prev[1].append(row)
    for dev, n in foreign.items():
        ignored.append(f"{n} row(s) of another device {dev!r}")
    for name, n in unknown.items():
        ignored.append(f"{n} row(s) of unknown backend {name!r} (registered: {', '.join(sorted(known))})")
    usable: dict[str, dict[str, list[_Row]]] = {op: {} for op in OPS}
    for (name, op, key, _), (_, measurements, config) in measured.items():
        latest = measurements[-1]
        if latest.status != "ok" or _timed_device(table, name) is None:
            continue  # its latest check failed, or not runnable here (an ordinary situation, not a warning)
        resident = _resident(table, name)
        ok = [r for r in measurements if r.status == "ok"]
        # kernel-only times (old rows of a staging backend) say nothing of a host-array call's time: such a config
        # ranks after every measured one (still a candidate of last resort, and a prior for tuning)
        timed = ok if resident else [r for r in ok if not _kernel_only(r, name)]
        time_s = rank_time([call_time(r, resident) for r in timed]) if timed else math.inf
        problem = Problem.from_key(key)  # validated by read_file
        version = _version(table, name)
        current = not version or any(getattr(r, "backend_version", None) == version for r in ok)
        where = str(latest.file)
        tuned = next((r for r in reversed(ok) if getattr(r, "study", "")), None)
        if tuned is not None:
            where += f" (study {tuned.study}, trial {tuned.trial})"
        elif str(getattr(latest, "source", "")).endswith(" baseline"):
            where += f" (bench's baseline: {name}'s plain call)"
        if not timed:
            where += " (kernel-only time of an older results schema: ranked after measured calls)"
        elif len(timed) > 1:
            where += f", median of {len(timed)} measurements"
        if latest.timestamp:
            where += f", latest at {latest.timestamp}"
        if not current:
            then = getattr(latest, "backend_version", None)
            then = then if isinstance(then, str) and then else "an unrecorded version"
            where += f" (measured with {then}, not {version}: ranked after {name}'s configs measured with it)"
        usable[op].setdefault(key, []).append(_Row(time_s, name, config, problem, where, current))
    for rows in usable.values():
        for lst in rows.values():
            lst.sort(key=lambda r: (r.time_s, r.backend, config_json(r.config)))
    if source is not None:
        return usable
    if errors:
        _warn(f"results for device {device_id}: ignored {len(errors)} unreadable file(s)/row(s): "
              f"{_summarize(errors)}")
    if ignored:
        _warn(f"results for device {device_id}: ignored {_summarize(ignored)}")
    return usable


def table(device_id: str, results_dirs: tuple[Path, ...] | None = None, wait: bool = False) -> Table:
    """The cached table of `device_id` for `results_dirs` (None: `default_results_dirs()`, looked up again at
    each check); the files are stat'ed at most every RELOAD_CHECK_S seconds. A change is reloaded off the caller's
    path: a background thread reads the files while the old table keeps serving, and replaces it when done (with
    `wait`, as `which` does, the caller reads them itself). Only the first load of a table is on a caller's path."""
    cache_key = (device_id, results_dirs)
    found = _tables.get(cache_key)
    now = time.monotonic()
    if found is not None and now - found.checked < RELOAD_CHECK_S and not (wait and cache_key in _reloading):
        return found  # the hot path: one dict lookup and a clock read
    with _lock:
        found = _tables.get(cache_key)
        if found is not None and now - found.checked < RELOAD_CHECK_S and not (wait and cache_key in _reloading):
            return found
        dirs = tuple(default_results_dirs()) if results_dirs is None else results_dirs
        signature = _signature(dirs, device_id)
        if found is not None and found.dirs == dirs and found.signature == signature \
                and not (wait and cache_key in _reloading):
            found.checked = now
            return found
        if found is None or found.dirs != dirs or wait:
            found = _tables[cache_key] = load_table(device_id, dirs)
            _reloading.discard(cache_key)
            return found
        found.checked = now  # the old table serves until the new one is read
        if cache_key not in _reloading:
            _reloading.add(cache_key)
            threading.Thread(target=_reload, args=(cache_key, device_id, dirs, _generation[0]), daemon=True,
                             name="autotune-results-reload").start()
        return found


def _reload(cache_key: tuple[str, tuple[Path, ...] | None], device_id: str, dirs: tuple[Path, ...],
            generation: int) -> None:
    """Read a changed table in the background and swap it in (unless the cache was cleared meanwhile)."""
    new = None
    try:
        new = load_table(device_id, dirs)  # a broken file is a warning, not an exception
    finally:
        with _lock:
            if cache_key in _reloading and _generation[0] == generation:
                _reloading.discard(cache_key)
                if new is not None:
                    _tables[cache_key] = new


def clear_cache() -> None:
    """Forget every loaded result and decision (the next call reloads)."""
    with _lock:
        _tables.clear()
        _gpu_ids.clear()
        _is_local.cache_clear()
        _reloading.clear()
        _generation[0] += 1


# ---- the candidate list ------------------------------------------------------------------------------------
def _groups_kind(p: Problem) -> str:
    if p.groups == 1:
        return "dense"
    return "depthwise" if p.groups == p.C_in else "grouped"


def distance(a: Problem, b: Problem) -> float:
    """How far apart two problems are for borrowing a tuned config: the sum of |log2(ratio)| over N, C_in,
    C_out, H and W (a factor of two in one dimension costs 1), plus |log2| of the groups ratio when both are
    grouped the same way, plus penalties: kernel size differs 8, stride differs 8, dilation differs 4, groups
    kind (dense / depthwise / grouped) differs 8, padding or output_padding differ 1, bias differs 0.5, dtype
    differs 16."""
    d = sum(abs(math.log2(x / y)) for x, y in ((a.N, b.N), (a.C_in, b.C_in), (a.C_out, b.C_out), (a.H, b.H),
                                                (a.W, b.W)))
    if (a.kH, a.kW) != (b.kH, b.kW):
        d += PENALTY_KERNEL
    if a.stride != b.stride:
        d += PENALTY_STRIDE
    if a.dilation != b.dilation:
        d += PENALTY_DILATION
    if _groups_kind(a) != _groups_kind(b):
        d += PENALTY_GROUPS_KIND
    elif a.groups != b.groups:
        d += abs(math.log2(a.groups / b.groups))
    if a.padding != b.padding or a.output_padding != b.output_padding:
        d += PENALTY_PADDING
    if a.bias != b.bias:
        d += PENALTY_BIAS
    if a.dtype != b.dtype:
        d += PENALTY_DTYPE
    return d


def _version(table: Table, name: str) -> str:
    """Backend `name`'s version() here, asked once per table ("" where it cannot say)."""
    if name not in table.versions:
        try:
            table.versions[name] = str(backends.get(name).version())
        except Exception:  # a backend that cannot say: every row of it counts as current (their order is kept)
            table.versions[name] = ""
    return table.versions[name]


def _timed_device(table: Table, name: str) -> Device | None:
    """`name`'s device of the table's id whose timings are speed, or None; asked of the registry once per
    table and backend (lazily: a plain CPU call never imports the GPU backends' libraries). For a device that is
    not here at all (another machine's results, asked about by `which --device`), a stand-in of the same kind,
    so that its configs are validated and ranked as that machine would; it is never run."""
    if name not in table.devices:
        found, _ = backends.targets([name], timed=True, device_ids=[table.device_id])
        device = found[0].device if found else None
        if device is None and not _is_local(table.device_id):
            device = _stand_in(name, table.device_id)
        table.devices[name] = device
    return table.devices[name]


@functools.lru_cache(maxsize=64)
def _is_local(device_id: str) -> bool:
    """Whether some backend has the device `device_id` here (this CPU always is)."""
    if device_id == cpu_id():
        return True
    found, _ = backends.targets(device_ids=[device_id])
    return bool(found)


def _stand_in(name: str, device_id: str) -> Device | None:
    """For another machine's device: backend `name`'s local device of the same kind under that id, or a bare
    device of that kind; None if the backend is not available here."""
    kind = device_id.split("-", 1)[0]
    found, _ = backends.targets([name], timed=True)
    if not found and not backends.get(name).available()[0]:
        return None
    like = next((t.device for t in found if t.device.kind == kind), None)
    if like is not None:
        return dataclasses.replace(like, id=device_id)
    return Device(id=device_id, name=device_id, kind=kind)


def results_devices(results_dirs: Iterable[PathLike] | None = None) -> list[str]:
    """The device ids that have a results file in `results_dirs` (None: the user's then the shipped
    directory)."""
    dirs = default_results_dirs() if results_dirs is None else [Path(d) for d in results_dirs]
    found: set[str] = set()
    for d in dirs:
        if d.is_dir():
            found.update(f.stem for f in d.glob("*.csv"))
    return sorted(found)


def check_device(device_id: str, results_dirs: Iterable[PathLike] | None = None) -> None:
    """A UserError unless `device_id` is here or has results in `results_dirs`."""
    if device_id in results_devices(results_dirs) or _is_local(device_id):
        return
    raise UserError(f"unknown device {device_id!r}: not a device here and no results for it; devices with "
                    f"results: {', '.join(results_devices(results_dirs)) or '(none)'} (this CPU: {cpu_id()})")


def _valid_config(backend: Backend, op: str, problem: Problem, device: Device,
                  config: Config) -> tuple[Config | None, str]:
    """(clean config, "") if `config` is a point of the backend's space for this problem, else (None, why)."""
    try:
        unsupported = backend.supports(problem, device)
        if unsupported:
            return None, unsupported
        return backend.space(op, problem, device).validate(config), ""
    except ConfigError as exc:
        return None, str(exc)
    except Exception as exc:  # a backend that cannot describe its space for this problem: not a candidate
        return None, f"{type(exc).__name__}: {exc}"


def _from_rows(op: str, problem: Problem, rows: list[_Row], table: Table, reason: str, warn: bool,
               dist: float | None = None) -> list[Choice]:
    """The fastest valid row per backend, fastest first. A backend's configs measured with its current version
    go before those measured only with another one (a library upgrade or a changed kernel: their times no longer
    say how the code runs now); across backends each one's pick is ranked by its time."""
    out: list[Choice] = []
    seen: set[str] = set()
    for r in sorted(rows, key=lambda r: not r.current):  # stable: time order within each group
        if r.backend in seen:
            continue
        device = _timed_device(table, r.backend)
        if device is None:
            continue
        backend = backends.get(r.backend)
        clean, why = _valid_config(backend, op, problem, device, r.config)
        if clean is None:
            if warn:
                _warn(f"ignoring {r.backend} config {config_json(r.config)} from {r.source}: not valid for "
                      f"{op} {problem.key}: {why}")
            continue
        seen.add(r.backend)
        out.append(Choice(backend, device, clean, reason, op, problem, r.source, r.time_s, dist,
                          r.problem.key if reason == "nearest" else None))
    return sorted(out, key=lambda c: c.time_s if c.time_s is not None else math.inf)


def _nearest(op: str, problem: Problem, table: Table) -> list[Choice]:
    tuned = [(distance(problem, rows[0].problem), key, rows) for key, rows in table.rows[op].items()
             if key != problem.key and rows]
    for dist, _, rows in sorted(tuned, key=lambda t: (t[0], t[1])):
        found = _from_rows(op, problem, rows, table, "nearest", warn=False, dist=dist)
        if found:
            return _trust_vendor(op, problem, found, rows, other_device=False)
    return []


def similar_devices(table: Table) -> list[tuple[float, str, dict[str, dict[str, list[_Row]]]]]:
    """The other devices with results in the table's directories, of the same kind, most similar first, each with
    its usable rows (read once per table, on first need)."""
    if table.others is None:
        from autotune.core.devices import device_distance
        others = []
        for dev in results_devices(table.dirs):
            if dev == table.device_id:
                continue
            dist = device_distance(table.device_id, dev)
            if dist is None:
                continue
            try:
                rows = _read(table, dev)
            except Exception:  # another device's broken file must not break calls
                continue
            others.append((dist, dev, rows))
        table.others = sorted(others, key=lambda t: (t[0], t[1]))
    return table.others


# A vendor library's tuned config measured elsewhere (another device, or another problem of this device) replaces
# its default call only when it was this much faster than that call there, and a config from another device is
# placed before the vendor library's measurement there only when it was this much faster: a vendor library re-plans
# for each device and shape, a config does not. Measured: transferring the Intel Xeon's results to the AMD EPYC,
# OpenCL configs with a thin lead there (AVX-512 vector widths: 55.0 ms against torch's 55.8 on dcgan_g3 forward)
# ran 3.4x slower than torch here; on the AMD EPYC, torch's channels_last input gradient, 1.19x faster than its plain
# call on dcgan_g1 (N=64), ran 4x slower than the plain call at N=1, where it was the nearest problem's winner.
TRANSFER_MARGIN = 1.25


def _trust_vendor(op: str, problem: Problem, found: list[Choice], rows: list[_Row], other_device: bool) -> list[Choice]:
    """`found` (winners measured elsewhere, from `rows`) with a vendor library's (`Backend.vendor_library`) tuned
    config replaced by its default call where that call was within `TRANSFER_MARGIN` of it in `rows`; then, from
    `other_device`, the vendor library placed before every other config that was not `TRANSFER_MARGIN` times faster
    there, else (another problem of this device) all in the order of their times there."""
    vendor = next((c for c in found if c.backend.vendor_library and c.time_s), None)
    if vendor is None or vendor.time_s is None:
        return found
    vendor_s = vendor.time_s
    try:
        default = vendor.backend.default_config(op, problem, vendor.device)
        plain = [r.time_s for r in rows if r.backend == vendor.backend.name
                 and config_json(r.config) == config_json(vendor.backend.default_config(op, r.problem, vendor.device))]
    except Exception:  # a backend that cannot say its default here: its tuned config stays
        default, plain = None, []
    if default is not None and plain and plain[0] < vendor_s * TRANSFER_MARGIN \
            and config_json(default) != vendor.config_text:
        clean, _ = _valid_config(vendor.backend, op, problem, vendor.device, default)
        if clean is not None:
            i = found.index(vendor)
            vendor = found[i] = dataclasses.replace(  # another config: no kernel prepared for it yet
                vendor, config=clean, time_s=plain[0], _kernel=None, source=f"{vendor.backend.name}'s default call, "
                f"within {TRANSFER_MARGIN}x of its config {vendor.config_text} at {vendor.source}")
            vendor_s = plain[0]
    if not other_device:
        return sorted(found, key=lambda c: math.inf if c.time_s is None else c.time_s)
    bar = vendor_s / TRANSFER_MARGIN
    ahead = [c for c in found if c is not vendor and c.time_s is not None and c.time_s < bar]
    return ahead + [vendor] + [c for c in found if c is not vendor and c not in ahead]


def _transfer(op: str, problem: Problem, table: Table) -> list[Choice]:
    """The winners of the same (op, problem) on the most similar other device that has a valid one, in their order
    there, except that a vendor library's (`Backend.vendor_library`) goes before every config it was not
    `TRANSFER_MARGIN` times slower than."""
    for dist, dev, rows in similar_devices(table):
        theirs = rows[op].get(problem.key, [])
        found = _from_rows(op, problem, theirs, table, "transfer", warn=False)
        if found:
            found = _trust_vendor(op, problem, found, theirs, other_device=True)
            for c in found:
                c.source = f"from {dev} (device distance {dist:.2f}): {c.source}"
                c.from_device = dev
            return found
    return []


def _torch_loaded() -> bool:
    """Whether the process has imported PyTorch (then its plain call is the CPU's untuned default)."""
    return "torch" in sys.modules


def _default(op: str, problem: Problem, table: Table) -> list[Choice]:
    if table.device_id.startswith("cpu-"):
        # PyTorch's plain call beat numpy's default on average for every op on both CPUs measured (AMD EPYC AVX2:
        # numpy/torch geomean 0.63-0.94 even tuned; Intel Xeon AVX-512: 0.49-1.07), and a vendor library is tuned
        # for each CPU by its vendor. It is used only where the process already loaded torch: a NumPy-only caller
        # is not made to import it.
        order = ["torch", FALLBACK] if _torch_loaded() else [FALLBACK]
        rule = "default rule: on a CPU, PyTorch's plain call (torch is loaded), else numpy's default config"
    else:
        order = [n for n in backends.names() if n != FALLBACK]
        rule = "default rule: on a GPU, the first available backend (registry order) with this device"
    for name in order:
        device = _timed_device(table, name)
        if device is None:
            continue
        backend = backends.get(name)
        try:
            default = backend.default_config(op, problem, device)
            config, _ = _valid_config(backend, op, problem, device, default)
        except Exception:  # a backend whose default_config raises is skipped
            continue
        if config is not None:
            return [Choice(backend, device, config, "default", op, problem, rule)]
    return []


class _ReferenceBackend(Backend):
    """The last resort for dtypes the numpy backend does not compute (float16, bfloat16): the float64
    reference, cast back. Named `numpy`; its kernels take arrays and tensors as they are, so that bfloat16
    tensors never meet NumPy's dtypes."""

    name = FALLBACK

    def accepts(self, array: Any) -> bool:
        return True

    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        from autotune.core import reference

        def run(*inputs: Any) -> Any:
            tensor = next((a for a in inputs if a is not None and not isinstance(a, np.ndarray)), None)
            arrays = tuple(None if a is None else np.asarray(a, np.float64) if isinstance(a, np.ndarray)
                           else a.detach().cpu().double().numpy() for a in inputs)
            out = reference.run(op, problem, arrays)
            if tensor is None:
                return out.astype(problem.dtype)
            import torch  # a tensor came in, so torch is installed
            return torch.from_numpy(out).to(device=tensor.device, dtype=getattr(torch, problem.dtype))
        return run


def _fallback(op: str, problem: Problem) -> Choice:
    backend = backends.get(FALLBACK)
    device = backend.devices()[0]
    config, _ = _valid_config(backend, op, problem, device, backend.default_config(op, problem, device)) \
        if backend.supports(problem, device) is None else (None, "")
    if config is not None:
        return Choice(backend, device, config, "fallback", op, problem, "fallback: numpy, always last")
    return Choice(_ReferenceBackend(), device, {}, "fallback", op, problem,
                  "fallback: the float64 numpy reference, cast back")


def candidates(op: str, problem: Problem, device_id: str, table: Table) -> list[Choice]:
    """The candidates for `op` on `problem` (already `problem.for_op(op)`) on `device_id`, best first, from
    the results in `table`: exact, else nearest; then the default rule; the fallback last. Not memoized
    (`choices` is)."""
    chain: list[Choice] = []
    rows = table.rows[op].get(problem.key)
    if rows:
        chain += _from_rows(op, problem, rows, table, "exact", warn=True)
    if not chain:
        chain += _nearest(op, problem, table)
        chain += _transfer(op, problem, table)
    chain += _default(op, problem, table)
    chain.append(_fallback(op, problem))
    out: list[Choice] = []
    seen: set[tuple[str, str, str]] = set()
    for c in chain:  # the same (backend, device, config) only once, at its best place
        k = (c.backend.name, c.device.id, c.config_text)
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out


def forced(op: str, problem: Problem, name: str, config: Config | None, device_id: str) -> Choice:
    """The one candidate of a forced `backend=name` (and `config=`, completed with the default's values): on
    `device_id` if the backend has it, else on its first device (interpreters included: forcing is not
    timing)."""
    backend = backends.get(name)  # a name that is not a registered backend is a user error naming the name
    found, skipped = backends.targets([name])
    if not found:
        raise RuntimeError(f"backend {name!r} is not available here: {skipped[0].reason}")
    device = next((t.device for t in found if t.device.id == device_id), found[0].device)
    unsupported = backend.supports(problem, device)
    if unsupported:
        raise UserError(f"backend {name!r} cannot run this problem: {unsupported}")
    space = backend.space(op, problem, device)
    default = backend.default_config(op, problem, device)
    cfg = space.validate(default) if config is None else space.complete(config, default)
    return Choice(backend, device, cfg, "forced", op, problem,
                  "forced by backend=" + (" and config=" if config is not None else ""))


def choices(op: str, problem: Problem, backend: str | None = None, config: Config | None = None,
            device: str | None = None, results_dirs: Iterable[PathLike] | None = None) -> list[Choice]:
    """The candidates for a call of `op` on `device` (an id; None is this CPU), best first, from
    `results_dirs` (None: the user's then the shipped directory). Memoized: the list is the memo itself, so
    candidates removed from it with `discard` stay removed. A repeated call with the same Problem object costs
    two dict lookups."""
    device_id = device or cpu_id()
    dirs = None if results_dirs is None else tuple(Path(d) for d in results_dirs)
    tbl = table(device_id, dirs)
    if config is None:
        hit = tbl.by_id.get((id(problem), op, backend))
        if hit is not None and hit[0] is problem:
            return hit[1]
    problem_op = problem.for_op(op)  # checks op
    key = (op, problem_op, backend, None if config is None else config_json(config))
    found = tbl.decisions.get(key)
    if found is None:
        if backend is not None:
            found = [forced(op, problem_op, backend, config, device_id)]
        elif config is not None:
            raise UserError("config= forces a backend's parameters: give backend= too (with backend=None the "
                            "config comes from the tuned results)")
        else:
            with _lock:
                found = candidates(op, problem_op, device_id, tbl)
        tbl.decisions[key] = found
        log.decision(device_id, op, problem_op.key, found)  # the runtime log switch: each new decision, once
    if config is None:
        if len(tbl.by_id) >= _BY_ID_MAX:
            tbl.by_id.clear()
        tbl.by_id[(id(problem), op, backend)] = (problem, found)
    return found


def discard(candidates: list[Choice], choice: Choice) -> None:
    """Remove a candidate that failed from the head of a memoized list, so later calls go straight to the next
    one (under the lock: concurrent callers may find the same failure; only the first removes it)."""
    with _lock:
        if candidates and candidates[0] is choice:
            candidates.pop(0)


def which(problem: Problem | str, op: str = "forward", *, device: str | None = None,
          backend: str | None = None, config: Config | None = None,
          results_dirs: Iterable[PathLike] | None = None) -> Which:
    """Which backend and config a call of `op` on `problem` would run on `device` (None: this CPU; `cuda:N`;
    or a device id), and why, from `results_dirs` (None: the user's then the shipped directory). `problem` is
    a `Problem` or a problem key."""
    if isinstance(problem, str):
        problem = Problem.from_key(problem)
    if not isinstance(problem, Problem):
        raise ArgumentTypeError(f"problem must be an autotune.Problem or a problem key, "
                                f"got {type(problem).__name__}")
    check_op(op)
    device_id = resolve_device(device)
    if device is not None and device != "cpu" and not device.startswith("cuda"):
        check_device(device_id, results_dirs)
    # `which` explains what a call runs now: it reads a changed table itself, not in the background
    table(device_id, None if results_dirs is None else tuple(Path(d) for d in results_dirs), wait=True)
    chain = choices(op, problem, backend, config, device_id, results_dirs)
    first = chain[0]
    return Which(op=op, problem=first.problem.key, device=first.device.id, backend=first.backend.name,
                 config=dict(first.config), reason=first.reason, source=first.source, time_s=first.time_s,
                 distance=first.distance, tuned_problem=first.tuned_problem,
                 chain=tuple(c.describe() for c in chain), from_device=first.from_device)
