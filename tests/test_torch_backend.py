"""The `torch` backend beyond the shared suite (which runs every op, config samples and corner cases on it): its
space validates, its default is torch's plain call, tensors stay tensors, asymmetric padding is exact, and its GPU
ids are Triton's."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, inputs_for, require

import backends
from autotune.core import reference
from autotune.core.problem import OPS, Problem

torch = pytest.importorskip("torch")

PROBLEMS = [Problem.make(N=2, C_in=3, H=5, W=4, C_out=4, kH=3, kW=3, stride=2, padding=1, bias=True),
            Problem.make(N=1, C_in=4, H=4, W=5, C_out=6, kH=2, kW=2, stride=2, groups=2),
            Problem.make(N=1, C_in=3, H=4, W=4, C_out=2, kH=3, kW=3, stride=2, padding=((0, 2), (1, 0)),
                         output_padding=1, dilation=2, bias=True)]


def _cpu():
    backend = backends.get("torch")
    require(backend.available()[0], f"backend torch ({backend.available()[1]})")
    return backend, next(d for d in backend.devices() if d.kind == "cpu")


@pytest.mark.parametrize("op", OPS)
def test_space_validates_every_point(op):
    backend, device = _cpu()
    for p in PROBLEMS:
        space = backend.space(op, p, device)
        default = space.validate(backend.default_config(op, p, device))
        assert all(v[0] == default[k] for k, v in space.params.items())  # the default is torch's plain call
        for config in space.grid():
            assert space.validate(config) == config
        if op != "backward_bias":
            assert set(space.params["memory_format"]) == {"contiguous", "channels_last"}
            assert set(space.params["mkldnn"]) == {"on", "off"}
        assert ("bias_add" in space.params) == (op == "forward" and p.bias)
    p = PROBLEMS[0]
    # a forward config recorded before bias_add existed passed the bias to torch's call
    assert backend.space("forward", p, device).validate(
        {"algorithm": "conv_transpose2d", "memory_format": "contiguous", "mkldnn": "on"})["bias_add"] == "fused"
    assert set(backend.space("backward_input", p, device).params["algorithm"]) == {"convolution_backward", "conv2d"}
    with pytest.raises(ValueError):
        backend.space("forward", p, device).validate({"algorithm": "conv_transpose2d", "memory_format": "nhwc",
                                                      "mkldnn": "on"})


@pytest.mark.parametrize("op", OPS)
def test_every_config_exact_with_asymmetric_padding(op):
    backend, device = _cpu()
    p = PROBLEMS[2]
    assert backend.supports(p, device) is None
    inputs = inputs_for(op, p, seed=3)
    ref = reference.run(op, p, inputs)
    space = backend.space(op, p, device)
    for config in space.grid():
        out = backend.prepare(op, p, device, space.validate(config))(*inputs)
        assert_close(np.asarray(out), ref, op, p, f"torch {op} {config}")


def test_tensors_in_tensors_out():
    backend, device = _cpu()
    p = PROBLEMS[0]
    x, w, b = (torch.from_numpy(a) for a in inputs_for("forward", p, seed=1))
    assert backend.accepts(x) and backend.accepts(x.numpy())
    config = {"algorithm": "conv_transpose2d", "memory_format": "channels_last", "mkldnn": "off"}
    y = backend.prepare("forward", p, device, config)(x, w, b)
    assert isinstance(y, torch.Tensor) and y.is_contiguous()
    expected = torch.nn.functional.conv_transpose2d(x, w, b, 2, 1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_float16_refused_on_cpu_with_reason():
    backend, device = _cpu()
    reason = backend.supports(PROBLEMS[0].with_dtype("float16"), device)
    assert reason and "float16" in reason


def test_gpu_ids_are_tritons(monkeypatch):
    """A CUDA GPU gets the id Triton's backend gives it, so both compete in one results table."""
    from autotune.core.devices import device_id
    from backends import torch as torch_backend

    class Props:
        name, total_memory, major, minor = "NVIDIA H100 80GB HBM3", 85 * 10**9, 9, 0

    torch_backend._gpu_devices.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    try:
        (gpu,) = torch_backend._gpu_devices()
    finally:
        torch_backend._gpu_devices.cache_clear()
    assert gpu.id == device_id("gpu", "nvidia", Props.name, memory_gb=80) == "gpu-nvidia-h100-80gb"
    space = backends.get("torch").space("forward", PROBLEMS[0], gpu)
    assert set(space.params["precision"]) == {"ieee", "tf32"} and set(space.params["cudnn_benchmark"]) == {"on", "off"}
    assert "mkldnn" not in space.params
    assert backends.get("torch").space("forward", PROBLEMS[0].with_dtype("float64"), gpu).params["precision"] == \
        ("ieee",)


