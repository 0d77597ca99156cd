"""The public calls: `conv_transpose2d` and `conv_transpose2d_backward`, with PyTorch's semantics.

They check the arrays (type, rank, dtype, shapes against each other), build the `Problem`, find the device the
input lives on, take the candidate list of (backend, device, config) from `autotune.dispatch`, convert the
inputs to what the first candidate's backend accepts and run its prepared kernel. NumPy arrays and torch
tensors are accepted; the results come back as the type (and torch device) that went in.

A candidate that raises at call time (or returns a wrongly shaped result) is dropped from that decision with
one warning naming it and the reason, and the next candidate runs; a forced `backend=` runs only that backend
and its errors reach the caller; `config=` without `backend=` is a user error (with dispatch, configs come
from the results).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from autotune import dispatch, first_call
from autotune.core import memory
from autotune.core.problem import Problem, _is_int
from backends.base import Backend

_FLOAT_DTYPES = {"float16", "float32", "float64", "bfloat16"}


def _is_tensor(a: Any) -> bool:
    return type(a).__module__.startswith("torch") and hasattr(a, "detach")


def _dtype_name(name: str, a: Any) -> str:
    dtype = str(a.dtype).replace("torch.", "")
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point array (float32, float64, float16, bfloat16), "
                        f"got {dtype}")
    return dtype


def _check_array(name: str, a: Any, ndim: int) -> str:
    if not (isinstance(a, np.ndarray) or _is_tensor(a)):
        raise TypeError(f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {'(N, C, H, W)' if ndim == 4 else ''}, "
                         f"got shape {tuple(a.shape)}".replace("  ", " "))
    return _dtype_name(name, a)


# Problems of calls already checked, keyed by everything the checks read: a repeated call skips them
# (dispatch's per-call budget is microseconds). Only plain ints and tuples of them are keys, so `True` never
# passes for `1`.
_problems: dict[tuple, Problem] = {}
_PROBLEMS_MAX = 4096


def _plain(v: Any) -> Any:
    if type(v) is int:
        return v
    if type(v) is tuple and all(type(e) is int or (type(e) is tuple and all(type(u) is int for u in e))
                                for e in v):
        return v
    raise TypeError  # not a cache key: take the checked path


def _problem(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, output_padding: Any, groups: Any,
             dilation: Any, x_name: str = "input") -> Problem:
    try:
        key = (type(x), x.shape, x.dtype, type(weight), weight.shape, weight.dtype,
               None if bias is None else (type(bias), bias.shape, bias.dtype), _plain(stride),
               _plain(padding), _plain(output_padding), _plain(groups), _plain(dilation), x_name)
        found = _problems.get(key)
    except (AttributeError, TypeError):  # not arrays, or arguments that are not plain ints/tuples
        key, found = None, None
    if found is not None:
        return found
    problem = _checked_problem(x, weight, bias, stride, padding, output_padding, groups, dilation, x_name)
    if key is not None and len(_problems) < _PROBLEMS_MAX:
        _problems[key] = problem
    return problem


def _checked_problem(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, output_padding: Any,
                     groups: Any, dilation: Any, x_name: str = "input") -> Problem:
    dtype = _check_array(x_name, x, 4)
    if _check_array("weight", weight, 4) != dtype:
        raise TypeError(f"weight dtype {weight.dtype} differs from {x_name} dtype {x.dtype}")
    if not _is_int(groups) or groups < 1:  # numpy integers too, as for every int argument
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    N, C_in, H, W = (int(v) for v in x.shape)
    N = max(N, 1)  # an empty batch (N=0) is checked as a batch of one; the calls return empty outputs, as torch
    wc_in, cog, kH, kW = (int(v) for v in weight.shape)
    if wc_in != C_in:
        raise ValueError(f"weight.shape[0]={wc_in} must equal the input channels {x_name}.shape[1]={C_in} "
                         f"(weight is (C_in, C_out/groups, kH, kW))")
    if min(weight.shape) < 1:
        raise ValueError(f"weight must not be empty, got shape {tuple(weight.shape)}")
    if bias is not None:
        if _check_array("bias", bias, 1) != dtype:
            raise TypeError(f"bias dtype {bias.dtype} differs from {x_name} dtype {x.dtype}")
        if int(bias.shape[0]) != cog * groups:
            raise ValueError(f"bias must have C_out={cog * groups} elements (weight.shape[1]*groups), "
                             f"got {int(bias.shape[0])}")
    return Problem.make(N, C_in, H, W, cog * groups, kH, kW, stride, padding, output_padding, dilation,
                        int(groups), bias is not None, dtype)


def _zeros(like: Any, shape: tuple[int, ...]) -> Any:
    """Zeros of `shape`, of the type, dtype and device of `like` (the answers for an empty batch)."""
    if _is_tensor(like):
        import torch  # a tensor came in, so torch is installed
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return np.zeros(shape, dtype=like.dtype)


def _to_numpy(a: Any, dtype: str) -> np.ndarray:
    if _is_tensor(a):
        if a.requires_grad:
            a = a.detach()
        a = a.numpy() if a.is_cpu else a.cpu().numpy()  # a CPU tensor shares its memory: no copy
    return np.ascontiguousarray(a, dtype=np.dtype(dtype))


def device_of(array: Any) -> str:
    """The device id of where `array` lives: this CPU for NumPy arrays and CPU tensors, the GPU's id for
    CUDA."""
    if isinstance(array, np.ndarray):
        return dispatch.cpu_id()
    dev: Any = getattr(array, "device", None)
    if getattr(dev, "type", None) == "cuda":
        index = dev.index
        if index is None:
            import torch  # a CUDA tensor came in, so torch is installed
            index = torch.cuda.current_device()
        return dispatch.gpu_device_id(int(index))
    return dispatch.cpu_id()


def _convert(backend: Backend, arrays: tuple[Any, ...], dtype: str) -> tuple[Any, ...]:
    """The inputs as `backend`'s kernels take them: as they are where it accepts them, else contiguous
    NumPy."""
    return tuple(a if a is None or backend.accepts(a) else _to_numpy(a, dtype) for a in arrays)


def _first_that_works(op: str, candidates: list[dispatch.Choice], arrays: tuple[Any, ...], dtype: str) -> Any:
    """Run the first candidate; one that raises or returns a wrong shape is discarded from the (memoized) list
    with a warning and the next one runs. The last one's error reaches the caller: there is nothing left to
    try."""
    while True:
        choice = candidates[0]
        try:
            out = choice.kernel(*_convert(choice.backend, arrays, dtype))
            if tuple(out.shape) != choice.expected_shape:
                raise RuntimeError(f"returned shape {tuple(out.shape)}, expected {choice.expected_shape}")
            return out
        except Exception as exc:  # a failing backend must not take the call down while others remain
            if len(candidates) == 1:
                raise
            dispatch.discard(candidates, choice)  # later calls go straight to the next candidate
            # stacklevel 4: this function, _run, the public function, its caller
            warnings.warn(f"autotune: backend {choice.backend.name!r} (config {choice.config_text}, "
                          f"{choice.reason}) failed on {op} {choice.problem.key}: {type(exc).__name__}: "
                          f"{exc}; running the next candidate ({candidates[0].backend.name})",
                          RuntimeWarning, stacklevel=4)


def _check_memory(op: str, problem: Problem, like: Any) -> None:
    """The call's estimated working memory against what its device has free, before any backend allocates."""
    if memory.estimate(op, problem) <= memory.CHECK_ABOVE:
        return  # small calls pay nothing
    dev: Any = getattr(like, "device", None)
    if getattr(dev, "type", None) == "cuda":
        import torch  # a CUDA tensor came in, so torch is installed
        free, _ = torch.cuda.mem_get_info(dev)
        memory.check(op, problem, int(free), f"CUDA device {dev}")
    else:
        memory.check(op, problem, memory.available_cpu())


