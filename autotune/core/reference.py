"""The reference: a small, obviously-correct transposed convolution in float64, checked against PyTorch.

Every backend, and every tuning trial, is checked against these four functions. They follow the scatter
definition literally: each kernel tap (kh, kw) adds `x @ w[:, :, kh, kw]` onto a strided window of an uncropped
"canvas" whose row `ih*s + kh*d` is output row `ih*s + kh*d - pad_top`; the output is the canvas cropped by the
padding. The three gradients are the adjoints of the same tap loop. Results are float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autotune.core.geometry import canvas_size, output_window, tap_window
from autotune.core.problem import Problem


def _grouped(p: Problem, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    G = p.groups
    xg = np.asarray(x, dtype=np.float64).reshape(p.N, G, p.C_in // G, p.H, p.W)
    wg = np.asarray(w, dtype=np.float64).reshape(G, p.C_in // G, p.C_out // G, p.kH, p.kW)
    return xg, wg


def _gy_canvas(p: Problem, gy: np.ndarray) -> np.ndarray:
    G = p.groups
    canvas = np.zeros((p.N, G, p.C_out // G, *canvas_size(p)))
    rows, cols = output_window(p)
    canvas[..., rows, cols] = np.asarray(gy, dtype=np.float64).reshape(p.N, G, p.C_out // G, *p.output_size)
    return canvas


def forward(p: Problem, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    xg, wg = _grouped(p, x, w)
    canvas = np.zeros((p.N, p.groups, p.C_out // p.groups, *canvas_size(p)))
    for kh in range(p.kH):
        for kw in range(p.kW):
            rows, cols = tap_window(p, kh, kw)
            canvas[..., rows, cols] += np.einsum("ngchw,gco->ngohw", xg, wg[..., kh, kw])
    rows, cols = output_window(p)
    y = canvas[..., rows, cols].reshape(p.output_shape)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return y


def backward_input(p: Problem, gy: np.ndarray, w: np.ndarray) -> np.ndarray:
    canvas = _gy_canvas(p, gy)
    _, wg = _grouped(p, np.zeros(p.input_shape), w)
    gx = np.zeros((p.N, p.groups, p.C_in // p.groups, p.H, p.W))
    for kh in range(p.kH):
        for kw in range(p.kW):
            rows, cols = tap_window(p, kh, kw)
            gx += np.einsum("ngohw,gco->ngchw", canvas[..., rows, cols], wg[..., kh, kw])
    return gx.reshape(p.input_shape)


def backward_weight(p: Problem, gy: np.ndarray, x: np.ndarray) -> np.ndarray:
    canvas = _gy_canvas(p, gy)
    xg, _ = _grouped(p, x, np.zeros(p.weight_shape))
    gw = np.zeros((p.groups, p.C_in // p.groups, p.C_out // p.groups, p.kH, p.kW))
    for kh in range(p.kH):
        for kw in range(p.kW):
            rows, cols = tap_window(p, kh, kw)
            gw[..., kh, kw] = np.einsum("ngchw,ngohw->gco", xg, canvas[..., rows, cols])
    return gw.reshape(p.weight_shape)


def backward_bias(p: Problem, gy: np.ndarray) -> np.ndarray:
    return np.asarray(gy, dtype=np.float64).sum(axis=(0, 2, 3))


def run(op: str, p: Problem, inputs: tuple[np.ndarray | None, ...]) -> np.ndarray:
    """The reference for `op`, with the inputs in the order of the prepared kernels' signatures."""
    ops: dict[str, Callable[..., np.ndarray]] = {"forward": forward, "backward_input": backward_input,
                                                 "backward_weight": backward_weight, "backward_bias": backward_bias}
    return ops[op](p, *inputs)
