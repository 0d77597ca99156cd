"""Working-memory estimates of a call, checked before anything is allocated (every backend, through `api`).

The estimate is deliberately generous: every operand and the result as float64 working copies, twice (a backend's
packed or phase-split copies, the float64 reference that half-precision dtypes fall back to: measured peaks reach
about 5.3 times the output's size in float16). Only calls above `CHECK_ABOVE` bytes are checked, so small calls
pay nothing.
"""

from __future__ import annotations

import functools
import math
import os

from autotune.core.errors import OutOfMemoryError
from autotune.core.problem import Problem

CHECK_ABOVE = 256 * 2**20
_WORKING_BYTES = 8 * 2  # float64 copies, twice


@functools.lru_cache(maxsize=4096)  # every call checks its estimate: a repeated problem is one lookup
def estimate(op: str, problem: Problem) -> int:
    """Bytes a call of `op` on `problem` may need at its peak (operands and result, as float64, twice)."""
    shapes = [s for s in problem.operand_shapes(op) if s is not None]
    result = {"forward": problem.output_shape, "backward_input": problem.input_shape,
              "backward_weight": problem.weight_shape, "backward_bias": problem.bias_shape}[op]
    return sum(math.prod(s) for s in (*shapes, result)) * _WORKING_BYTES


def available_cpu() -> int | None:
    """Bytes of memory available on this machine (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check(op: str, problem: Problem, available: int | None, where: str = "this machine") -> None:
    """Raise OutOfMemoryError (a UserError and a MemoryError) if `op` on `problem` is estimated to need more than
    `available` bytes; None (unknown) passes."""
    need = estimate(op, problem)
    if need <= CHECK_ABOVE or available is None or need <= available:
        return
    raise OutOfMemoryError(f"{op} on {problem.key} needs about {need / 2**30:.1f} GiB of working memory, "
                           f"{where} has {available / 2**30:.1f} GiB available; split the batch (N)")
