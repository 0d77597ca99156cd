"""The `torch` backend: PyTorch's own kernels (ATen: oneDNN or the native kernel on a CPU, cuDNN on a CUDA GPU)
behind the Backend interface, tuned and dispatched like every other backend. It is the vendor baseline: `autotune
bench` still times torch's default call as the `torch` baseline row; this backend is what competes in dispatch.

Tunable space, per op:

| parameter | values | where |
|---|---|---|
| `memory_format` | `contiguous`, `channels_last` (inputs and weight converted before the call) | every convolution op |
| `algorithm` | see below | every op |
| `mkldnn` | `on`, `off` (`torch.backends.mkldnn.flags`: oneDNN or ATen's native kernel) | CPU |
| `cudnn_benchmark` | `on`, `off` (cuDNN's own algorithm search) | CUDA |
| `precision` | `ieee`, `tf32` (float32 only; `tf32` wins only where the correctness check passes) | CUDA |
| `bias_add` | `fused` (the bias in torch's call), `separate` (the call without it, then an add) | forward, bias |

`algorithm`: forward `conv_transpose2d`; backward_input `convolution_backward` (what autograd calls) or `conv2d`
(the input gradient of a transposed convolution is an ordinary convolution of gy with the same weight);
backward_weight `convolution_backward`; backward_bias `sum`.

`bias_add` exists because torch's own kernel choice changes with the bias: on the 2-core EPYC, oneDNN's
depthwise transposed convolution took 17.7 ms with the bias and 4.7 ms without it (plus 1 ms for the add), odd_shapes
1.11 against 0.51 ms, decoder_s1_3x3 8.7 against 7.2 ms.

Asymmetric padding is computed exactly: torch gets the symmetric part (the smaller pad of each axis) and the rest
is cropped from its output (forward), or gy is embedded in a zero canvas of torch's output size (gradients).

Devices: this CPU (the shared CPU id), and each CUDA GPU with the same id the Triton backend gives it. Kernels take
NumPy arrays (converted without a copy on the CPU; staged to the GPU and back, which a user's call also waits for)
and torch tensors already on the kernel's device (returned as tensors). `import backends.torch` imports no torch.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from autotune.core.devices import cpu_device_id, cpu_device_name, device_id
from autotune.core.problem import Problem, check_op
from backends.base import Backend, Config, Device, Kernel, Space

INSTALL_HINT = "pip install 'convt-autotune[torch]'"
CPU_DTYPES = ("float32", "float64")
GPU_DTYPES = ("float32", "float64", "float16", "bfloat16")
ON_OFF = ("on", "off")
KEPT_PLACEHOLDER_BYTES = 1 << 20


@functools.lru_cache(maxsize=1)
def _import_problem() -> str:
    """Why torch cannot be imported here ("" when it can); tried once per process."""
    if importlib.util.find_spec("torch") is None:
        return f"torch not installed: {INSTALL_HINT}"
    try:
        import torch  # noqa: F401
    except Exception as exc:  # a broken install makes the backend unavailable, never crashes the caller
        return f"importing torch failed ({type(exc).__name__}: {exc}); reinstall with {INSTALL_HINT}"
    return ""


def _is_tensor(a: Any) -> bool:
    return type(a).__module__.startswith("torch") and hasattr(a, "data_ptr")


@functools.lru_cache(maxsize=1)
def _gpu_devices() -> tuple[Device, ...]:
    """Every CUDA (or HIP) GPU torch sees, with the id the Triton backend gives it (autotune.core.devices)."""
    if _import_problem():
        return ()
    import torch
    try:
        if not torch.cuda.is_available():
            return ()
        count = torch.cuda.device_count()
    except Exception:
        return ()
    vendor = "amd" if getattr(torch.version, "hip", None) else "nvidia"
    found = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        memory_gb = math.ceil(props.total_memory / 2**30)  # as Triton's backend rounds it: one id per GPU
        info = {"index": i, "memory_gb": memory_gb, "capability": f"{props.major}.{props.minor}", "timing": "device"}
        found.append(Device(id=device_id("gpu", vendor, props.name, memory_gb=memory_gb), name=props.name,
                            kind="gpu", info=info, handle=torch.device("cuda", i)))
    return tuple(found)


class TorchBackend(Backend):
    vendor_library = True  # oneDNN / cuDNN choose their own kernels per device

    def __init__(self) -> None:
        self._kernels: dict[tuple, Kernel] = {}
        self._lock = threading.Lock()

    # ---- where it runs -------------------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        problem = _import_problem()
        return (False, problem) if problem else (True, "")

    def devices(self) -> list[Device]:
        if not self.available()[0]:
            return []
        import torch
        cpu = Device(id=cpu_device_id(), name=cpu_device_name(), kind="cpu", handle=torch.device("cpu"),
                     info={"torch": str(torch.__version__), "mkldnn": bool(torch.backends.mkldnn.is_available())})
        return [cpu, *_gpu_devices()]

    def version(self) -> str:
        try:
            import torch
        except Exception as exc:
            return f"unavailable ({exc})"
        extra = f", cuda {torch.version.cuda}" if torch.version.cuda else ""
        return f"torch {torch.__version__}{extra}"

    def supports(self, problem: Problem, device: Device) -> str | None:
        dtypes = GPU_DTYPES if device.kind == "gpu" else CPU_DTYPES
        if problem.dtype not in dtypes:
            return f"torch backend computes {', '.join(dtypes)} on a {device.kind}, not {problem.dtype}"
        return None

    def accepts(self, array: Any) -> bool:
        """NumPy arrays and torch tensors (on the CPU or one of the GPUs)."""
        if isinstance(array, np.ndarray):
            return True
        return _is_tensor(array) and (array.device.type == "cpu" or any(d.handle == array.device
                                                                         for d in _gpu_devices()))

    # ---- what can be tuned ---------------------------------------------------------------------------------
    def space(self, op: str, problem: Problem, device: Device) -> Space:
        check_op(op)
        params: dict[str, tuple[Any, ...]] = {}
        if op == "backward_bias":
            return Space({"algorithm": ("sum",)})
        params["algorithm"] = {"forward": ("conv_transpose2d",), "backward_input": ("convolution_backward", "conv2d"),
                               "backward_weight": ("convolution_backward",)}[op]
        params["memory_format"] = ("contiguous", "channels_last")
        if device.kind == "gpu":
            params["cudnn_benchmark"] = ON_OFF
            params["precision"] = ("ieee", "tf32") if problem.dtype == "float32" else ("ieee",)
        else:
            params["mkldnn"] = ON_OFF
        if op == "forward" and problem.bias:
            params["bias_add"] = ("fused", "separate")
        # a forward config recorded before `bias_add` existed passed the bias to torch's call
        return Space(params, added={"bias_add": "fused"})

    def default_config(self, op: str, problem: Problem, device: Device) -> Config:
        """What a plain torch call does: contiguous tensors, autograd's convolution_backward, oneDNN where torch
        uses it, cuDNN without its search, IEEE float32 (the exact answer)."""
        space = self.space(op, problem, device)
        return {name: values[0] for name, values in space.params.items()}

    # ---- kernels -------------------------------------------------------------------------------------------
    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        key = (op, problem, device.id, tuple(sorted(config.items())))
        with self._lock:
            kernel = self._kernels.get(key)
            if kernel is None:
                kernel = self._kernels[key] = _build(op, problem, device, dict(config))
        return kernel

    def runner(self, kernel: Kernel, inputs: tuple[Any, ...], device: Device) -> Callable[[], float | None]:
        """CPU: the wall clock around the call as a user makes it. GPU: the inputs staged once, CUDA events."""
        if device.kind != "gpu":
            return super().runner(kernel, inputs, device)
        import torch
        staged = tuple(None if a is None else (a if _is_tensor(a) else torch.from_numpy(np.asarray(a))).to(
            device.handle) for a in inputs)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run() -> float:
            start.record()
            kernel(*staged)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) * 1e-3
        return run


class _Switches:
    """The backend switches of a config around one call (a new one per call: calls may run on several threads):
    no autograd graph, and the GPU's cuDNN flags or the CPU's oneDNN on/off (left alone when already as asked, so
    the default config pays nothing)."""

    __slots__ = ("spec", "saved")

    def __init__(self, spec: tuple[Any, bool | None, tuple[bool, bool] | None]) -> None:
        self.spec = spec  # (torch, oneDNN on/off or None, (cuDNN benchmark, TF32) or None)

    def __enter__(self) -> None:
        torch, mkldnn, cudnn = self.spec
        grad = torch.is_grad_enabled()
        if grad:
            torch._C._set_grad_enabled(False)
        flags = restore = None
        if cudnn is not None:
            flags = torch.backends.cudnn.flags(enabled=True, benchmark=cudnn[0], deterministic=False,
                                               allow_tf32=cudnn[1])
            flags.__enter__()
        elif mkldnn is not None and torch._C._get_mkldnn_enabled() != mkldnn:
            # torch.backends.mkldnn.flags also resets oneDNN's TF32 switch (and warns about it on every call):
            # only the on/off switch is set here, and restored after.
            restore = not mkldnn
            torch._C._set_mkldnn_enabled(mkldnn)
        self.saved = (grad, flags, restore)

    def __exit__(self, *exc: Any) -> None:
        torch = self.spec[0]
        grad, flags, restore = self.saved
        if flags is not None:
            flags.__exit__(*exc)
        if restore is not None:
            torch._C._set_mkldnn_enabled(restore)
        if grad:
            torch._C._set_grad_enabled(True)


def _switch_spec(config: Config, device: Device) -> tuple[Any, bool | None, tuple[bool, bool] | None]:
    import torch
    if device.kind == "gpu":
        return torch, None, (config["cudnn_benchmark"] == "on", config["precision"] == "tf32")
    return torch, (config["mkldnn"] == "on") if "mkldnn" in config else None, None


def _build(op: str, p: Problem, device: Device, config: Config) -> Kernel:
    import torch
    F = torch.nn.functional
    dtype = getattr(torch, p.dtype)
    target = device.handle if device.handle is not None else torch.device("cpu")
    spec = _switch_spec(config, device)
    fmt = torch.channels_last if config.get("memory_format") == "channels_last" else torch.contiguous_format
    (t, b), (left, r) = p.padding
    pad = (min(t, b), min(left, r))  # torch's symmetric part; the rest is cropped (or embedded) exactly
    extra = (t - pad[0], left - pad[1])
    Ho, Wo = p.output_size
    # The output size torch computes with the symmetric part of the padding.
    torch_out = (Ho + (t - pad[0]) + (b - pad[0]), Wo + (left - pad[1]) + (r - pad[1]))
    asymmetric = torch_out != (Ho, Wo)

    channels_last = fmt is torch.channels_last

    def stage(a: Any) -> Any:
        """The array as a tensor of the kernel's device and dtype (no copy where it already is one), in the
        config's memory format."""
        if a is None:
            return None
        tensor = torch.from_numpy(a) if isinstance(a, np.ndarray) else a if _is_tensor(a) else \
            torch.from_numpy(np.asarray(a))
        if tensor.dtype != dtype or tensor.device != target:
            tensor = tensor.to(device=target, dtype=dtype)
        return tensor.contiguous(memory_format=fmt) if channels_last and tensor.dim() == 4 else tensor

    def back(out: Any, like: Any) -> Any:
        """The result as the caller's type: a tensor for tensors, NumPy (contiguous) for NumPy inputs."""
        if _is_tensor(like):
            return out.contiguous()
        return out.contiguous().cpu().numpy()

    def embed(gy: Any) -> Any:
        """gy in a zero canvas of torch's output size (asymmetric padding only)."""
        if not asymmetric:
            return gy
        canvas = gy.new_zeros((gy.shape[0], gy.shape[1], *torch_out)).contiguous(memory_format=fmt)
        canvas[:, :, extra[0]:extra[0] + Ho, extra[1]:extra[1] + Wo] = gy
        return canvas

    if op == "backward_bias":
        np_dtype = np.dtype(p.dtype) if device.kind != "gpu" else None

        def bias_grad(gy: Any) -> Any:
            if type(gy) is np.ndarray and gy.dtype == np_dtype:
                # the common CPU case in its shortest form: a tensor made from NumPy needs no graph or switches
                # (a third of the call on small layers: 12.7 us against 17.7 here)
                return torch.from_numpy(gy).sum((0, 2, 3)).numpy()
            with _Switches(spec):
                return back(stage(gy).sum((0, 2, 3)), gy)
        return bias_grad

    if op == "forward":
        separate = config.get("bias_add") == "separate"

        def forward(x: Any, w: Any, bias: Any = None) -> Any:
            with _Switches(spec):
                b = stage(bias)
                y = F.conv_transpose2d(stage(x), stage(w), None if separate else b, p.stride, pad,
                                       p.output_padding, p.groups, p.dilation)
                if asymmetric:
                    y = y[:, :, extra[0]:extra[0] + Ho, extra[1]:extra[1] + Wo]
                if separate and b is not None:
                    y = y.add_(b.view(1, -1, 1, 1))
                return back(y, x)
        return forward

    if op == "backward_input" and config["algorithm"] == "conv2d":
        def grad_input_conv(gy: Any, w: Any) -> Any:
            with _Switches(spec):
                gx = F.conv2d(embed(stage(gy)), stage(w), None, p.stride, pad, p.dilation, p.groups)
                # op >= stride (allowed where op < dilation) leaves trailing rows beyond the input: cropped.
                if gx.shape[2] != p.H or gx.shape[3] != p.W:
                    gx = gx[:, :, :p.H, :p.W]
                return back(gx, gy)
        return grad_input_conv

    mask = [op == "backward_input", op == "backward_weight", False]
    out_index = 0 if op == "backward_input" else 1
    # convolution_backward reads only the shape of the operand whose gradient it computes; a placeholder kept
    # with the kernel saves an allocation per call (11 of fcn_score_up2's 261 us), where it is small enough to keep
    shape = p.input_shape if op == "backward_input" else p.weight_shape
    small = math.prod(shape) * dtype.itemsize <= KEPT_PLACEHOLDER_BYTES
    kept = torch.empty(shape, dtype=dtype, device=target) if small else None

    def grad(gy: Any, other: Any) -> Any:
        g = embed(stage(gy))
        o = stage(other)
        placeholder = kept if kept is not None else torch.empty(shape, dtype=dtype, device=target)
        x, w = (placeholder, o) if op == "backward_input" else (o, placeholder)
        with _Switches(spec):
            res = torch.ops.aten.convolution_backward(g, x, w, None, list(p.stride), list(pad), list(p.dilation),
                                                      True, list(p.output_padding), p.groups, mask)
            return back(res[out_index], gy)
    return grad


BACKEND = TorchBackend
