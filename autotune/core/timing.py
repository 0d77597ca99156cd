"""The one timing loop: warm-up, then repetitions until a time budget is spent or the median is stable.

Backends never time themselves; they hand over a `run` callable (Backend.runner) that either returns the seconds a
device timer measured (OpenCL profiling events, CUDA events) or None, in which case the wall clock around the call
is used. Nothing is built or compiled inside the loop: `run` is called once untimed first.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

# A config whose first run is over this many times the best so far is abandoned (status `abandoned`): bad configs
# cost one run, not a timing budget (tinygrad's BEAM does the same). Tuning studies and first-call tuning use it.
ABANDON_FACTOR = 3.0


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    max_s: float
    reps: int
    abandoned: bool = False  # the first timed repetition was over `abandon_above_s`: not timed further


def _once(run: Callable[[], float | None]) -> float:
    start = time.perf_counter()
    device_s = run()
    wall = time.perf_counter() - start
    return float(device_s) if device_s is not None else wall


def measure(run: Callable[[], float | None], *, budget_s: float = 0.5, min_reps: int = 3, max_reps: int = 100,
            warmup: int = 1, rel_tol: float = 0.02, abandon_above_s: float | None = None) -> Timing:
    """Time `run`: `warmup` untimed calls, then at least `min_reps` timed ones, continuing while the budget lasts
    and the median of the last repetitions still moves by more than `rel_tol`. A first timed repetition over
    `abandon_above_s` (the tuner: 3x the study's best so far) ends it there, `abandoned`."""
    for _ in range(max(warmup, 0)):
        _once(run)
    samples: list[float] = []
    start = time.perf_counter()
    previous_median = None
    while len(samples) < max_reps:
        samples.append(_once(run))
        if abandon_above_s is not None and len(samples) == 1 and samples[0] > abandon_above_s:
            return Timing(samples[0], samples[0], samples[0], 1, abandoned=True)
        if len(samples) < min_reps:
            continue
        median = statistics.median(samples)
        stable = previous_median is not None and abs(median - previous_median) <= rel_tol * median
        if time.perf_counter() - start >= budget_s or (stable and len(samples) >= 2 * min_reps):
            break
        previous_median = median
    return Timing(statistics.median(samples), min(samples), max(samples), len(samples))


def current_threads() -> int:
    """The threads a kernel of this process runs with: the first of OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
    MKL_NUM_THREADS that is set (what BLAS reads), else the CPUs this process may run on."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average of the machine now (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
