"""Dispatch: which backend, device and config run a call, and what runs next when one fails.

For a call, the device is where the input lives: this CPU (`autotune.devices.cpu_device_id()`) for NumPy arrays and
CPU tensors; for CUDA tensors, the GPU's id as a backend reports it. The candidates, best first:

1. **exact**: the `ok` rows of (device, op, problem.for_op(op).key), at most one per backend (its fastest config that
   is still valid), ordered by measured median time.
2. **nearest**: no exact row: the tuned problem of the same op and device at the smallest `distance()`, and its
   per-backend winners, each config re-validated against the backend's space *for the new problem* (invalid ones
   are skipped; if none fits, the next nearest problem is tried).
3. **default**: on a GPU, the first available backend in registry order (`backends.names()`: opencl, triton, other
   registered ones, numpy last) with a non-interpreter device of that id that supports the problem, with its
   `default_config`; on a CPU, numpy's `default_config` (BLAS is a safe bet untuned; an untuned OpenCL kernel on
   PoCL is not: see DESIGN.md's measured facts).
4. **fallback**: `numpy` with its default config, always last (the float64 reference, cast back, for dtypes the
   numpy backend does not compute), so a call always has something that runs.

Results are read with `results.read_dirs([user dir, shipped dir], device=...)`. Rows are untrusted: rows of another
device, unknown backend names, garbage values and unparsable files are ignored with a warning; configs are
validated against the backend's space before anything is prepared (an invalid config from a file is never run).
For the same (backend, op, problem, config), the **latest** row of the **first** directory that has one decides
(so a user's re-measurement replaces the shipped one, and a config whose latest check failed is not used); among
the remaining `ok` rows the fastest wins regardless of directory. Backends that are unavailable here, have no device
of that id, or whose device is of kind `interpreter` (Triton on the CPU) or has `info["timing"] == "not-speed"` are
never chosen by timing; `baseline` rows
(reference timings such as PyTorch's own) are never candidates.

Costs: the files are loaded once per device, and their (mtime, size) are checked again at most every
`RELOAD_CHECK_S` seconds; a change reloads them and forgets that device's decisions. Decisions (the candidate list)
are memoized per (device, op, problem, backend, config); kernels are prepared lazily, on first use. A backend that
raises at call time (or returns a wrongly shaped result) is dropped from that decision with one warning naming it
and the reason, and the next candidate runs; a forced `backend=` runs only that backend and its errors reach the
caller; `config=` without `backend=` is a ValueError (with dispatch, configs come from the results).
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import backends
from autotune.devices import cpu_device_id
from autotune.problem import OPS, Problem, check_op
from backends.base import Backend, Config, ConfigError, Device, Kernel, config_json

FALLBACK = "numpy"
REASONS = ("exact", "nearest", "default", "fallback", "forced")
# At most this often (seconds) the results files are stat'ed to see whether they changed.
RELOAD_CHECK_S = 1.0
_BY_ID_MAX = 4096

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


@dataclass(eq=False)
class Choice:
    """One candidate: a backend on a device with a config, why it was chosen, and where the choice came from."""

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
    _kernel: Kernel | None = field(default=None, repr=False)

    @property
    def kernel(self) -> Kernel:
        """The prepared kernel, built on first use (so candidates behind a working one are never built)."""
        if self._kernel is None:
            self._kernel = self.backend.prepare(self.op, self.problem, self.device, self.config)
        return self._kernel

    @functools.cached_property
    def expected_shape(self) -> tuple[int, ...]:
        """The shape a correct result has: anything else counts as the backend failing."""
        return _expected_shape(self.op, self.problem)

    @property
    def config_text(self) -> str:
        return config_json(self.config)

    def describe(self) -> str:
        detail = {"exact": f"measured {_fmt_time(self.time_s)} in {self.source}",
                  "nearest": f"winner of {self.tuned_problem} (distance {self.distance:.2f}, measured "
                             f"{_fmt_time(self.time_s)} there) in {self.source}" if self.distance is not None else "",
                  }.get(self.reason, self.source)
        return f"{self.backend.name} on {self.device.id} config={self.config_text} [{self.reason}] {detail}".rstrip()


def _fmt_time(t: float | None) -> str:
    if t is None:
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

    def __str__(self) -> str:
        return (f"{self.op}: {self.backend} config={config_json(self.config)} on {self.device} "
                f"[{self.reason}] {self.source}")


# ---- devices --------------------------------------------------------------------------------------------------------
_gpu_ids: dict[int, str] = {}


def _gpu_device_id(index: int) -> str:
    """The id of CUDA device `index`, as the backends report it (triton first); computed from torch's device
    properties with `devices.device_id` when no backend lists it."""
    found = _gpu_ids.get(index)
    if found is not None:
        return found
    found = None
    names = backends.names()
    for name in (["triton"] if "triton" in names else []) + [n for n in names if n != "triton"]:
        try:
            backend = backends.get(name)
            if not backend.available()[0]:
                continue
            gpus = [d for d in backend.devices() if d.kind == "gpu"]
        except Exception:  # a broken backend must not stop dispatch
            continue
        for d in gpus:
            # only a device that says which CUDA index it is: enumeration orders differ between APIs
            if d.info.get("torch_index", d.info.get("index")) == index:
                found = d.id
                break
        if found:
            break
    if found is None:
        import torch  # only reached for CUDA tensors, so torch is installed

        from autotune.devices import device_id
        props = torch.cuda.get_device_properties(index)
        vendor = "amd" if getattr(torch.version, "hip", None) else "nvidia"
        # rounded up as the triton backend does: a 79.2 GiB part is an 80 GB one
        found = device_id("gpu", vendor, props.name, memory_gb=math.ceil(props.total_memory / 2**30))
    _gpu_ids[index] = found
    return found


@functools.lru_cache(maxsize=1)
def _cpu_id() -> str:
    return cpu_device_id()  # builds the slug with regexes: too slow to redo per call


def device_of(array: Any) -> str:
    """The device id of where `array` lives: this CPU for NumPy arrays and CPU tensors, the GPU's id for CUDA."""
    if isinstance(array, np.ndarray):
        return _cpu_id()
    dev = getattr(array, "device", None)
    if getattr(dev, "type", None) == "cuda":
        index = dev.index
        if index is None:
            import torch
            index = torch.cuda.current_device()
        return _gpu_device_id(int(index))
    return _cpu_id()


