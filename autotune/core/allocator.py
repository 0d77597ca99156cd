"""Keep freed memory in the process (glibc malloc), so that a layer's buffers are not page-faulted in on every call.

glibc serves each large block (above a threshold that starts at 128 KiB and moves with the process's history) with
its own mmap and unmaps it when freed, and trims the heap's free top back to the OS: the next call of the same op
maps fresh pages and the kernel zeroes and faults in every one of them. Measured on a 2-core AMD EPYC with torch
2.13's CPU kernels (each op timed on three fresh allocations of its inputs in one process): superres_x2 forward
40 ms per call by default, 19 ms with freed memory kept; unet_up_shallow forward 147 -> 74 ms, its input gradient
84 -> 35 ms; fcn_score_up8 weight gradient 66 -> 23 ms; depthwise_up input gradient 4.4..15.7 ms (by allocation)
-> 3.5..3.7 ms. Whether a process is in the slow state depends on what it freed before, which made PyTorch's times
bimodal between runs and within one. The cost: memory freed by the process stays reserved for its next
allocations instead of going back to the OS (the peak resident size stays).

`autotune tune` and `autotune bench` call `keep_freed_memory()` so that every backend, PyTorch's baseline included,
is timed in the same, repeatable state; a user's process gets the speeds they measured by calling it too (or by
exporting the environment variables it names before Python starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# the environment glibc reads at start-up (processes started from here: tuner workers)
ENVIRONMENT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl, macOS: another allocator)
        libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    return libc


@functools.lru_cache(maxsize=1)  # once per process: its first answer stands (the environment is ours after it)
def keep_freed_memory() -> str | None:
    """Make glibc's malloc serve large blocks from the heap and never trim it (M_MMAP_MAX = 0, M_TRIM_THRESHOLD =
    2^31-1), in this process and (through the environment) the processes it starts. Returns what was set, or None
    where the C library is not glibc or refused (nothing changed). Where either environment variable is already
    set, glibc has read it: nothing is changed, and the answer says so. Calling it again is harmless."""
    if any(name in os.environ for name in ENVIRONMENT):  # the user's own choice, read by glibc at start-up
        return "malloc left as the environment sets it (" + " ".join(
            f"{k}={os.environ[k]}" for k in ENVIRONMENT if k in os.environ) + ")"
    libc = _glibc()
    if libc is None:
        return None
    if libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return None
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    return "glibc malloc keeps freed memory (" + " ".join(f"{k}={v}" for k, v in ENVIRONMENT.items()) + ")"


# the `--system-malloc` flag of the verbs that time kernels (tune, bench)
SYSTEM_MALLOC_HELP = ("time with the C library's malloc as the process has it (default: freed memory kept, "
                      "autotune.keep_freed_memory(), so that times do not depend on what the process freed before)")


def timing_malloc(system: bool) -> str:
    """For a process about to time kernels: `keep_freed_memory()` unless `system` (the `--system-malloc` flags), and
    a line saying which malloc the times are taken with."""
    if system:
        return "malloc as the system has it (--system-malloc)"
    return keep_freed_memory() or "malloc as the system has it (not glibc)"