def test_bench_records_the_torch_backends_config_apart_from_the_baseline(tmp_path, recwarn):
    """`bench --record` writes PyTorch's default call as a `baseline` row with no config and the torch backend's
    rows with the config they ran; dispatch then reads the file without a warning."""
    from autotune import bench, dispatch
    from autotune.core import results
    from autotune.core.devices import cpu_device_id
    from autotune.problems import NamedProblem
    _cpu()
    p = PROBLEMS[0]
    bench.bench([NamedProblem("tiny", p)], ["forward", "backward_bias"], ["torch", "numpy"], budget_s=0.01,
                with_peak=False, with_dispatch=False, record_to=tmp_path)
    every = results.read_file(results.device_file(tmp_path, cpu_device_id()))
    # each row carries its own backend's version (the backends of one CPU share its device id)
    assert set(every[every.backend == "numpy"].backend_version) == {backends.get("numpy").version()}
    assert set(every[every.backend == "torch"].backend_version) == {backends.get("torch").version()}
    rows = every[every.backend == "torch"]
    assert sorted(rows.status) == ["baseline", "baseline", "ok", "ok"]
    assert set(rows[rows.status == "baseline"].config) == {"{}"}
    assert set(rows[rows.status == "ok"].config) == {
        '{"algorithm":"conv_transpose2d","bias_add":"fused","memory_format":"contiguous","mkldnn":"on"}',
        '{"algorithm":"sum"}'}
    dispatch.clear_cache()
    for op in ("forward", "backward_bias"):
        exact = {c.backend.name for c in dispatch.choices(op, p, results_dirs=[tmp_path]) if c.reason == "exact"}
        assert exact == {"torch", "numpy"}
    assert not [w for w in recwarn if "autotune" in str(w.message)]


@pytest.mark.parametrize("kept_bytes", [0, 1 << 20])
def test_gradients_with_and_without_a_kept_placeholder(monkeypatch, kept_bytes):
    """convolution_backward's placeholder operand (read for its shape only) is kept with the kernel where small,
    allocated per call where not: both give the exact gradients, call after call."""
    import backends.torch as torch_backend
    backend, device = _cpu()
    monkeypatch.setattr(torch_backend, "KEPT_PLACEHOLDER_BYTES", kept_bytes)
    for p in PROBLEMS:
        for op in ("backward_input", "backward_weight"):
            kernel = torch_backend._build(op, p, device, backend.default_config(op, p, device))
            for seed in (0, 1):
                args = inputs_for(op, p, seed=seed)
                assert_close(kernel(*args), reference.run(op, p, args), op, p, f"{op} {p.key}")


def test_switches_are_restored_after_each_call():
    """A call runs without an autograd graph and with its oneDNN setting, and leaves both as they were (also when
    the kernel raises)."""
    backend, device = _cpu()
    p = PROBLEMS[0]
    x, w, b = inputs_for("forward", p)
    xt = torch.from_numpy(x).requires_grad_()
    before = torch._C._get_mkldnn_enabled()
    for mkldnn in ("off", "on"):
        config = {**backend.default_config("forward", p, device), "mkldnn": mkldnn}
        y = backend.prepare("forward", p, device, config)(xt, torch.from_numpy(w), torch.from_numpy(b))
        assert not y.requires_grad and torch.is_grad_enabled() and torch._C._get_mkldnn_enabled() == before
    kernel = backend.prepare("forward", p, device, {**backend.default_config("forward", p, device), "mkldnn": "off"})
    with pytest.raises(RuntimeError):
        kernel(xt[:, :1], torch.from_numpy(w), None)  # wrong channel count: torch raises inside the switches
    assert torch.is_grad_enabled() and torch._C._get_mkldnn_enabled() == before
