"""PyTorch integration (the `torch` extra): registered custom ops, a drop-in `ConvTranspose2d` module, an autograd
`conv_transpose2d`, and model-level calls (`convert`, `layer_problems`, `model_problems`).

    import autotune.torch as att
    layer = att.ConvTranspose2d(21, 21, 4, stride=2, padding=1, bias=False)   # same arguments as torch.nn's
    layer.load_state_dict(torch_layer.state_dict())                              # same parameters and state_dict
    y = layer(x)                                                                  # or layer(x, output_size=[...])
    model = att.convert(model)                     # every nn.ConvTranspose2d of a model runs this library
    problems = att.layer_problems(model, x)        # the problems its transposed convolutions see

The four ops are registered with `torch.library.custom_op` in the namespace `autotune` (`torch.ops.autotune.
conv_transpose2d`, `..._backward_input`, `..._backward_weight`, `..._backward_bias`), each with a fake (meta)
implementation and an autograd formula written with the others, so `torch.compile(fullgraph=True)`, `torch.export`
and TorchScript see one opaque op per layer, and double backward runs through the same ops.

`import autotune` does not import this module (nor torch); import it explicitly. The imports below are absolute
(Python 3), so `import torch` here is the real PyTorch, not this file.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, List, Optional, cast  # noqa: UP035 - TorchScript reads List/Optional (forward)

import numpy as np
import torch

from autotune import api
from autotune.core.errors import UserError
from autotune.core.problem import OPS, Problem
from autotune.problems import NamedProblem

__all__ = ["ConvTranspose2d", "conv_transpose2d", "convert", "layer_problems", "load_factory", "model_problems",
           "problems_csv"]

_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
           torch.bfloat16: "bfloat16"}
_NUMPY_DTYPES = (torch.float32, torch.float64)  # what CPU kernels take as NumPy views of the tensors' memory


# ---- arguments ----------------------------------------------------------------------------------------------------
def _pair(name: str, v: Any) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return [v, v]
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(e, int) and not isinstance(e, bool)
                                                             for e in v):
        return [v[0], v[1]]
    raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")


def _padding4(v: Any) -> list[int]:
    """padding as [top, bottom, left, right]: from an int, (ph, pw) or ((top, bottom), (left, right))."""
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(e, (tuple, list)) for e in v):
        (t, b), (left, r) = (_pair("padding", e) for e in v)
        return [t, b, left, r]
    try:
        ph, pw = _pair("padding", v)
    except ValueError:
        raise ValueError(f"padding must be an int, a pair (ph, pw), or ((top, bottom), (left, right)) of ints, "
                         f"got {v!r}") from None
    return [ph, ph, pw, pw]


def _config_text(config: dict | None) -> str | None:
    """The ops take `config` as JSON text (a custom op's schema has no dicts)."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (one config, or op -> config), got {type(config).__name__}")
    return json.dumps(config, sort_keys=True)


_configs: dict[str, Any] = {}


def _op_config(text: str | None, op: str) -> dict | None:
    """`config` is one config for every op, or a mapping op -> config (ops left out are dispatched or take the
    forced backend's default)."""
    if text is None:
        return None
    config = _configs.get(text)
    if config is None:
        config = _configs[text] = json.loads(text)
    if isinstance(config, dict) and config and set(config) <= set(OPS):
        return config.get(op)
    return config


# ---- problems, checked once per call signature --------------------------------------------------------------------
# (op, operand shapes and dtypes, arguments) -> Problem: a repeated call skips every check and Problem.make.
_problems: dict[tuple, Problem] = {}
_PROBLEMS_MAX = 4096


def _dtype_name(name: str, t: torch.Tensor, dtype: torch.dtype) -> str:
    if t.dtype != dtype:
        raise TypeError(f"{name} dtype {t.dtype} differs from {dtype}")
    found = _DTYPES.get(dtype)
    if found is None:
        raise TypeError(f"conv_transpose2d takes floating-point tensors (float32, float64, float16, bfloat16), "
                        f"got {dtype}")
    return found


def _dims(name: str, t: torch.Tensor, ndim: int) -> torch.Size:
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t.shape


def _make_problem(op: str, a: torch.Tensor, b: torch.Tensor, c: Any, stride: list[int], padding: list[int],
                  output_padding: list[int], groups: int, dilation: list[int]) -> Problem:
    """The checked Problem of a call of `op` (operands a, b; c is the bias or a size list, as the ops take them)."""
    dtype = a.dtype
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    t, bt, left, r = padding
    common: dict[str, Any] = dict(stride=tuple(stride), padding=((t, bt), (left, r)),
                                  output_padding=tuple(output_padding), dilation=tuple(dilation), groups=groups)
    if op == "forward":
        name = _dtype_name("input", a, dtype)
        _dtype_name("weight", b, dtype)
        (N, C_in, H, W), (wc, cog, kH, kW) = _dims("input", a, 4), _dims("weight", b, 4)
        N = max(N, 1)  # an empty batch is checked as a batch of one (_run answers it without a kernel)
        if wc != C_in:
            raise ValueError(f"weight.shape[0]={wc} must equal the input channels input.shape[1]={C_in} "
                             f"(weight is (C_in, C_out/groups, kH, kW))")
        if c is not None:
            _dtype_name("bias", c, dtype)
            if _dims("bias", c, 1)[0] != cog * groups:
                raise ValueError(f"bias must have C_out={cog * groups} elements (weight.shape[1]*groups), "
                                 f"got {c.shape[0]}")
        return Problem.make(N, C_in, H, W, cog * groups, kH, kW, bias=c is not None, dtype=name, **common)
    name = _dtype_name("grad_output", a, dtype)
    gN, gC, _, _ = _dims("grad_output", a, 4)
    gN = max(gN, 1)  # an empty batch is checked as a batch of one
    if op == "backward_weight":  # b is the input, c the kernel size
        _dtype_name("input", b, dtype)
        N, C_in, H, W = _dims("input", b, 4)
        problem = Problem.make(max(N, 1), C_in, H, W, gC, c[0], c[1], dtype=name, **common)
    else:  # b is the weight, c the input size
        _dtype_name("weight", b, dtype)
        C_in, cog, kH, kW = _dims("weight", b, 4)
        problem = Problem.make(gN, C_in, c[0], c[1], cog * groups, kH, kW, dtype=name, **common)
    if (max(a.shape[0], 1), *a.shape[1:]) != problem.output_shape:
        raise ValueError(f"grad_output must have the output's shape {problem.output_shape}, got {tuple(a.shape)}")
    return problem


def _problem(op: str, key: tuple, a: torch.Tensor, b: torch.Tensor, c: Any, stride: list[int],
             padding: list[int], output_padding: list[int], groups: int, dilation: list[int]) -> Problem:
    """The Problem of a call; `key` holds the operands' shapes and dtypes (of the tensors or of their NumPy
    views): a repeated call is one dict lookup."""
    key = (op, *key, *stride, *padding, *output_padding, groups, *dilation)
    found = _problems.get(key)
    if found is None:
        found = _make_problem(op, a, b, c, stride, padding, output_padding, groups, dilation)
        if len(_problems) >= _PROBLEMS_MAX:
            _problems.clear()
        _problems[key] = found
    return found


def _channels_last(*tensors: torch.Tensor) -> bool:
    """torch's rule for a convolution's output: channels_last if an operand is (and is not also NCHW-contiguous,
    as tensors with a 1x1 image or one channel are both)."""
    return any(not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last) for t in tensors)


