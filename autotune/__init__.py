"""Tune and run transposed-convolution (ConvTranspose2d) kernels.

`import autotune` imports neither pyopencl, triton nor torch: backends load their libraries lazily. The PyTorch
module and autograd function are in `autotune.torch` (import it explicitly; it needs the torch extra).
"""

from autotune.api import conv_transpose2d, conv_transpose2d_backward
from autotune.bilinear import bilinear_kernel
from autotune.dispatch import which
from autotune.problem import OPS, Problem

__all__ = ["OPS", "Problem", "bilinear_kernel", "conv_transpose2d", "conv_transpose2d_backward", "which"]
__version__ = "0.1.0"
