"""The fixed bilinear-upsampling weight of fully convolutional networks (FCN, Long et al. 2015), for initialising a
transposed convolution that upsamples by an integer factor."""

from __future__ import annotations

import numpy as np

from autotune.core.problem import DTYPES


def bilinear_kernel(factor: int, channels: int, *, depthwise: bool = False, dtype: str = "float32") -> np.ndarray:
    """The bilinear upsampling weight for `ConvTranspose2d(channels, channels, k, stride=factor,
    padding=factor // 2)` with `k = 2*factor - factor % 2`: that layer maps (H, W) to (factor*H, factor*W).

    Returns FCN's `get_upsampling_weight(channels, channels, k)`: shape (channels, channels, k, k), the 2-D
    bilinear filter on the diagonal (channel c upsamples into channel c) and zeros elsewhere, for a layer with
    groups=1 as FCN defines it. With `depthwise=True`, shape (channels, 1, k, k), for the same layer with
    groups=channels, which computes the same result without the zero multiplies.

    The 1-D filter is `1 - |i - center| / f` for i in 0..k-1, with `f = (k + 1) // 2` and `center = f - 1` for odd
    k, `f - 0.5` for even k; e.g. factor 2 gives [0.25, 0.75, 0.75, 0.25].
    """
    for name, v in (("factor", factor), ("channels", channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if dtype not in DTYPES or dtype == "bfloat16":
        raise ValueError(f"dtype must be float32, float64 or float16, got {dtype!r}")
    factor, channels = int(factor), int(channels)
    k = 2 * factor - factor % 2
    f = (k + 1) // 2
    center = f - 1 if k % 2 == 1 else f - 0.5
    taps = 1 - np.abs(np.arange(k) - center) / f
    filt = np.outer(taps, taps)
    if depthwise:
        return np.broadcast_to(filt, (channels, 1, k, k)).astype(dtype)
    weight = np.zeros((channels, channels, k, k), dtype=np.float64)
    weight[np.arange(channels), np.arange(channels)] = filt
    return weight.astype(dtype)