def _view(t: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A C-contiguous NumPy array on a CPU tensor's memory (a copy only when the tensor is not contiguous), and
    whether the tensor was channels_last. As few torch calls as possible: on a busy machine each costs a few
    microseconds, NumPy attributes almost nothing."""
    v = (t.detach() if t.requires_grad else t).numpy()
    if v.flags.c_contiguous:
        return v, False
    last = False
    if v.ndim == 4:
        _, c, _, w = v.shape
        s = v.itemsize
        last = v.strides[1] == s and v.strides[3] == c * s and v.strides[2] == w * c * s
    return np.ascontiguousarray(v), last


def _run(op: str, a: torch.Tensor, b: torch.Tensor, c: Any, stride: list[int], padding: list[int],
         output_padding: list[int], groups: int, dilation: list[int], backend: str | None,
         config: str | None) -> torch.Tensor:
    """Run op `op` on tensors (a, b: its operands; c: the forward's bias, else a size list). CPU float32/float64:
    the kernels see NumPy arrays on the tensors' memory (no copy unless a tensor is not contiguous) and the result
    is wrapped back without a copy; anything else (CUDA, half precision) goes to the library as tensors. The result
    is channels_last when an operand of the forward or the input gradient is (torch's rule); the weight and bias
    gradients are contiguous."""
    if a.shape[0] == 0:  # an empty batch, as torch: empty outputs, zero weight and bias gradients
        p = _make_problem(op, a, b, c, stride, padding, output_padding, groups, dilation)
        empty = {"forward": (0, *p.output_shape[1:]), "backward_input": (0, *p.input_shape[1:]),
                 "backward_weight": p.weight_shape, "backward_bias": (p.C_out,)}[op]
        return a.new_zeros(empty)
    op_config = None if config is None else _op_config(config, op)
    forward = op == "forward"
    bias = c if forward else None
    sizes = None if forward else tuple(c)
    if a.is_cpu and a.dtype in _NUMPY_DTYPES:
        try:
            va, last_a = _view(a)
            vb, last_b = _view(b)
            vc = None if bias is None else _view(bias)[0]
        except (TypeError, RuntimeError):  # e.g. a bfloat16 or CUDA weight: the checked path says what is wrong
            va = None
        if va is not None:
            key: tuple = (va.shape, vb.shape, sizes if vc is None else vc.shape, va.dtype, vb.dtype,
                          None if vc is None else vc.dtype)
            problem = _problem(op, key, a, b, c, stride, padding, output_padding, groups, dilation)
            arrays = (va, vb, vc) if forward else (va,) if op == "backward_bias" else (va, vb)
            out = api.run_problem(op, problem, arrays, va, backend=backend, config=op_config)
            out = torch.from_numpy(out) if isinstance(out, np.ndarray) else out
            if (last_a or last_b) and (forward or op == "backward_input"):
                out = out.contiguous(memory_format=torch.channels_last)
            return out
    key = (a.shape, b.shape, sizes if bias is None else bias.shape, a.dtype, b.dtype,
           None if bias is None else bias.dtype)
    problem = _problem(op, key, a, b, c, stride, padding, output_padding, groups, dilation)
    operands = (a, b, bias) if forward else (a,) if op == "backward_bias" else (a, b)
    out = api.run_problem(op, problem, tuple(None if t is None else t.detach().contiguous() for t in operands), a,
                          backend=backend, config=op_config)
    if (forward or op == "backward_input") and _channels_last(a, b):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _out_size(n: Any, s: int, p0: int, p1: int, d: int, k: Any, op: int) -> Any:
    return (n - 1) * s - (p0 + p1) + d * (k - 1) + 1 + op


def _empty(shape: list, like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return like.new_empty(shape).contiguous(memory_format=torch.channels_last if channels_last else
                                            torch.contiguous_format)


# ---- the ops ------------------------------------------------------------------------------------------------------
def _forward(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: List[int],  # noqa: UP006,UP045
             padding: List[int], output_padding: List[int], groups: int, dilation: List[int],  # noqa: UP006
             backend: Optional[str], config: Optional[str]) -> torch.Tensor:  # noqa: UP045
    """y = conv_transpose2d(input, weight, bias): padding is [top, bottom, left, right]; config is JSON or None."""
    return _run("forward", input, weight, bias, stride, padding, output_padding, groups, dilation, backend, config)


def _forward_fake(input, weight, bias, stride, padding, output_padding, groups, dilation, backend, config):
    torch._check(input.dim() == 4 and weight.dim() == 4, lambda: "input and weight must have 4 dimensions")
    torch._check(weight.shape[0] == input.shape[1],
                 lambda: f"weight.shape[0]={weight.shape[0]} must equal the input channels {input.shape[1]}")
    shape = [input.shape[0], weight.shape[1] * groups,
             _out_size(input.shape[2], stride[0], padding[0], padding[1], dilation[0], weight.shape[2],
                       output_padding[0]),
             _out_size(input.shape[3], stride[1], padding[2], padding[3], dilation[1], weight.shape[3],
                       output_padding[1])]
    return _empty(shape, input, _channels_last(input, weight))


def _backward_input(grad_output: torch.Tensor, weight: torch.Tensor, input_size: List[int],  # noqa: UP006
                    stride: List[int], padding: List[int], output_padding: List[int], groups: int,  # noqa: UP006
                    dilation: List[int], backend: Optional[str], config: Optional[str]) -> torch.Tensor:  # noqa: UP006,UP045
    """grad_input (N, C_in, *input_size) of conv_transpose2d for grad_output."""
    return _run("backward_input", grad_output, weight, input_size, stride, padding, output_padding, groups,
                dilation, backend, config)


def _backward_input_fake(grad_output, weight, input_size, stride, padding, output_padding, groups, dilation,
                         backend, config):
    return _empty([grad_output.shape[0], weight.shape[0], input_size[0], input_size[1]], grad_output,
                  _channels_last(grad_output, weight))


def _backward_weight(grad_output: torch.Tensor, input: torch.Tensor, kernel_size: List[int],  # noqa: UP006
                     stride: List[int], padding: List[int], output_padding: List[int], groups: int,  # noqa: UP006
                     dilation: List[int], backend: Optional[str], config: Optional[str]) -> torch.Tensor:  # noqa: UP006,UP045
    """grad_weight (C_in, C_out/groups, *kernel_size) of conv_transpose2d for grad_output."""
    return _run("backward_weight", grad_output, input, kernel_size, stride, padding, output_padding, groups,
                dilation, backend, config)


def _backward_weight_fake(grad_output, input, kernel_size, stride, padding, output_padding, groups, dilation,
                          backend, config):
    return grad_output.new_empty([input.shape[1], grad_output.shape[1] // groups, kernel_size[0], kernel_size[1]])


def _backward_bias(grad_output: torch.Tensor, weight: torch.Tensor, input_size: List[int],  # noqa: UP006
                   stride: List[int], padding: List[int], output_padding: List[int], groups: int,  # noqa: UP006
                   dilation: List[int], backend: Optional[str], config: Optional[str]) -> torch.Tensor:  # noqa: UP006,UP045
    """grad_bias (C_out,) = grad_output.sum((0, 2, 3)); the weight and input size only name the problem (the
    dispatch key of the tuned bias-gradient kernel)."""
    return _run("backward_bias", grad_output, weight, input_size, stride, padding, output_padding, groups,
                dilation, backend, config)


def _backward_bias_fake(grad_output, weight, input_size, stride, padding, output_padding, groups, dilation,
                        backend, config):
    return grad_output.new_empty([grad_output.shape[1]])


# ---- autograd: every gradient is one of the four ops, so double backward runs through them too -------------------
def _forward_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    input, weight, bias, *args = inputs
    ctx.args = args
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight)


def _forward_backward(ctx: Any, gy: torch.Tensor) -> tuple:
    x, w = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    gx = _BWD_INPUT(gy, w, list(x.shape[2:]), *ctx.args) if need_x else None
    gw = _BWD_WEIGHT(gy, x, list(w.shape[2:]), *ctx.args) if need_w else None
    gb = _BWD_BIAS(gy, w, list(x.shape[2:]), *ctx.args) if need_b and ctx.has_bias else None
    return (gx, gw, gb) + (None,) * 7


def _backward_input_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    gy, w, input_size, *args = inputs
    ctx.args, ctx.input_size = args, input_size
    ctx.save_for_backward(gy, w)


def _backward_input_backward(ctx: Any, ggx: torch.Tensor) -> tuple:
    # gx = conv2d(gy, w): linear in gy (adjoint: the forward op) and in w (adjoint: the weight gradient)
    gy, w = ctx.saved_tensors
    need_gy, need_w = ctx.needs_input_grad[:2]
    g_gy = _FWD(ggx, w, None, *ctx.args) if need_gy else None
    g_w = _BWD_WEIGHT(gy, ggx, list(w.shape[2:]), *ctx.args) if need_w else None
    return (g_gy, g_w) + (None,) * 8


def _backward_weight_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    gy, x, _, *args = inputs
    ctx.args = args
    ctx.save_for_backward(gy, x)


def _backward_weight_backward(ctx: Any, ggw: torch.Tensor) -> tuple:
    # gw = corr(x, gy): adjoint in gy is the forward op with weight ggw, in x the input gradient with weight ggw
    gy, x = ctx.saved_tensors
    need_gy, need_x = ctx.needs_input_grad[:2]
    g_gy = _FWD(x, ggw, None, *ctx.args) if need_gy else None
    g_x = _BWD_INPUT(gy, ggw, list(x.shape[2:]), *ctx.args) if need_x else None
    return (g_gy, g_x) + (None,) * 8


def _backward_bias_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    ctx.gy_shape = inputs[0].shape


def _backward_bias_backward(ctx: Any, ggb: torch.Tensor) -> tuple:
    g_gy = ggb.reshape(1, -1, 1, 1).expand(ctx.gy_shape) if ctx.needs_input_grad[0] else None
    return (g_gy,) + (None,) * 9


def _eager(impl: Any, setup: Any, backward: Any) -> Any:
    """`impl` with `backward` as an autograd.Function: what eager calls run (see `_call`). The forward takes `ctx`
    itself: a separate `setup_context` makes `Function.apply` bind the arguments with `inspect.signature` on every
    call (tens of microseconds)."""
    def forward(ctx: Any, *args: Any) -> torch.Tensor:
        out = impl(*args)
        setup(ctx, args, out)
        return out
    function = cast("type[torch.autograd.Function]", type(f"Eager{impl.__name__}", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)}))
    return function.apply


def _register(name: str, impl: Any, fake: Any, setup: Any, backward: Any) -> tuple[Any, Any, Any]:
    op = torch.library.custom_op(f"autotune::{name}", mutates_args=())(impl)
    op.register_fake(fake)
    op.register_autograd(backward, setup_context=setup)
    return getattr(torch.ops.autotune, name).default, _eager(impl, setup, backward), impl


# op -> (the registered overload, its eager autograd.Function, the plain implementation)
_OPS = {
    "forward": _register("conv_transpose2d", _forward, _forward_fake, _forward_setup, _forward_backward),
    "backward_input": _register("conv_transpose2d_backward_input", _backward_input, _backward_input_fake,
                                _backward_input_setup, _backward_input_backward),
    "backward_weight": _register("conv_transpose2d_backward_weight", _backward_weight, _backward_weight_fake,
                                 _backward_weight_setup, _backward_weight_backward),
    "backward_bias": _register("conv_transpose2d_backward_bias", _backward_bias, _backward_bias_fake,
                               _backward_bias_setup, _backward_bias_backward),
}
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _call(op: str, a: torch.Tensor, b: torch.Tensor, c: Any, *args: Any) -> torch.Tensor:
    """Call op `op` on its arguments (a, b: its two tensors; c: the forward's bias, else a size list).

    Through the dispatcher a Python custom op costs about 70 us more per call here (autograd wrapper, redispatch,
    dynamo-disable wrapper), so a plain eager call runs the same implementation and autograd formula directly:
    as an autograd.Function when a gradient is wanted, else the bare implementation. Anything that traces or
    transforms tensors (torch.compile, export's fake tensors, jit.trace, vmap/grad, dispatch or function modes,
    tensor subclasses) gets the registered op."""
    overload, eager, _ = _OPS[op]
    bias = c if isinstance(c, torch.Tensor) else None
    if (type(a) not in _PLAIN or type(b) not in _PLAIN or (bias is not None and type(bias) not in _PLAIN)
            or torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
            or torch._C._is_torch_function_mode_enabled() or torch._C._are_functorch_transforms_active()
            or torch._C._get_tracing_state() is not None):
        return overload(a, b, c, *args)
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or (bias is not None and bias.requires_grad)):
        return eager(a, b, c, *args)
    return _run(op, a, b, c, *args)  # what the op's implementation runs


def _FWD(*args: Any) -> torch.Tensor:  # the ops, as the autograd formulas above call them
    return _call("forward", *args)


def _BWD_INPUT(*args: Any) -> torch.Tensor:
    return _call("backward_input", *args)


def _BWD_WEIGHT(*args: Any) -> torch.Tensor:
    return _call("backward_weight", *args)


def _BWD_BIAS(*args: Any) -> torch.Tensor:
    return _call("backward_bias", *args)


# ---- the functional and the module --------------------------------------------------------------------------------
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
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a backend name or None, got {type(backend).__name__}")
    args = (_pair("stride", stride), _padding4(padding), _pair("output_padding", output_padding), groups,
            _pair("dilation", dilation), backend, _config_text(config))
    if input.dim() == 3:
        return _FWD(input.unsqueeze(0), weight, bias, *args).squeeze(0)
    return _FWD(input, weight, bias, *args)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """A drop-in for `torch.nn.ConvTranspose2d`: the same constructor, parameters (`weight`, `bias`), state_dict,
    initialisation and `forward(input, output_size=None)` (torch's rule turning `output_size` into
    `output_padding`); the convolution and its gradients run through this library's ops. Extra keywords: `backend`
    and `config` force a backend / config (default: dispatch). Only padding_mode='zeros' exists, as in torch.
    Works under `torch.compile(fullgraph=True)`, `torch.export` and `torch.jit.script`."""

    __jit_unused_properties__: ClassVar[list[str]] = ["config"]  # TorchScript: a dict, not used by forward

    def __init__(self, *args: Any, backend: str | None = None, config: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.config = config

    @property
    def config(self) -> dict | None:
        return self._config

    @config.setter
    def config(self, value: dict | None) -> None:
        self._config_text = _config_text(value)
        self._config = value

    def forward(self, input: torch.Tensor, output_size: Optional[List[int]] = None) -> torch.Tensor:  # noqa: UP006,UP045
        if not torch.jit.is_scripting():
            return self._eager_forward(input, output_size)
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        # torch types padding str | tuple (Conv2d's 'same'/'valid'); a ConvTranspose2d's is a pair of ints. No cast
        # here: TorchScript compiles this body (and takes an ignore comment only at the end of its line)
        output_padding = self._output_padding(input, output_size, list(self.stride),
                                              list(self.padding),  # type: ignore[arg-type]
                                              list(self.kernel_size), 2, list(self.dilation))
        ph, pw = self.padding[0], self.padding[1]
        batched = input.dim() == 4
        x = input if batched else input.unsqueeze(0)
        y = torch.ops.autotune.conv_transpose2d(x, self.weight, self.bias, [self.stride[0], self.stride[1]],
                                                [ph, ph, pw, pw], output_padding, self.groups,
                                                [self.dilation[0], self.dilation[1]], self.backend,
                                                self._config_text)
        return y if batched else y.squeeze(0)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor, output_size: Optional[List[int]]) -> torch.Tensor:  # noqa: UP006,UP045
        """The forward outside TorchScript (eager, torch.compile, export): the op, or its eager shortcut."""
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        # torch types padding str | tuple (Conv2d's 'same'/'valid'); a ConvTranspose2d's is a pair of ints
        ph, pw = cast("tuple[int, int]", self.padding)
        output_padding: tuple[int, ...] | list[int]
        if output_size is None:
            output_padding = self.output_padding
        else:
            output_padding = self._output_padding(input, output_size, list(self.stride), [ph, pw],
                                                  list(self.kernel_size), 2, list(self.dilation))
        if input.dim() == 3:
            return _call("forward", input.unsqueeze(0), self.weight, self.bias, self.stride, (ph, ph, pw, pw),
                         output_padding, self.groups, self.dilation, self.backend, self._config_text).squeeze(0)
        return _call("forward", input, self.weight, self.bias, self.stride, (ph, ph, pw, pw), output_padding,
                     self.groups, self.dilation, self.backend, self._config_text)


# ---- model-level calls --------------------------------------------------------------------------------------------
_converted: dict[type, type[ConvTranspose2d]] = {}


def _library_class(cls: type[torch.nn.ConvTranspose2d]) -> type[ConvTranspose2d] | None:
    """The library class an `nn.ConvTranspose2d` of class `cls` becomes, or None to leave it (already ours, or a
    subclass with its own forward, whose semantics this library cannot know)."""
    if issubclass(cls, ConvTranspose2d):
        return None
    if cls is torch.nn.ConvTranspose2d:
        return ConvTranspose2d
    if cls.forward is not torch.nn.ConvTranspose2d.forward:
        return None
    found = _converted.get(cls)
    if found is None:  # a subclass with torch's forward: keep its other methods and attributes, take our forward
        found = _converted[cls] = cast("type[ConvTranspose2d]",
                                       type(cls.__name__, (ConvTranspose2d, cls), {"__module__": cls.__module__}))
    return found


def convert(model: torch.nn.Module, *, backend: str | None = None, config: dict | None = None) -> torch.nn.Module:
    """Make every `torch.nn.ConvTranspose2d` of `model` (and subclasses that keep torch's forward) run this library;
    returns `model`. In place: each layer object stays the same object (its class becomes `ConvTranspose2d`, or a
    subclass of both for a subclass), so its parameters (the same Parameter objects: an optimizer built before
    keeps working), buffers, hooks, dtype, device and state_dict are unchanged. `backend` / `config` are set on
    every converted layer (default: dispatch). Layers with padding_mode other than 'zeros' are left to torch."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert takes a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if not isinstance(module, torch.nn.ConvTranspose2d) or module.padding_mode != "zeros":
            continue
        cls = _library_class(type(module))
        if cls is None:
            continue
        module.__class__ = cls
        layer = cast(ConvTranspose2d, module)  # now of class `cls`, a ConvTranspose2d
        layer.backend = backend
        layer.config = config
    return model


def _layer_name(name: str) -> str:
    """A module path as a problem name (letters, digits, '_', '-', '.')."""
    out = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)[:100]
    return out or "model"


def layer_problems(model: torch.nn.Module, *example_inputs: Any, **example_kwargs: Any) -> list[NamedProblem]:
    """The problems the transposed convolutions of `model` see when it runs on `example_inputs`: one
    `NamedProblem` per call of each `nn.ConvTranspose2d` (ours included), named by its module path (a layer called
    again gets `.2`, `.3`...), in call order. The model runs once under `torch.no_grad()` in eval mode (so batch
    norm statistics are not updated; training flags are restored). `problems_csv(...)` writes them as a problems
    CSV for `autotune tune --problems`."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"layer_problems takes a torch.nn.Module, got {type(model).__name__}")
    found: list[NamedProblem] = []
    calls: dict[str, int] = {}
    names = {module: name for name, module in model.named_modules()}

    def hook(module: torch.nn.ConvTranspose2d, args: tuple, output: torch.Tensor) -> None:
        x = args[0]
        if x.dim() == 3:
            x = x.unsqueeze(0)
        N, C_in, H, W = x.shape
        kH, kW = module.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = module.stride, cast("tuple[int, int]", module.padding), module.dilation
        # output_padding as the call used it (output_size= may have chosen it): from the output's size
        oph = output.shape[-2] - ((H - 1) * sh - 2 * ph + dh * (kH - 1) + 1)
        opw = output.shape[-1] - ((W - 1) * sw - 2 * pw + dw * (kW - 1) + 1)
        problem = Problem.make(N, C_in, H, W, module.out_channels, kH, kW, (sh, sw), (ph, pw), (oph, opw),
                               (dh, dw), module.groups, module.bias is not None, _DTYPES.get(x.dtype, str(x.dtype)))
        base = _layer_name(names.get(module, ""))
        calls[base] = calls.get(base, 0) + 1
        found.append(NamedProblem(base if calls[base] == 1 else f"{base}.{calls[base]}", problem))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs, **example_kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return found


def _pair_text(v: tuple[int, int]) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}:{v[1]}"


def problems_csv(problems: list[NamedProblem], path: Any = None) -> str:
    """`problems` as a problems CSV (the format `autotune tune --problems` and `load_problems` read); written to
    `path` too when given."""
    import csv
    import io

    from autotune.problems import REQUIRED
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*REQUIRED, "dtype"])
    for named in problems:
        p = named.problem
        (t, b), (left, r) = p.padding
        padding = _pair_text((t, left)) if (t, left) == (b, r) else f"{t}:{b}:{left}:{r}"
        writer.writerow([named.name, p.N, p.C_in, p.H, p.W, p.C_out, p.kH, p.kW, _pair_text(p.stride), padding,
                         _pair_text(p.output_padding), _pair_text(p.dilation), p.groups, int(p.bias), p.dtype])
    text = buf.getvalue()
    if path is not None:
        from pathlib import Path
        Path(path).write_text(text, encoding="utf-8")
    return text


def load_factory(spec: str) -> Any:
    """The callable named by `spec`: `pkg.module:factory` (imported like `python -m` would, the current directory
    first) or `path/to/file.py:factory`. Errors are one-line ValueErrors."""
    import importlib
    import importlib.util
    import os
    import sys
    from pathlib import Path

    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise UserError(f"--model {spec!r}: expected pkg.module:factory or path/to/file.py:factory")
    module_name, attr = spec.split(":")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"--model {spec!r}: no file {module_name}")
            unique = f"_autotune_model_{abs(hash(str(path.resolve())))}"
            loaded = importlib.util.spec_from_file_location(unique, path)
            assert loaded is not None and loaded.loader is not None
            module = importlib.util.module_from_spec(loaded)
            sys.modules[unique] = module
            loaded.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - ImportError, SyntaxError, anything the user's module raises
        raise UserError(f"--model {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise UserError(f"--model {spec!r}: {module_name} has no callable {attr!r}")
    return factory


def _shape(text: Any) -> tuple[int, ...]:
    if isinstance(text, (tuple, list)):
        dims = list(text)
    else:
        try:
            dims = [int(v) for v in str(text).replace("x", ",").split(",")]
        except ValueError:
            dims = []
    if not dims or len(dims) > 8 or not all(isinstance(d, int) and d > 0 for d in dims):
        raise UserError(f"--input-shape {text!r}: expected positive integers separated by commas, e.g. 64,100,1,1")
    return tuple(dims)


def model_problems(spec: str, input_shapes: list[Any] | None = None, *, dtype: str = "float32",
                   unique: bool = True) -> list[NamedProblem]:
    """The transposed-convolution problems of the model that `spec` (`pkg.module:factory` or `file.py:factory`)
    builds, run on random inputs of `input_shapes` (one per model input, `"N,C,H,W"` strings or tuples; default:
    the factory's `example_input_shapes` attribute). `unique`: each distinct problem once, under the name of its
    first layer, named `<factory>.<module path>`. What `autotune tune --model` and `autotune bench --model` run."""
    factory = load_factory(spec)
    if not input_shapes:
        input_shapes = getattr(factory, "example_input_shapes", None)
        if not input_shapes:
            raise UserError(f"--model {spec!r}: give --input-shape N,C,H,W (the factory has no "
                             f"example_input_shapes)")
    shapes = [_shape(s) for s in input_shapes]
    if dtype not in ("float32", "float64"):
        raise UserError(f"dtype must be float32 or float64, got {dtype!r}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory: any error becomes one line
        raise UserError(f"--model {spec!r}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"--model {spec!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    model = model.to(getattr(torch, dtype))
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, generator=gen, dtype=getattr(torch, dtype)) for s in shapes]
    try:
        found = layer_problems(model, *inputs)
    except Exception as exc:  # noqa: BLE001 - the user's model: any error becomes one line
        raise UserError(f"--model {spec!r} on input shape(s) {', '.join(','.join(map(str, s)) for s in shapes)}: "
                         f"{type(exc).__name__}: {exc}") from None
    if not found:
        raise UserError(f"--model {spec!r}: the model has no nn.ConvTranspose2d layer that ran")
    prefix = spec.rsplit(":", 1)[1]
    found = [NamedProblem(_layer_name(f"{prefix}.{n.name}"), n.problem) for n in found]
    if unique:
        first: dict[str, NamedProblem] = {}  # problem key -> its first layer, in call order
        for n in found:
            first.setdefault(n.problem.key, n)
        found = list(first.values())
    return found
