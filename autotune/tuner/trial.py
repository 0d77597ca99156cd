"""One tuning trial: build a config, check it (autotune.core.verify, against the float64 reference) on the
trial's own problem, time it.

Trials run in a persistent worker subprocess (`Worker`, running `python -m autotune.tuner.trial`), so a kernel
that crashes the process (a segfault in a driver, `os._exit`) or hangs cannot take the tuning run down: the
parent sees the worker die or miss its deadline, records `crash` or `timeout`, and starts a fresh worker for
the next trial. The worker is kept between trials so the backends' build caches (compiled programs, reference
results) survive. Protocol: one JSON object per line on the worker's stdin and on a private copy of its stdout
(the worker points fd 1 at stderr, so whatever a kernel or driver prints cannot corrupt the protocol); the
worker's stderr goes to a log file whose tail explains crashes.
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
from typing import IO, Any

import numpy as np

import backends
from autotune.core import verify
from autotune.core.problem import OPS, Problem

STARTUP_TIMEOUT_S = 120.0
REFERENCE_TIMEOUT_S = 900.0
_OOR_WORDS = ("out of resources", "out_of_resources", "outofresources", "mem_object_allocation",
              "out of memory",
              "outofmemory", "cuda_error_out_of_memory", "insufficient shared memory")


def _copy(a: Any) -> Any:
    if a is None:
        return None
    return a.clone() if hasattr(a, "clone") else np.array(a, copy=True)


# ---- one trial, in-process ---------------------------------------------------------------------------------
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
            from autotune.core import reference
            kernel_in, exact = verify.make_inputs(op, p, seed)
            self.cache[key] = (kernel_in, reference.run(op, p, exact))
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key]


_references = _References()


def run_trial(request: dict[str, Any]) -> dict[str, Any]:
    """Build, check and time one config (in this process). `request`: backend, device, op, problem (key),
    config, budget_s (timing budget), seed (inputs). Returns a dict with status, reason, and when ok: time_s (the
    backend's `runner`: the call as a user makes it with host arrays), device_time_s (its `device_runner`, the
    kernels alone, where it has one; else time_s), time_min_s, time_max_s, reps, max_abs_err, threads (the
    worker's); plus backend_version."""
    from autotune.core.timing import current_threads, measure

    out: dict[str, Any] = {"status": "error", "reason": ""}
    try:
        target = backends.find(request["backend"], request["device"])
        backend, device = target.backend, target.device
        out["backend_version"] = backend.version()
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
        verdict = verify.compare(kernel(*inputs), expected, op, problem)
    except Exception as exc:
        return {**out, "status": classify("run", exc), "reason": f"run: {_short(exc)}"}
    if math.isfinite(verdict.max_abs_err):
        out["max_abs_err"] = verdict.max_abs_err
    if not verdict.ok:
        return {**out, "status": "wrong_answer", "reason": verdict.reason}
    try:
        above = request.get("abandon_above_s")
        timing = measure(backend.runner(kernel, inputs, device), budget_s=float(request.get("budget_s", 0.3)),
                         abandon_above_s=None if above is None else float(above))
    except Exception as exc:
        return {**out, "status": classify("run", exc), "reason": f"timing: {_short(exc)}"}
    if timing.abandoned:
        return {**out, "status": "abandoned", "time_s": timing.median_s, "reps": 1, "threads": current_threads(),
                "reason": f"abandoned: first repetition {timing.median_s:.3g} s over the study's limit "
                          f"{timing.median_s if above is None else float(above):.3g} s"}
    if not (timing.median_s > 0 and math.isfinite(timing.median_s)):
        return {**out, "status": "error", "reason": f"timer returned {timing.median_s!r} seconds"}
    try:
        device_s = device_time(backend, kernel, inputs, device, float(request.get("budget_s", 0.3)) / 2)
    except Exception as exc:
        return {**out, "status": classify("run", exc), "reason": f"timing on the device: {_short(exc)}"}
    return {**out, "status": "ok", "time_s": timing.median_s, "time_min_s": timing.min_s,
            "time_max_s": timing.max_s, "reps": timing.reps, "threads": current_threads(),
            "device_time_s": timing.median_s if device_s is None else device_s}


def device_time(backend: Any, kernel: Any, inputs: tuple[Any, ...], device: Any, budget_s: float) -> float | None:
    """The kernel-only device time (median) where the backend times it apart from the call (`device_runner`),
    else None: the call's time is the device time."""
    from autotune.core.timing import measure

    run = backend.device_runner(kernel, inputs, device)
    if run is None:
        return None
    t = measure(run, budget_s=budget_s)
    return t.median_s if t.median_s > 0 and math.isfinite(t.median_s) else None


def retime(request: dict[str, Any]) -> dict[str, Any]:
    """Re-measure a study's best configs interleaved: `request` as run_trial's, but `configs` (a list) instead of
    `config`, and `rounds`. Each round times every config once (`budget_s` each) in turn, so that a burst of load
    on a shared machine falls on all of them alike, not on one. Returns {"results": [one per config: status,
    reason, and when ok time_s (the median of the rounds' medians), time_min_s, time_max_s, reps, device_time_s,
    threads]}; a config that fails to build, check or time is an `error` with the reason, the others go on."""
    from autotune.core.timing import current_threads, measure

    target = backends.find(request["backend"], request["device"])
    backend, device = target.backend, target.device
    op = request["op"]
    problem = Problem.from_key(request["problem"])
    space = backend.space(op, problem, device)
    budget = float(request.get("budget_s", 0.3))
    cached, expected = _references.get(op, problem, int(request.get("seed", 0)))
    entries: list[dict[str, Any]] = []
    for config in request["configs"]:
        entry: dict[str, Any] = {"status": "error", "reason": "", "medians": [], "devices": [], "min": math.inf,
                                 "max": 0.0, "reps": 0}
        try:
            kernel = backend.prepare(op, problem, device, space.validate(config))
            inputs = tuple(_copy(a) for a in cached)
            verdict = verify.compare(kernel(*inputs), expected, op, problem)
            if not verdict.ok:
                entry.update(status="wrong_answer", reason=verdict.reason)
            else:
                entry.update(status="ok", kernel=kernel, inputs=inputs)
        except Exception as exc:
            entry["reason"] = f"re-timing: {_short(exc)}"
        entries.append(entry)
    for _ in range(max(1, int(request.get("rounds", 3)))):
        for entry in entries:
            if entry["status"] != "ok":
                continue
            try:
                t = measure(backend.runner(entry["kernel"], entry["inputs"], device), budget_s=budget)
                d = device_time(backend, entry["kernel"], entry["inputs"], device, budget / 2)
            except Exception as exc:
                entry.update(status=classify("run", exc), reason=f"re-timing: {_short(exc)}")
                continue
            entry["medians"].append(t.median_s)
            entry["devices"].append(t.median_s if d is None else d)
            entry.update(min=min(entry["min"], t.min_s), max=max(entry["max"], t.max_s), reps=entry["reps"] + t.reps)
    out = []
    for entry in entries:
        if entry["status"] != "ok":
            out.append({"status": entry["status"], "reason": entry["reason"]})
            continue
        out.append({"status": "ok", "time_s": float(np.median(entry["medians"])), "time_min_s": entry["min"],
                    "time_max_s": entry["max"], "reps": entry["reps"],
                    "device_time_s": float(np.median(entry["devices"])), "threads": current_threads(),
                    "backend_version": backend.version(), "rounds": len(entry["medians"])})
    return {"results": out}


# ---- the worker subprocess ---------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the tuner dies (even by kill -9), so that a worker stuck
    in a hanging kernel is not left behind. Best effort elsewhere (the worker also exits when its stdin
    closes)."""
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
                result: dict[str, Any] = {"warm": True}
            elif "configs" in request:  # the study's best configs, re-timed interleaved
                result = retime(request)
            else:
                result = run_trial(request)
        except Exception:  # a bug here must still answer, or the parent would wait for the time limit
            where = traceback.format_exc(limit=3).replace("\n", " | ")
            result = {"status": "error", "reason": "worker: " + where}
        proto.write(json.dumps(result) + "\n")
        proto.flush()
    return 0


class WorkerDied(RuntimeError):
    pass


class Worker:
    """A persistent trial-running subprocess. `run(request, timeout_s)` returns the trial's result dict; a
    worker that dies yields status `crash`, one that misses the deadline is killed and yields `timeout`;
    either way the next `run` starts a fresh worker."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._log: IO[bytes] | None = None
        self._warm: tuple | None = None  # the (op, problem, seed) whose reference the worker holds
        self._no_reference: dict[tuple, str] = {}  # references that failed: not tried again for every trial
        self.starts = 0  # workers started: more than one means restarts after crashes or time-outs

    # A worker dies with the tuner: its stdin closes, `for line in sys.stdin` ends.
    def _start(self) -> None:
        self._log = tempfile.TemporaryFile(prefix="autotune-worker-")
        self.proc = subprocess.Popen([sys.executable, "-m", "autotune.tuner.trial"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, close_fds=True)
        self._buf = b""
        self._warm = None
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
                    "reason": f"trial took longer than its limit of {timeout_s:g} s (build, check and "
                              f"timing); worker killed"}
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
