"""The numpy backend's copies on every core. NumPy releases the GIL while it copies or adds arrays of plain numbers,
so the copies around the BLAS calls (im2col columns, stride-phase splits, layout changes, col2im's adds) run in
threads, one share per core BLAS runs on (`current_threads()`); BLAS's own threads wait meanwhile. On the 2-core
EPYC, im2col's columns took 6.5 -> 4.0 ms (dcgan_g2) and 18.8 -> 6.2 ms (superres_x2) in two threads.

Tasks must be independent (no two write the same memory); they never submit tasks themselves, so a pool's worker
never waits for another. Small work (`MIN_BYTES`) runs inline: a hand-off to a thread costs tens of microseconds.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from autotune.core.timing import current_threads

MIN_BYTES = 2 << 20

_pools: dict[int, ThreadPoolExecutor] = {}  # per process id: a forked child never waits on its parent's threads
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def threads() -> int:
    """The threads to share copies among: BLAS's (read once, as BLAS reads its setting when it loads)."""
    return max(1, current_threads())


def _pool(workers: int) -> ThreadPoolExecutor:
    pid = os.getpid()
    with _lock:
        pool = _pools.get(pid)
        if pool is None or pool._max_workers < workers:  # noqa: SLF001 (grown when the thread count grows)
            if pool is not None:
                pool.shutdown(wait=False)  # its idle threads exit; work already handed to it still finishes
            pool = _pools[pid] = ThreadPoolExecutor(workers, thread_name_prefix="autotune-numpy")
        return pool


def run(tasks: Sequence[Callable[[], object]], nbytes: int) -> None:
    """Run `tasks` (independent) shared among the threads, the caller's thread taking one share; inline where
    `nbytes` (what they move) is small or one thread is all there is. Returns once every task has finished (also
    when one raised: then re-raises the first error)."""
    n = min(threads(), len(tasks))
    if n <= 1 or nbytes < MIN_BYTES:
        for task in tasks:
            task()
        return
    shares = [tasks[i::n] for i in range(n)]

    def share(part: Sequence[Callable[[], object]]) -> None:
        for task in part:
            task()
    futures: list[Future[None]] = [_pool(n - 1).submit(share, part) for part in shares[1:]]
    try:
        share(shares[0])
    finally:
        errors = [f.exception() for f in futures]  # waits for each: nothing writes after we return
    for error in errors:
        if error is not None:
            raise error


def _split_axis(shape: tuple[int, ...], parts: int) -> int | None:
    """The outermost axis with at least `parts` entries (the largest one if none has that many), or None."""
    for axis, length in enumerate(shape):
        if length >= parts:
            return axis
    best = max(range(len(shape)), key=lambda a: shape[a], default=None)
    return best if best is not None and shape[best] > 1 else None


def copy(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """dst[...] = src for each (dst, src) pair (no two dst overlapping), shared among the threads."""
    run([functools.partial(np.copyto, dst, src) for dst, src in pairs], sum(dst.nbytes for dst, _ in pairs))


def assign(dst: np.ndarray, src: np.ndarray | float) -> None:
    """dst[...] = src (src broadcast to dst's shape), split along one axis among the threads."""
    n = threads()
    axis = None if n <= 1 or dst.nbytes < MIN_BYTES else _split_axis(dst.shape, n)
    if axis is None:
        dst[...] = src
        return
    source = np.broadcast_to(src, dst.shape)
    bounds = [dst.shape[axis] * i // n for i in range(n + 1)]
    parts = [(slice(None),) * axis + (slice(a, b),) for a, b in zip(bounds, bounds[1:]) if b > a]
    copy([(dst[part], source[part]) for part in parts])


def contiguous(a: np.ndarray) -> np.ndarray:
    """np.ascontiguousarray(a), the copy shared among the threads."""
    if a.flags.c_contiguous:
        return a
    out = np.empty(a.shape, a.dtype)
    assign(out, a)
    return out