def _cpu_views(arrays: tuple[Any, ...], like: Any, dtype: str) -> tuple[Any, ...] | None:
    """CPU float32/float64 tensors as NumPy arrays on their memory, converted once for every candidate (a copy
    only for a non-contiguous tensor); None when `like` is not such a tensor (e.g. CUDA: backends take those)."""
    if not (_is_tensor(like) and like.is_cpu) or dtype not in ("float32", "float64"):
        return None
    try:
        return tuple(None if a is None else np.ascontiguousarray((a.detach() if a.requires_grad else a).numpy())
                     for a in arrays)
    except (TypeError, RuntimeError, AttributeError):  # not all CPU tensors: the general path
        return None


def _run(op: str, problem: Problem, arrays: tuple[Any, ...], like: Any, backend: str | None,
         config: dict | None) -> Any:
    """Run `op` on the first candidate that works and give the output back as the type of `like` (the array
    whose device decides: the input, or the weight for the weight and bias gradients)."""
    _check_memory(op, problem, like)
    views = _cpu_views(arrays, like, problem.dtype)
    if views is not None:  # CPU tensors: NumPy views once, not one conversion per candidate
        arrays = views
    candidates = dispatch.choices(op, problem, backend, config, device_of(like))
    if backend is not None:  # forced: that backend alone, and its errors are the caller's to see
        choice = candidates[0]
        out = choice.kernel(*_convert(choice.backend, arrays, problem.dtype))
    else:
        if candidates[0].reason != "exact":  # untuned here: first-call tuning, or the one warning
            first_call.maybe_tune(op, candidates, arrays, device_of(like), _convert)
        out = _first_that_works(op, candidates, arrays, problem.dtype)
    if _is_tensor(like) and not _is_tensor(out):
        import torch  # only reached when the caller passed a tensor, so torch is installed
        out = torch.from_numpy(np.ascontiguousarray(out))
        return out if like.is_cpu else out.to(like.device)
    return out


