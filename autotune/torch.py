"""PyTorch integration (the `torch` extra): a drop-in `ConvTranspose2d` module and an autograd `conv_transpose2d`
whose forward and backward run this library's dispatched kernels.

    import autotune.torch as att
    layer = att.ConvTranspose2d(21, 21, 4, stride=2, padding=1, bias=False)   # same arguments as torch.nn's
    layer.load_state_dict(torch_layer.state_dict())                              # same parameters and state_dict
    y = layer(x)                                                                  # or layer(x, output_size=[...])

`import autotune` does not import this module (nor torch); import it explicitly. The imports below are absolute
(Python 3), so `import torch` here is the real PyTorch, not this file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from autotune import api

__all__ = ["ConvTranspose2d", "conv_transpose2d"]


class _ConvTranspose2dFunction(torch.autograd.Function):
    """y = conv_transpose2d(x, w, b); backward runs autotune.conv_transpose2d_backward (first order only)."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any,
                padding: Any, output_padding: Any, groups: int, dilation: Any, backend: str | None,
                config: dict | None) -> torch.Tensor:
        ctx.args = (stride, padding, output_padding, groups, dilation)
        ctx.backend, ctx.config, ctx.has_bias = backend, config, bias is not None
        ctx.save_for_backward(input, weight)
        return api.conv_transpose2d(input.detach(), weight.detach(), None if bias is None else bias.detach(),
                                    stride, padding, output_padding, groups, dilation, backend=backend,
                                    config=config)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        input, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x or need_w or (need_b and ctx.has_bias):
            gx, gw, gb = api.conv_transpose2d_backward(
                grad_output.contiguous(), input.detach(), weight.detach(), *ctx.args,
                output_mask=(bool(need_x), bool(need_w), bool(need_b and ctx.has_bias)), backend=ctx.backend,
                config=ctx.config)
        return gx, gw, gb, None, None, None, None, None, None, None


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                     backend: str | None = None, config: dict | None = None) -> torch.Tensor:
    """`torch.nn.functional.conv_transpose2d` with autograd, computed by this library (dispatched, or forced with
    `backend=` / `config=`); also takes asymmetric padding `((top, bottom), (left, right))`. A 3-D (unbatched)
    input is treated as a batch of one, as torch does."""
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if input.dim() == 3:
        return conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups, dilation,
                                backend=backend, config=config).squeeze(0)
    return _ConvTranspose2dFunction.apply(input, weight, bias, stride, padding, output_padding, groups, dilation,
                                          backend, config)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """A drop-in for `torch.nn.ConvTranspose2d`: the same constructor, parameters (`weight`, `bias`), state_dict,
    initialisation and `forward(input, output_size=None)` (torch's rule turning `output_size` into
    `output_padding`); the convolution and its gradients run through this library. Extra keywords: `backend`
    and `config` force a backend / config (default: dispatch). Only padding_mode='zeros' exists, as in torch."""

    def __init__(self, *args: Any, backend: str | None = None, config: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.config = config

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, list(self.stride), list(self.padding),
                                              list(self.kernel_size), 2, list(self.dilation))
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, tuple(output_padding),
                                self.groups, self.dilation, backend=self.backend, config=self.config)