def _resolve_device(device: str | None) -> str:
    """`which(device=...)`: None is this CPU; `cuda` / `cuda:N` a local GPU; anything else a device id."""
    if device is None or device == "cpu":
        return cpu_device_id()
    if not isinstance(device, str):
        raise TypeError(f"device must be a device id (str) or None, got {type(device).__name__}")
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise ValueError(f"device {device!r} is not cuda or cuda:N")
        try:
            import torch
            count = torch.cuda.device_count()
        except ImportError:
            count = 0
        if int(index or 0) >= count:
            raise ValueError(f"device {device!r}: there is no such CUDA device here ({count} found)")
        return _gpu_device_id(int(index or 0))
    _results().device_file(".", device)  # raises ValueError if it is not a device id
    return device


# ---- results, per device --------------------------------------------------------------------------------------------
@dataclass
class _Table:
    signature: tuple
    checked: float  # time.monotonic() of the last signature check
    rows: dict[str, dict[str, list[_Row]]]  # op -> problem key -> usable ok rows, fastest first
    devices: dict[str, Device]  # backend name -> its (non-interpreter) device of this id
    decisions: dict[tuple, list[Choice]] = field(default_factory=dict)
    # (id(problem), op, backend) -> (problem, decision): hashing a Problem costs microseconds, an id does not; the
    # entry holds the problem, so its id cannot be reused while the entry exists. api.py hands the same Problem
    # object to repeated identical calls.
    by_id: dict[tuple, tuple[Problem, list[Choice]]] = field(default_factory=dict)


_tables: dict[str, _Table] = {}
_lock = threading.RLock()


def _results() -> Any:
    from autotune import results  # lazily: it imports pandas, which `import autotune` should not pay for
    return results


def _dirs() -> list[Path]:
    results = _results()
    return [results.results_dir(), results.shipped_results_dir()]


def _signature(device_id: str) -> tuple:
    sig = []
    for d in _dirs():
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