def run_problem(op: str, problem: Problem, arrays: tuple[Any, ...], like: Any, *, backend: str | None = None,
                config: dict | None = None) -> Any:
    """Run `op` of an already checked `problem` on `arrays` (the kernel's operands in its order, e.g. (x, w, b) for
    the forward op): dispatch, conversion and the try-the-next-candidate loop of the public calls, without their
    argument checks. For integrations that check and cache their own `Problem` (autotune.torch)."""
    return _run(op, problem, arrays, like, backend, config)


def conv_transpose2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                     backend: str | None = None, config: dict | None = None) -> Any:
    """`torch.nn.functional.conv_transpose2d`, plus asymmetric padding `((top, bottom), (left, right))`.

    `backend=None` dispatches to the fastest measured backend for this device and problem; a name forces that
    backend; `config` forces (some of) its tunable parameters, validated against its space.
    """
    problem = _problem(input, weight, bias, stride, padding, output_padding, groups, dilation)
    if input.shape[0] == 0:  # an empty batch: an empty output, as torch
        return _zeros(input, (0, *problem.output_shape[1:]))
    return _run("forward", problem, (input, weight, bias), input, backend, config)


def conv_transpose2d_backward(grad_output: Any, input: Any, weight: Any, stride: Any = 1, padding: Any = 0,
                              output_padding: Any = 0, groups: int = 1, dilation: Any = 1, *,
                              output_mask: tuple[bool, bool, bool] = (True, True, True),
                              backend: str | None = None, config: dict | None = None) -> tuple[Any, Any, Any]:
    """Gradients (grad_input, grad_weight, grad_bias) of `conv_transpose2d` for the upstream `grad_output`.
    Entries whose `output_mask` is False are None. `config`, if given, applies to each op that runs."""
    if not (isinstance(output_mask, (tuple, list)) and len(output_mask) == 3):
        raise TypeError(f"output_mask must be a tuple of three bools, got {output_mask!r}")
    problem = _problem(input, weight, None, stride, padding, output_padding, groups, dilation)
    dtype = _check_array("grad_output", grad_output, 4)
    if dtype != problem.dtype:
        raise TypeError(f"grad_output dtype {grad_output.dtype} differs from input dtype {input.dtype}")
    expected = (int(input.shape[0]), *problem.output_shape[1:])
    if tuple(grad_output.shape) != expected:
        raise ValueError(f"grad_output must have the output's shape {expected}, got {tuple(grad_output.shape)}")
    if expected[0] == 0:  # an empty batch: empty input gradient, zero weight and bias gradients, as torch
        return (_zeros(input, tuple(input.shape)) if output_mask[0] else None,
                _zeros(weight, tuple(weight.shape)) if output_mask[1] else None,
                _zeros(weight, (problem.C_out,)) if output_mask[2] else None)
    # the weight decides the device of the weight and bias gradients, the input that of the input gradient
    gx = gw = gb = None
    if output_mask[0]:
        gx = _run("backward_input", problem, (grad_output, weight), input, backend, config)
    if output_mask[1]:
        gw = _run("backward_weight", problem, (grad_output, input), weight, backend, config)
    if output_mask[2]:
        gb = _run("backward_bias", problem, (grad_output,), weight, backend, config)
    return gx, gw, gb
