"""First-call tuning, off by default (like `torch.backends.cudnn.benchmark`), and the untuned-device warning.

With `autotune.benchmark = True` or `$AUTOTUNE_BENCHMARK=1`, the first call of an (device, op, problem) that has
no measured row of its own (dispatch's first candidate is not `exact`) times the candidates on the call's own
inputs: the chain's transferred and nearest-problem winners, and each usable backend's default config on this
device. Each candidate runs once untimed (its build), then is timed by `autotune.core.timing.measure` with an equal
share of the budget left; a candidate is not started once the budget (`autotune.benchmark_budget_s`, else
`$AUTOTUNE_BENCHMARK_BUDGET_S`, else BUDGET_S seconds) is spent (one build may overrun it). Its results are
appended to the user's results directory as rows whose `source` is `first-call`, and the fastest candidate is
moved to the head of dispatch's memoized list: this process uses it from then on, and later processes find it as
an `exact` row. Never inside a `torch.compile` trace; one thread tunes a key, concurrent callers of the same key
run the untuned chain meanwhile.

Without the switch: one warning per process and device when dispatch has no tuned rows for the device, naming
the command that tunes it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import backends
from autotune.core.timing import ABANDON_FACTOR, current_threads, load_average, measure
from backends.base import config_json

ENV = "AUTOTUNE_BENCHMARK"
BUDGET_ENV = "AUTOTUNE_BENCHMARK_BUDGET_S"
BUDGET_S = 2.0
SOURCE = "first-call"

_lock = threading.Lock()
_done: set[tuple[str, str, str]] = set()  # (device, op, problem key) tuned (or being tuned) in this process
_warned: set[str] = set()  # devices warned about, or found to have tuned rows (nothing to warn about)
_env_flag: list[bool] = []  # $AUTOTUNE_BENCHMARK's verdict, once read


def enabled() -> bool:
    """Whether first-call tuning is on: `autotune.benchmark`, else $AUTOTUNE_BENCHMARK (read at the first call
    that asks, then kept: every untuned call asks, and an environment lookup costs microseconds)."""
    flag = getattr(sys.modules.get("autotune"), "benchmark", None)
    if flag is not None:
        return bool(flag)
    if not _env_flag:
        _env_flag.append(os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no", "off"))
    return _env_flag[0]


def budget_s() -> float:
    value = getattr(sys.modules.get("autotune"), "benchmark_budget_s", None)
    if value is None:
        try:
            value = float(os.environ.get(BUDGET_ENV, "") or BUDGET_S)
        except ValueError:
            value = BUDGET_S
    return max(0.0, float(value))


def _compiling() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # an old torch
        return False


def reset() -> None:
    """Forget which keys were tuned and which devices were warned about (tests)."""
    with _lock:
        _done.clear()
        _warned.clear()
        _env_flag.clear()


def warn_untuned(device_id: str, table: Any) -> None:
    """One warning per process and device when the device has no tuned rows at all."""
    if device_id in _warned:
        return
    tuned = any(table.rows[op] for op in table.rows)
    with _lock:
        if device_id in _warned:
            return
        _warned.add(device_id)
    if tuned:
        return
    kind = "gpu" if device_id.startswith("gpu-") else "cpu"
    warnings.warn(f"autotune: device {device_id} has no tuned results; calls use other devices' results or "
                  f"defaults. Tune it with `autotune tune --preset suite --devices {kind}` (or your own layers with "
                  f"--problems FILE), or set autotune.benchmark = True (${ENV}=1) to time the candidates on "
                  f"each new shape's first call", RuntimeWarning, stacklevel=5)


def _last_resort(choice: Any) -> bool:
    """A chain candidate measured elsewhere without a usable call time (e.g. another device's old kernel-only
    rows): it may be far off here (one such OpenCL config ran 5-7 s per call on this AMD EPYC)."""
    return choice.reason in ("transfer", "nearest") and not (choice.time_s is not None
                                                              and math.isfinite(choice.time_s))


def _pool(op: str, problem: Any, chain: list[Any], device_id: str, table: Any) -> list[Any]:
    """The candidates worth timing, each (backend, config) once, the fallback's reference stand-in excluded: the
    chain's candidates with a measured call time (transfer, nearest), each usable backend's default on this device,
    its `seed_configs` priors, then the `_last_resort` ones (timed only when nothing else could be)."""
    from autotune import dispatch

    pool: list[Any] = []
    seen: set[tuple[str, str]] = set()

    def add(c: Any) -> None:
        k = (c.backend.name, c.config_text)
        if k not in seen and not isinstance(c.backend, dispatch._ReferenceBackend):
            seen.add(k)
            pool.append(c)

    last = [c for c in chain if _last_resort(c)]
    for c in chain:
        if not _last_resort(c):
            add(c)
    for name in backends.names():
        device = dispatch._timed_device(table, name)
        if device is None or device.kind == "interpreter":
            continue
        backend = backends.get(name)
        try:
            config, _ = dispatch._valid_config(backend, op, problem, device,
                                               backend.default_config(op, problem, device))
        except Exception:
            continue
        if config is not None:
            add(dispatch.Choice(backend, device, config, "default", op, problem, f"{name}'s default"))
        try:
            priors = backend.seed_configs(op, problem, device)
        except Exception:
            priors = []
        for prior in priors:
            config, _ = dispatch._valid_config(backend, op, problem, device, prior)
            if config is not None:
                add(dispatch.Choice(backend, device, config, "default", op, problem, f"{name}'s tuning prior"))
    for c in last:
        add(c)
    return pool


def maybe_tune(op: str, chain: list[Any], arrays: tuple[Any, ...], device_id: str,
               convert: Callable[[Any, tuple[Any, ...], str], tuple[Any, ...]]) -> None:
    """Time the candidates of an untuned key once (when enabled), record them and put the fastest first in
    `chain` (dispatch's memoized list, changed in place); else warn once about an untuned device."""
    if not chain or chain[0].reason in ("exact", "forced", SOURCE):
        return
    from autotune import dispatch

    if not enabled():
        if device_id not in _warned:
            warn_untuned(device_id, dispatch.table(device_id))
        return
    problem = chain[0].problem
    table = dispatch.table(device_id)
    key = (device_id, op, problem.key)
    if key in _done or _compiling():
        return
    with _lock:
        if key in _done:
            return
        _done.add(key)
    tune(op, chain, arrays, device_id, table, budget_s(), convert)


def _row(device_id: str, op: str, problem: Any, choice: Any, status: str, t: Any, reason: str) -> dict[str, Any]:
    from autotune.core import results  # lazily: pandas

    return results.make_row(
        device_id=device_id, device_name=choice.device.name, backend=choice.backend.name, op=op, problem=problem,
        config=config_json(choice.config), status=status, source=SOURCE, time_s=t and t.median_s,
        time_min_s=t and t.min_s, time_max_s=t and t.max_s, reps=t and t.reps, reason=reason,
        is_default=choice.reason == "default", backend_version=choice.backend.version(), threads=current_threads(),
        load_avg=load_average())


def tune(op: str, chain: list[Any], arrays: tuple[Any, ...], device_id: str, table: Any, budget: float,
         convert: Callable[[Any, tuple[Any, ...], str], tuple[Any, ...]]) -> list[tuple[Any, float]]:
    """Time the pool within `budget` seconds on the call's `arrays` (`convert(backend, arrays, dtype)`: as the
    backend takes them); returns (choice, median seconds) of those timed. Records rows."""
    from autotune import dispatch
    from autotune.core import results  # lazily: pandas

    problem = chain[0].problem
    pool = _pool(op, problem, chain, device_id, table)
    start = time.perf_counter()
    timed: list[tuple[Any, float]] = []
    rows: list[dict[str, Any]] = []
    for i, choice in enumerate(pool):
        left = budget - (time.perf_counter() - start)
        if left <= 0 or (timed and _last_resort(choice)):
            break  # the budget is spent, or only configs that may be far off are left
        try:
            inputs = convert(choice.backend, arrays, problem.dtype)
            out = choice.kernel(*inputs)  # the build (and a driver's first-launch work), and a check of the shape
            if tuple(out.shape) != choice.expected_shape:
                raise RuntimeError(f"returned shape {tuple(out.shape)}")
            share = max(0.0, budget - (time.perf_counter() - start)) / (len(pool) - i)
            # as in tuning: a first timed run over ABANDON_FACTOR times the fastest so far ends its timing there
            above = ABANDON_FACTOR * min(s for _, s in timed) if timed else None
            t = measure(choice.backend.runner(choice.kernel, inputs, choice.device), budget_s=share, min_reps=1,
                        max_reps=20, warmup=0, abandon_above_s=above)
        except Exception:  # a candidate that fails here is simply not chosen
            continue
        if t.abandoned:
            rows.append(_row(device_id, op, problem, choice, "abandoned", None,
                             f"first call ({choice.reason}): one run took {t.median_s:.3g} s, over "
                             f"{ABANDON_FACTOR:g}x the fastest candidate"))
            continue
        timed.append((choice, t.median_s))
        rows.append(_row(device_id, op, problem, choice, "ok", t, f"first call ({choice.reason})"))
    if not timed:
        return timed
    try:
        results.append_rows(results.device_file(results.results_dir(), device_id), rows)
    except Exception as exc:  # a read-only home must not break the call
        warnings.warn(f"autotune: first-call timings not recorded: {exc}", RuntimeWarning, stacklevel=4)
    best, best_s = min(timed, key=lambda t: t[1])
    chosen = dataclasses.replace(best, reason=SOURCE, time_s=best_s,
                                 source=f"timed on the first call ({best.reason}: {best.source})")
    with dispatch._lock:
        if best in chain:
            chain.remove(best)
        chain.insert(0, chosen)
    return timed
