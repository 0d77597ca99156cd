"""One tuning trial: build a config, check it against the NumPy reference on the trial's own problem, time it.

Trials run in a persistent worker subprocess (`Worker`), so a kernel that crashes the process (a segfault in a
driver, `os._exit`) or hangs cannot take the tuning run down: the parent sees the worker die or miss its deadline,
records `crash` or `timeout`, and starts a fresh worker for the next trial. The worker is kept between trials so
the backends' build caches (compiled programs, reference results) survive. Protocol: one JSON object per line on
the worker's stdin and on a private copy of its stdout (the worker points fd 1 at stderr, so whatever a kernel or
driver prints cannot corrupt the protocol); the worker's stderr goes to a log file whose tail explains crashes.

Plugin hook (tests, out-of-tree backends under development): `AUTOTUNE_EXTRA_BACKENDS="name=module:Class,..."`
adds backends by import path, in the tuner and in its workers, next to `backends.get`'s registry.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import OrderedDict
from typing import Any

import numpy as np

from autotune.problem import OPS, Problem

EXTRA_BACKENDS_ENV = "AUTOTUNE_EXTRA_BACKENDS"
STARTUP_TIMEOUT_S = 120.0
REFERENCE_TIMEOUT_S = 900.0
_OOR_WORDS = ("out of resources", "out_of_resources", "outofresources", "mem_object_allocation", "out of memory",
              "outofmemory", "cuda_error_out_of_memory", "insufficient shared memory")
_extra_instances: dict[str, Any] = {}


# ---- backends --------------------------------------------------------------------------------------------------
def extra_backend_specs() -> dict[str, str]:
    """`name -> module:Class` from $AUTOTUNE_EXTRA_BACKENDS (empty when unset)."""
    text = os.environ.get(EXTRA_BACKENDS_ENV, "").strip()
    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target or not name.strip():
            raise ValueError(f"${EXTRA_BACKENDS_ENV}: expected name=module:Class, got {item!r}")
        out[name.strip()] = target.strip()
    return out


def backend_names() -> list[str]:
    import backends
    names = backends.names()
    return names + [n for n in extra_backend_specs() if n not in names]


def get_backend(name: str) -> Any:
    """The backend object `name`: from $AUTOTUNE_EXTRA_BACKENDS if listed there, else `backends.get(name)`."""
    specs = extra_backend_specs()
    if name in specs:
        if name not in _extra_instances:
            import importlib

            from backends.base import Backend
            module_name, _, cls_name = specs[name].partition(":")
            cls = getattr(importlib.import_module(module_name), cls_name)
            backend = cls()
            if not isinstance(backend, Backend):
                raise TypeError(f"extra backend {name!r} ({specs[name]}) does not implement backends.base.Backend")
            backend.name = name
            _extra_instances[name] = backend
        return _extra_instances[name]
    import backends
    return backends.get(name)


def find_device(backend: Any, device_id: str) -> Any:
    for d in backend.devices():
        if d.id == device_id:
            return d
    raise ValueError(f"backend {backend.name!r} has no device {device_id!r} here")


# ---- inputs, reference, tolerance ----------------------------------------------------------------------------------
def make_inputs(op: str, p: Problem, seed: int = 0) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(kernel inputs in the problem's dtype, the same values in float64 for the reference). Values are uniform in
    [-1, 1], so every product is at most 1 in magnitude (the tolerance relies on it)."""
    rng = np.random.default_rng(seed)
    kernel_in: list[Any] = []
    exact: list[Any] = []
    for shape in p.operand_shapes(op):
        if shape is None:
            kernel_in.append(None)
            exact.append(None)
            continue
        values = rng.uniform(-1.0, 1.0, size=shape)
        if p.dtype == "bfloat16":  # NumPy has no bfloat16: torch tensors (only GPU backends offer this dtype)
            import torch
            t = torch.from_numpy(values).to(torch.bfloat16)
            kernel_in.append(t)
            exact.append(t.to(torch.float64).numpy())
        else:
            a = np.ascontiguousarray(values.astype(p.dtype))
            kernel_in.append(a)
            exact.append(a.astype(np.float64))
    return tuple(kernel_in), tuple(exact)