def _backend_device(name: str, device_id: str) -> Device | None:
    """`name`'s device with id `device_id` that is not an interpreter and not marked `info["timing"] ==
    "not-speed"`, or None (unavailable, absent, or a broken backend)."""
    try:
        backend = backends.get(name)
        if not backend.available()[0]:
            return None
        for d in backend.devices():
            # interpreters (and any device whose timings say nothing about speed) never win by timing
            if d.id == device_id and d.kind != "interpreter" and d.info.get("timing") != "not-speed":
                return d
    except Exception:  # a backend that cannot even list its devices is not a candidate
        return None
    return None


_COLUMNS = ("device", "backend", "op", "problem", "config", "status", "time_s", "timestamp", "study", "trial",
            "source", "source_order")


def _load(device_id: str, signature: tuple) -> _Table:
    """The results of one device (user's directory first, then the shipped one); anything unreadable is ignored
    with a warning, never raised: a broken file must not break calls."""
    try:
        return _read(device_id, signature)
    except Exception as exc:  # e.g. a file without read permission
        _warn(f"results for device {device_id}: not used ({type(exc).__name__}: {exc})")
        return _Table(signature, time.monotonic(), {op: {} for op in OPS}, {})


def _read(device_id: str, signature: tuple) -> _Table:
    errors: list[str] = []
    df = _results().read_dirs(_dirs(), device=device_id, errors=errors)
    df = df[[c for c in _COLUMNS if c in df.columns]]  # only what is used: extra columns cannot get in the way
    ignored: list[str] = []
    known = set(backends.names())
    latest: dict[tuple, tuple[int, Any, Config]] = {}  # (backend, op, problem, config) -> (order, row, config)
    foreign: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for row in df.itertuples(index=False):
        if row.status == "baseline":  # a reference timing (e.g. PyTorch's own), never a candidate
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
        prev = latest.get(key)
        # Earlier directory wins; within one directory the later row (appended later) wins.
        if prev is None or row.source_order <= prev[0]:
            latest[key] = (row.source_order, row, config)
    for dev, n in foreign.items():
        ignored.append(f"{n} row(s) of another device {dev!r}")
    for name, n in unknown.items():
        ignored.append(f"{n} row(s) of unknown backend {name!r} (registered: {', '.join(sorted(known))})")
    devices: dict[str, Device] = {}
    usable: dict[str, dict[str, list[_Row]]] = {op: {} for op in OPS}
    for (name, op, key, _), (_, row, config) in latest.items():
        if row.status != "ok":
            continue
        if name not in devices:
            dev = _backend_device(name, device_id)
            if dev is None:
                continue  # not runnable here: an ordinary situation, not a warning
            devices[name] = dev
        problem = Problem.from_key(key)  # validated by read_file
        where = f"{row.source}" + (f" (study {row.study}, trial {row.trial})" if getattr(row, "study", "") else "") \
            + (f" at {row.timestamp}" if row.timestamp else "")
        usable[op].setdefault(key, []).append(_Row(float(row.time_s), name, config, problem, where))
    for rows in usable.values():
        for lst in rows.values():
            lst.sort(key=lambda r: (r.time_s, r.backend, config_json(r.config)))
    if errors:
        _warn(f"results for device {device_id}: ignored {len(errors)} unreadable file(s)/row(s): "
              f"{_summarize(errors)}")
    if ignored:
        _warn(f"results for device {device_id}: ignored {_summarize(ignored)}")
    return _Table(signature, time.monotonic(), usable, devices)


def _table(device_id: str) -> _Table:
    """The device's results, reloaded if the files changed (checked at most every RELOAD_CHECK_S seconds)."""
    table = _tables.get(device_id)
    now = time.monotonic()
    if table is not None and now - table.checked < RELOAD_CHECK_S:
        return table
    with _lock:
        table = _tables.get(device_id)
        if table is not None and now - table.checked < RELOAD_CHECK_S:
            return table
        sig = _signature(device_id)
        if table is not None and table.signature == sig:
            table.checked = now
            return table
        table = _load(device_id, sig)
        _tables[device_id] = table
        return table


def clear_cache() -> None:
    """Forget every loaded result and decision (the next call reloads)."""
    with _lock:
        _tables.clear()
        _gpu_ids.clear()


# ---- the candidate chain ------------------------------------------------------------------------------------------
def _groups_kind(p: Problem) -> str:
    if p.groups == 1:
        return "dense"
    return "depthwise" if p.groups == p.C_in else "grouped"


