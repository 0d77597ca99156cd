"""Tune and run transposed-convolution (ConvTranspose2d) kernels.

`import autotune` imports neither pyopencl, triton nor torch: backends load their libraries lazily, and the public
names below are imported on first use (so the core, `autotune.core`, can be imported by backends without pulling in
dispatch). The PyTorch module and autograd function are in `autotune.torch` (import it explicitly; it needs the
torch extra).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each call, holding the cores that the next library's
# thread pool needs: measured on a 2-core CPU, a NumPy GEMV followed by torch's bias reduction took 8.0 ms instead of
# 3.0, and a U-Net decoder training step with our layers 371 ms instead of 255. With 2^4 cycles they sleep at once
# (the GEMV itself no slower). OpenBLAS reads this when NumPy loads it, so it only takes effect when autotune is
# imported first (the command line always is); a value already set is kept. README: "Mixing with PyTorch".
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from autotune.core import __version__  # noqa: E402

if TYPE_CHECKING:
    from autotune.api import conv_transpose2d, conv_transpose2d_backward
    from autotune.bilinear import bilinear_kernel
    from autotune.core.allocator import keep_freed_memory
    from autotune.core.problem import OPS, Problem
    from autotune.dispatch import which

__all__ = ["OPS", "Problem", "__version__", "bilinear_kernel", "conv_transpose2d", "conv_transpose2d_backward",
           "keep_freed_memory", "which"]

# First-call tuning (autotune.first_call), like torch.backends.cudnn.benchmark: True times the candidates on the
# first call of each untuned shape; None leaves it to $AUTOTUNE_BENCHMARK (read once, at the first untuned call).
# `benchmark_budget_s` (seconds per new shape, default 2) likewise to $AUTOTUNE_BENCHMARK_BUDGET_S.
benchmark: bool | None = None
benchmark_budget_s: float | None = None

# public name -> the module that defines it
_LAZY = {"conv_transpose2d": "autotune.api", "conv_transpose2d_backward": "autotune.api",
         "bilinear_kernel": "autotune.bilinear", "which": "autotune.dispatch", "OPS": "autotune.core.problem",
         "Problem": "autotune.core.problem", "keep_freed_memory": "autotune.core.allocator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