def reduction_length(op: str, p: Problem) -> int:
    """Products summed into one output element, at most (bounds the rounding error)."""
    G = p.groups
    if op == "forward":
        return (p.C_in // G) * p.kH * p.kW + int(p.bias)
    if op == "backward_input":
        return (p.C_out // G) * p.kH * p.kW
    if op == "backward_weight":
        return p.N * p.H * p.W
    return p.N * p.output_size[0] * p.output_size[1]


_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def tolerance(op: str, p: Problem) -> float:
    """Largest accepted |result - reference|: with inputs in [-1, 1] every product is at most 1, so a sum of K of
    them, accumulated in float32 (or better) and rounded to the dtype, is off by at most about K*eps32 + |y|*eps.
    We allow 4x the accumulation bound (blocked/tree sums stay well inside it) plus the output rounding; a wrong
    index or a missing tap moves an element by a whole product, far more for any sane K."""
    K = reduction_length(op, p)
    accumulate = _EPS["float64"] if p.dtype == "float64" else _EPS["float32"]
    return 4.0 * K * accumulate + K * _EPS.get(p.dtype, _EPS["float32"]) + 1e-12


def _copy(a: Any) -> Any:
    if a is None:
        return None
    return a.clone() if hasattr(a, "clone") else np.array(a, copy=True)


def _as_float64(out: Any) -> np.ndarray:
    if type(out).__module__.startswith("torch"):
        out = out.detach().to("cpu").double().numpy()
    return np.asarray(out, dtype=np.float64)


# ---- one trial, in-process ---------------------------------------------------------------------------------------
def classify(stage: str, exc: BaseException) -> str:
    """The status for an exception raised while building (`build`) or running (`run`) a kernel."""
    text = f"{type(exc).__name__} {exc}".lower().replace(" ", "")
    if isinstance(exc, MemoryError) or any(w.replace(" ", "") in text for w in _OOR_WORDS):
        return "out_of_resources"
    return "build_error" if stage == "build" else "error"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _References:
    """A few reference results kept per worker (they can take seconds on large problems)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.cache: OrderedDict[tuple, tuple[Any, ...]] = OrderedDict()

    def get(self, op: str, p: Problem, seed: int) -> tuple[tuple[Any, ...], np.ndarray]:
        key = (op, p.key, seed)
        if key not in self.cache:
            from backends.numpy import reference
            kernel_in, exact = make_inputs(op, p, seed)
            self.cache[key] = (kernel_in, reference.run(op, p, exact))
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key]  # type: ignore[return-value]


_references = _References()


def run_trial(request: dict[str, Any]) -> dict[str, Any]:
    """Build, check and time one config (in this process). `request`: backend, device, op, problem (key), config,
    budget_s (timing budget), seed (inputs). Returns a dict with status, reason, and when ok: time_s, time_min_s,
    time_max_s, reps, max_abs_err; plus backend_version."""
    from autotune.timing import measure

    out: dict[str, Any] = {"status": "error", "reason": ""}
    try:
        backend = get_backend(request["backend"])
        out["backend_version"] = backend.version()
        device = find_device(backend, request["device"])
        op = request["op"]
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        problem = Problem.from_key(request["problem"])
        config = backend.space(op, problem, device).validate(request["config"])
    except Exception as exc:  # a broken request or backend is recorded, not fatal
        return {**out, "reason": f"setting up the trial: {_short(exc)}"}
    try:
        kernel = backend.prepare(op, problem, device, config)
    except Exception as exc:
        return {**out, "status": classify("build", exc), "reason": f"build: {_short(exc)}"}
    try:
        cached, expected = _references.get(op, problem, int(request.get("seed", 0)))
        inputs = tuple(_copy(a) for a in cached)  # a kernel that writes into its inputs spoils only its copy
        got = _as_float64(kernel(*inputs))
    except Exception as exc:
        return {**out, "status": classify("run", exc), "reason": f"run: {_short(exc)}"}
    if got.shape != expected.shape:
        return {**out, "status": "wrong_answer", "reason": f"result shape {got.shape}, expected {expected.shape}"}
    finite = bool(np.isfinite(got).all())
    err = float(np.max(np.abs(got - expected))) if got.size and finite else (0.0 if finite else math.inf)
    tol = tolerance(op, problem)
    out["max_abs_err"] = err
    if not err <= tol:
        what = "non-finite values" if not finite else f"max |error| {err:.3g} > tolerance {tol:.3g}"
        return {**out, "status": "wrong_answer", "reason": f"{what} against the NumPy reference"}
    try:
        timing = measure(backend.runner(kernel, inputs, device), budget_s=float(request.get("budget_s", 0.3)))
    except Exception as exc:
        return {**out, "status": classify("run", exc), "reason": f"timing: {_short(exc)}"}
    if not (timing.median_s > 0 and math.isfinite(timing.median_s)):
        return {**out, "status": "error", "reason": f"timer returned {timing.median_s!r} seconds"}
    return {**out, "status": "ok", "time_s": timing.median_s, "time_min_s": timing.min_s,
            "time_max_s": timing.max_s, "reps": timing.reps}


# ---- the worker subprocess ---------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the tuner dies (even by kill -9), so that a worker stuck in
    a hanging kernel is not left behind. Best effort elsewhere (the worker also exits when its stdin closes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the call
            os._exit(0)
    except (OSError, AttributeError):
        pass


def _worker_main() -> int:
    _die_with_parent()
    # Keep a private copy of stdout for the protocol and send fd 1 to stderr: kernels and drivers may print.
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    proto.write(json.dumps({"ready": os.getpid()}) + "\n")
    proto.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if "warm" in request:  # compute (and cache) a reference outside any trial's time limit
                w = request["warm"]
                _references.get(w["op"], Problem.from_key(w["problem"]), int(w.get("seed", 0)))
                result = {"warm": True}
            else:
                result = run_trial(request)
        except Exception:  # a bug here must still answer, or the parent would wait for the time limit
            result = {"status": "error", "reason": "worker: " + traceback.format_exc(limit=3).replace("\n", " | ")}
        proto.write(json.dumps(result) + "\n")
        proto.flush()
    return 0


class WorkerDied(RuntimeError):
    pass


class Worker:
    """A persistent trial-running subprocess. `run(request, timeout_s)` returns the trial's result dict; a worker
    that dies yields status `crash`, one that misses the deadline is killed and yields `timeout`; either way the
    next `run` starts a fresh worker."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._log = None
        self._warm: tuple | None = None  # the (op, problem, seed) whose reference the worker holds
        self._no_reference: dict[tuple, str] = {}  # references that failed: not tried again for every trial
        self.starts = 0  # workers started: more than one means restarts after crashes or time-outs

    # A worker dies with the tuner: its stdin closes, `for line in sys.stdin` ends.
    def _start(self) -> None:
        self._log = tempfile.TemporaryFile(prefix="autotune-worker-")
        self.proc = subprocess.Popen([sys.executable, "-m", "autotune.trial"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, close_fds=True)
        self._buf = b""
        self._warm: tuple | None = None
        self.starts += 1
        ready = self._read_line(time.monotonic() + STARTUP_TIMEOUT_S)
        if ready is None or "ready" not in ready:
            tail = self._stderr_tail()
            self.stop()
            raise WorkerDied(f"the trial worker did not start{': ' + tail if tail else ''}")

    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        """The next protocol line, or None when the worker closed its end (died) or the deadline passed
        (`self.timed_out` tells which)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        self.timed_out = False
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            value = json.loads(line)
        except ValueError:
            return {"status": "error", "reason": "worker answered garbage"}
        return value if isinstance(value, dict) else {"status": "error", "reason": "worker answered garbage"}

    def _stderr_tail(self, limit: int = 300) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - 4096))
            text = self._log.read().decode("utf-8", "replace")
            self._log.seek(0, os.SEEK_END)
        except OSError:
            return ""
        lines = [t.strip() for t in text.splitlines() if t.strip()]
        tail = " | ".join(lines[-3:])
        return tail[-limit:]

    def run(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.stop()
            self._start()
        warm_key = (request.get("op"), request.get("problem"), request.get("seed", 0))
        if warm_key in self._no_reference:
            return {"status": "error", "reason": self._no_reference[warm_key]}
        if warm_key != self._warm:
            # The reference result can take long on a big problem: computed first, under its own limit, so
            # that the trial's limit is about the kernel.
            answer = self._ask({"warm": {"op": warm_key[0], "problem": warm_key[1], "seed": warm_key[2]}},
                               max(REFERENCE_TIMEOUT_S, timeout_s))
            if answer is None or not answer.get("warm"):
                why = self._died("reference") if answer is None else str(answer.get("reason", ""))
                self._no_reference[warm_key] = f"computing the reference result failed: {why}"
                return {"status": "error", "reason": self._no_reference[warm_key]}
            self._warm = warm_key
        result = self._ask(request, timeout_s)
        if result is not None:
            return result
        return self._died("trial", timeout_s)

    def _ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """Send one request; the answer, or None if the worker died or missed the deadline."""
        assert self.proc is not None and self.proc.stdin is not None
        if self._log is not None:  # the stderr tail should be this request's
            self._log.seek(0)
            self._log.truncate()
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker is gone; reading says so
        return self._read_line(time.monotonic() + timeout_s)

    def _died(self, what: str, timeout_s: float = REFERENCE_TIMEOUT_S) -> Any:
        """After _ask returned None: stop the worker, and say what happened (a result dict for a trial)."""
        assert self.proc is not None
        if self.timed_out:
            self.stop()
            if what != "trial":
                return f"took longer than {timeout_s:g} s"
            return {"status": "timeout",
                    "reason": f"trial took longer than its limit of {timeout_s:g} s (build, check and timing); "
                              f"worker killed"}
        code = self.proc.wait()
        tail = self._stderr_tail()
        self.stop()
        try:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        except ValueError:
            how = f"signal {-code}"
        reason = f"the worker process died ({how}){': ' + tail if tail else ''}"
        return {"status": "crash", "reason": reason} if what == "trial" else reason

    def stop(self) -> None:
        """Kill the worker (if any) and release its pipes."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(_worker_main())