def distance(a: Problem, b: Problem) -> float:
    """How far apart two problems are for borrowing a tuned config: the sum of |log2(ratio)| over N, C_in, C_out,
    H and W (a factor of two in one dimension costs 1), plus |log2| of the groups ratio when both are grouped the
    same way, plus penalties: kernel size differs 8, stride differs 8, dilation differs 4, groups kind (dense /
    depthwise / grouped) differs 8, padding or output_padding differ 1, bias differs 0.5, dtype differs 16."""
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


def _valid_config(backend: Backend, op: str, problem: Problem, device: Device, config: Config) -> tuple[Config | None,
                                                                                                         str]:
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


def _from_rows(op: str, problem: Problem, rows: list[_Row], table: _Table, reason: str, warn: bool,
               dist: float | None = None) -> list[Choice]:
    """The fastest valid row per backend, fastest first."""
    out: list[Choice] = []
    seen: set[str] = set()
    for r in rows:
        if r.backend in seen:
            continue
        device = table.devices[r.backend]
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
    return out


def _nearest(op: str, problem: Problem, table: _Table) -> list[Choice]:
    tuned = [(distance(problem, rows[0].problem), key, rows) for key, rows in table.rows[op].items()
             if key != problem.key and rows]
    for dist, _, rows in sorted(tuned, key=lambda t: (t[0], t[1])):
        found = _from_rows(op, problem, rows, table, "nearest", warn=False, dist=dist)
        if found:
            return found
    return []


def _default(op: str, problem: Problem, device_id: str) -> list[Choice]:
    names = backends.names()
    if device_id.startswith("cpu-"):
        order = [FALLBACK]
        rule = "default rule: on a CPU, numpy's default config"
    else:
        order = [n for n in names if n != FALLBACK]
        rule = "default rule: on a GPU, the first available backend (registry order) with this device"
    for name in order:
        device = _backend_device(name, device_id)
        if device is None:
            continue
        backend = backends.get(name)
        try:
            config, why = _valid_config(backend, op, problem, device, backend.default_config(op, problem, device))
        except Exception:  # a backend whose default_config raises is skipped
            continue
        if config is not None:
            return [Choice(backend, device, config, "default", op, problem, rule)]
    return []


def _fallback(op: str, problem: Problem) -> Choice:
    backend = backends.get(FALLBACK)
    device = backend.devices()[0]
    config, _ = _valid_config(backend, op, problem, device, backend.default_config(op, problem, device)) \
        if backend.supports(problem, device) is None else (None, "")
    if config is not None:
        return Choice(backend, device, config, "fallback", op, problem, "fallback: numpy, always last")
    return Choice(_ReferenceBackend(), device, {}, "fallback", op, problem,
                  "fallback: the float64 numpy reference, cast back", _kernel=_reference_kernel(op, problem))


class _ReferenceBackend(Backend):
    """The last resort for dtypes the numpy backend does not compute (float16, bfloat16): the reference. Named
    `numpy`; it takes arrays and tensors as they are, so that bfloat16 tensors never meet NumPy's dtypes."""

    name = FALLBACK

    def accepts(self, array: Any) -> bool:
        return True


def _reference_kernel(op: str, problem: Problem) -> Kernel:
    from backends.numpy import reference

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


def _forced(op: str, problem: Problem, name: str, config: Config | None, device_id: str) -> Choice:
    backend = backends.get(name)
    ok, why = backend.available()
    if not ok:
        raise RuntimeError(f"backend {name!r} is not available here: {why}")
    devices = backend.devices()
    if not devices:
        raise RuntimeError(f"backend {name!r} has no device here")
    # The device where the input lives if the backend has it, else the backend's first device.
    device = next((d for d in devices if d.id == device_id), devices[0])
    unsupported = backend.supports(problem, device)
    if unsupported:
        raise ValueError(f"backend {name!r} cannot run this problem: {unsupported}")
    space = backend.space(op, problem, device)
    default = backend.default_config(op, problem, device)
    cfg = space.validate(default) if config is None else space.complete(config, default)
    return Choice(backend, device, cfg, "forced", op, problem,
                  "forced by backend=" + (" and config=" if config is not None else ""))


