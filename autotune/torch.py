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
from autotune.core.problem import OPS

__all__ = ["ConvTranspose2d", "conv_transpose2d"]


def _op_config(config: dict | None, op: str) -> dict | None:
    """`config` is one config for every op, or a mapping op -> config (ops left out are dispatched or take the
    forced backend's default)."""
    if isinstance(config, dict) and config and set(config) <= set(OPS):
        return config.get(op)
    return config


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
                                    config=_op_config(config, "forward"))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        input, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        mask = (bool(need_x), bool(need_w), bool(need_b and ctx.has_bias))
        grads: list[Any] = [None, None, None]
        gy, x, w = grad_output.contiguous(), input.detach(), weight.detach()
        ops = ("backward_input", "backward_weight", "backward_bias")
        configs = [_op_config(ctx.config, op) for op in ops]
        if configs[0] == configs[1] == configs[2]:  # one call for all three
            batches = [[0, 1, 2]]
        else:
            batches = [[0], [1], [2]]
        for idx in batches:
            sub = (0 in idx and mask[0], 1 in idx and mask[1], 2 in idx and mask[2])
            if any(sub):
                out = api.conv_transpose2d_backward(gy, x, w, *ctx.args, output_mask=sub, backend=ctx.backend,
                                                    config=configs[idx[0]])
                for i in idx:
                    if sub[i]:
                        grads[i] = out[i]
        return (*grads, None, None, None, None, None, None, None)


def conv_transpose2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                     backend: str | None = None, config: dict | None = None) -> torch.Tensor:
    """`torch.nn.functional.conv_transpose2d` with autograd, computed by this library: dispatched, or forced with
    `backend=` / `config=` (`config` is one config for every op, or a mapping op -> config). Also takes asymmetric
    padding `((top, bottom), (left, right))`. A 3-D (unbatched) input is treated as a batch of one, as torch
    does."""
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
        output_padding = self._output_padding(input, output_size, list(self.stride), list(self.padding),  # type: ignore[arg-type]
                                              list(self.kernel_size), 2, list(self.dilation))
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, tuple(output_padding),
                                self.groups, self.dilation, backend=self.backend, config=self.config)
