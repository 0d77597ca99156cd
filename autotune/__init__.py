"""Tune and run transposed-convolution (ConvTranspose2d) kernels.

`import autotune` imports neither pyopencl, triton nor torch: backends load their libraries lazily.
"""

from autotune.api import conv_transpose2d, conv_transpose2d_backward
from autotune.problem import OPS, Problem

__all__ = ["OPS", "Problem", "conv_transpose2d", "conv_transpose2d_backward"]
__version__ = "0.1.0"