def _build(op: str, problem: Problem, table: _Table, device_id: str) -> list[Choice]:
    chain: list[Choice] = []
    rows = table.rows[op].get(problem.key)
    if rows:
        chain += _from_rows(op, problem, rows, table, "exact", warn=True)
    if not chain:
        chain += _nearest(op, problem, table)
    chain += _default(op, problem, device_id)
    chain.append(_fallback(op, problem))
    out: list[Choice] = []
    seen: set[tuple[str, str, str]] = set()
    for c in chain:  # the same (backend, device, config) only once, at its best place
        k = (c.backend.name, c.device.id, c.config_text)
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out


def choices(op: str, problem: Problem, backend: str | None = None, config: Config | None = None,
            device: str | None = None) -> list[Choice]:
    """The candidates for a call on `device` (an id; None is this CPU), best first (memoized; the list is the
    memo itself, so failed candidates removed from it stay removed)."""
    problem = problem.for_op(op)
    device_id = device or _cpu_id()
    table = _table(device_id)
    key = (op, problem, backend, None if config is None else config_json(config))
    found = table.decisions.get(key)
    if found is None:
        check_op(op)
        if backend is not None:
            found = [_forced(op, problem, backend, config, device_id)]
        elif config is not None:
            raise ValueError("config= forces a backend's parameters: give backend= too (with backend=None the "
                             "config comes from the tuned results)")
        else:
            with _lock:
                found = _build(op, problem, table, device_id)
        table.decisions[key] = found
        from autotune import log  # the runtime log switch: each new decision, once
        log.decision(device_id, op, problem.key, found)
    return found


def _expected_shape(op: str, p: Problem) -> tuple[int, ...]:
    return {"forward": p.output_shape, "backward_input": p.input_shape, "backward_weight": p.weight_shape,
            "backward_bias": (p.C_out,)}[op]


def run(op: str, problem: Problem, convert: Callable[[Backend], tuple[Any, ...]], like: Any,
        backend: str | None, config: Config | None) -> Any:
    """Run `op` on the first candidate that succeeds. `convert` turns the caller's arrays into what a backend
    takes; `like` is the array whose device decides (the input, or the weight for weight/bias gradients)."""
    device_id = device_of(like)
    if config is None:
        table = _table(device_id)
        fast_key = (id(problem), op, backend)
        hit = table.by_id.get(fast_key)
        if hit is not None and hit[0] is problem:
            candidates = hit[1]
        else:
            candidates = choices(op, problem, backend, config, device_id)
            if len(table.by_id) >= _BY_ID_MAX:
                table.by_id.clear()
            table.by_id[fast_key] = (problem, candidates)
    else:
        candidates = choices(op, problem, backend, config, device_id)
    if backend is not None:
        choice = candidates[0]
        return choice.kernel(*convert(choice.backend))
    while True:
        choice = candidates[0]
        try:
            out = choice.kernel(*convert(choice.backend))
            if tuple(out.shape) != choice.expected_shape:
                raise RuntimeError(f"returned shape {tuple(out.shape)}, expected {choice.expected_shape}")
            return out
        except Exception as exc:  # a failing backend must not take the call down while others remain
            if len(candidates) == 1:
                raise
            with _lock:
                if candidates and candidates[0] is choice:
                    candidates.pop(0)  # later calls go straight to the next candidate
            warnings.warn(f"autotune: backend {choice.backend.name!r} (config {choice.config_text}, "
                          f"{choice.reason}) failed on {op} {choice.problem.key}: {type(exc).__name__}: {exc}; "
                          f"running the next candidate ({candidates[0].backend.name})", RuntimeWarning,
                          stacklevel=4)


def which(problem: Problem | str, op: str = "forward", *, device: str | None = None, backend: str | None = None,
          config: Config | None = None) -> Which:
    """Which backend and config a call of `op` on `problem` would run on `device` (None: this CPU; `cuda:N`; or
    a device id), and why. `problem` is a `Problem` or a problem key."""
    if isinstance(problem, str):
        problem = Problem.from_key(problem)
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be an autotune.Problem or a problem key, got {type(problem).__name__}")
    check_op(op)
    device_id = _resolve_device(device)
    chain = choices(op, problem, backend, config, device_id)
    first = chain[0]
    return Which(op=op, problem=first.problem.key, device=first.device.id, backend=first.backend.name,
                 config=dict(first.config), reason=first.reason, source=first.source, time_s=first.time_s,
                 distance=first.distance, tuned_problem=first.tuned_problem,
                 chain=tuple(c.describe() for c in chain))
