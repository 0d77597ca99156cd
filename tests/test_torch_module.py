"""PyTorch integration: `autotune.torch.conv_transpose2d` (autograd through this library's backward ops) and the
drop-in `autotune.torch.ConvTranspose2d`, checked against torch's own; `autotune.bilinear_kernel`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IN_CI

import autotune
import backends

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch extra: required in CI
    if IN_CI:
        raise
    pytest.skip("torch is not installed (pip install 'convt-autotune[torch]')", allow_module_level=True)

import autotune.torch as att  # noqa: E402 - after the torch check


@pytest.fixture(autouse=True)
def empty_results(dirs):
    """Hermetic dispatch: no results anywhere (conftest's `dirs`), so calls take the default rule."""
    yield


def test_the_module_imports_the_real_torch():
    assert att.torch is torch and att.__file__.endswith("autotune/torch.py")
    assert issubclass(att.ConvTranspose2d, torch.nn.ConvTranspose2d)


@pytest.mark.parametrize("kw", [
    dict(stride=2, padding=1, output_padding=1, groups=2, bias=True),
    dict(stride=(1, 3), padding=(0, 2), dilation=(2, 1), bias=False),
    dict(stride=2, padding=((1, 0), (0, 2)), bias=True),  # asymmetric: beyond torch's own functional
], ids=["groups-outpad", "dilation-rect", "asymmetric"])
def test_gradcheck_float64(kw):
    gen = torch.Generator().manual_seed(0)
    groups = kw.get("groups", 1)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 6 // groups, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True) if kw["bias"] else None
    args = {k: v for k, v in kw.items() if k != "bias"}
    inputs = (x, w) if b is None else (x, w, b)
    assert torch.autograd.gradcheck(lambda *t: att.conv_transpose2d(*t, **args), inputs, eps=1e-6, atol=1e-7)


# (constructor args, input shape, output_size)
CASES = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2, dilation=2), (2, 4, 5, 5),
     [12, 11]),
    (dict(in_channels=3, out_channels=5, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
          bias=False), (2, 3, 4, 6), None),
    (dict(in_channels=4, out_channels=4, kernel_size=4, stride=2, padding=1, groups=4), (1, 4, 6, 5), [13, 11]),
    (dict(in_channels=2, out_channels=3, kernel_size=3, stride=3, padding=2, output_padding=1), (2, 5, 4), None),
]


@pytest.mark.parametrize("ctor, shape, output_size", CASES, ids=["groups-dilation-size", "rect-outpad-nobias",
                                                                  "depthwise-size", "unbatched"])
def test_module_matches_torch_outputs_and_gradients(ctor, shape, output_size):
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(**ctor)
    mod = att.ConvTranspose2d(**ctor)
    assert list(mod.state_dict()) == list(ref.state_dict())
    mod.load_state_dict(ref.state_dict())
    x_ref = torch.randn(*shape, requires_grad=True)
    x_mod = x_ref.detach().clone().requires_grad_(True)
    y_ref, y_mod = ref(x_ref, output_size=output_size), mod(x_mod, output_size=output_size)
    assert y_mod.shape == y_ref.shape and y_mod.dtype == y_ref.dtype
    torch.testing.assert_close(y_mod, y_ref, rtol=1e-5, atol=1e-5)
    gy = torch.randn_like(y_ref)
    y_ref.backward(gy)
    y_mod.backward(gy)
    torch.testing.assert_close(x_mod.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mod.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-4)
    if ref.bias is not None:
        torch.testing.assert_close(mod.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-4)
    # and back: torch's module loads ours
    ref2 = torch.nn.ConvTranspose2d(**ctor)
    ref2.load_state_dict(mod.state_dict())
    torch.testing.assert_close(ref2(x_ref, output_size=output_size), y_mod, rtol=1e-5, atol=1e-5)


def test_module_output_size_rule_errors_like_torch():
    mod = att.ConvTranspose2d(2, 2, 3, stride=2)
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="output size"):
        mod(x, output_size=[20, 20])
    assert mod(x, output_size=[10, 9]).shape == (1, 2, 10, 9)


def test_only_the_needed_gradients_are_computed(monkeypatch):
    calls = []
    real = autotune.api.run_problem

    def spy(op, *args, **kw):
        calls.append(op)
        return real(op, *args, **kw)
    monkeypatch.setattr(autotune.api, "run_problem", spy)
    mod = att.ConvTranspose2d(3, 2, 3, stride=2)
    mod.bias.requires_grad_(False)
    x = torch.randn(1, 3, 4, 4)  # no grad wanted for the input
    mod(x).sum().backward()
    assert calls == ["forward", "backward_weight"]
    ref = torch.nn.ConvTranspose2d(3, 2, 3, stride=2)
    ref.load_state_dict(mod.state_dict())
    ref(x).sum().backward()
    torch.testing.assert_close(mod.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-4)


def test_forced_backend_and_double_backward():
    mod = att.ConvTranspose2d(2, 2, 3, stride=2, backend="numpy", config={"forward": {"algorithm": "col2im"},
                                                                            "backward_input": {"algorithm": "per_tap"}})
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    y = mod(x)
    assert autotune.which(autotune.Problem.make(1, 2, 3, 3, 2, 3, 3, 2, bias=True), backend="numpy",
                          config={"algorithm": "col2im"}).config["algorithm"] == "col2im"
    torch.testing.assert_close(y, F.conv_transpose2d(x, mod.weight, mod.bias, stride=2), rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)  # double backward: see test_torch_ops.py
    g.sum().backward()
    assert mod.weight.grad is not None
    with pytest.raises(ValueError, match="not one of"):  # a forward config does not fit the backward ops
        att.conv_transpose2d(x, mod.weight, stride=2, backend="numpy", config={"algorithm": "col2im"}).sum().backward()
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        att.conv_transpose2d(np.zeros((1, 2, 3, 3), np.float32), mod.weight)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_tensors_fall_back_to_the_reference(dtype):
    """No CPU backend computes these: the numpy fallback runs the reference and returns the dtype that came in."""
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 4, 4, generator=gen).to(dt).requires_grad_(True)
    w = torch.randn(2, 3, 3, 3, generator=gen).to(dt).requires_grad_(True)
    assert autotune.which(autotune.Problem.make(1, 2, 4, 4, 3, 3, 3, 2, dtype=dtype)).reason == "fallback"
    y = att.conv_transpose2d(x, w, stride=2)
    assert y.dtype == dt and y.shape == (1, 3, 9, 9)
    y_ref = F.conv_transpose2d(x.double(), w.double(), stride=2)
    torch.testing.assert_close(y.double(), y_ref, rtol=2e-2, atol=5e-2)
    gx, gw = torch.autograd.grad(y.float().sum(), (x, w))
    gx_ref, gw_ref = torch.autograd.grad(y_ref.sum(), (x, w))
    assert gx.dtype == dt and gw.dtype == dt
    torch.testing.assert_close(gx.double(), gx_ref.double(), rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(gw.double(), gw_ref.double(), rtol=2e-2, atol=1e-1)


def _available_backends() -> list[str]:
    return [n for n in backends.names() if backends.get(n).available()[0]]


@pytest.mark.parametrize("name", _available_backends())
def test_each_backend_through_autograd(name):
    """Forward and the three gradients through every available backend, forced, against torch (float32)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 5, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True)
    y = att.conv_transpose2d(x, w, b, stride=2, padding=1, groups=2, backend=name)
    y_ref = F.conv_transpose2d(x, w, b, stride=2, padding=1, groups=2)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    gy = torch.randn(y.shape, generator=gen)
    got = torch.autograd.grad(y, (x, w, b), gy)
    want = torch.autograd.grad(y_ref, (x, w, b), gy)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-3)


def test_training_follows_torch():
    """Learn a fixed 2x bilinear upsampling with SGD: the loss curve follows torch's own module step by step."""
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(8, 3, 8, 8, generator=gen)
    target = F.interpolate(data, scale_factor=2, mode="bilinear", align_corners=False)
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1)
    mod = att.ConvTranspose2d(3, 3, 4, stride=2, padding=1)
    mod.load_state_dict(ref.state_dict())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: torch's thread pool only spins on a shared 2-core machine
    try:
        curves = [_train(model, data, target) for model in (ref, mod)]
    finally:
        torch.set_num_threads(threads)
    ref_curve, mod_curve = curves
    assert ref_curve[-1] < 0.1 * ref_curve[0]  # it really learns
    np.testing.assert_allclose(mod_curve, ref_curve, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(mod.weight, ref.weight, rtol=1e-3, atol=1e-4)


def _train(model: torch.nn.Module, data: torch.Tensor, target: torch.Tensor, steps: int = 50, lr: float = 0.1,
           momentum: float = 0.9) -> np.ndarray:
    """SGD with momentum, torch.optim.SGD's update written out: its first step imports torch._dynamo (~7 s here)."""
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    losses = []
    for _ in range(steps):
        for p in params:
            p.grad = None
        loss = F.mse_loss(model(data), target)
        loss.backward()
        with torch.no_grad():
            for p, v in zip(params, velocity):
                v.mul_(momentum).add_(p.grad)
                p.sub_(lr * v)
        losses.append(loss.item())
    return np.array(losses)



# ---- bilinear_kernel ------------------------------------------------------------------------------------------------
def test_bilinear_kernel_values():
    w = autotune.bilinear_kernel(2, 3)
    assert w.shape == (3, 3, 4, 4) and w.dtype == np.float32
    taps = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(w[1, 1], np.outer(taps, taps))
    assert not w[0, 1].any() and not w[2, 0].any()
    np.testing.assert_allclose(autotune.bilinear_kernel(3, 1, dtype="float64")[0, 0, 2],
                               [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    d = autotune.bilinear_kernel(4, 2, depthwise=True)
    assert d.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(d[1, 0], autotune.bilinear_kernel(4, 2)[1, 1])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="factor"):
            autotune.bilinear_kernel(bad, 2)
    with pytest.raises(ValueError, match="channels"):
        autotune.bilinear_kernel(2, 0)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bilinear_kernel_upsamples_like_interpolate(factor):
    """stride=factor, padding=factor//2 maps H to factor*H, equal to bilinear interpolation away from the border."""
    C, H = 2, 6
    k = 2 * factor - factor % 2
    x = np.random.default_rng(0).standard_normal((1, C, H, H)).astype(np.float32)
    y = autotune.conv_transpose2d(x, autotune.bilinear_kernel(factor, C), stride=factor, padding=factor // 2)
    y_dw = autotune.conv_transpose2d(x, autotune.bilinear_kernel(factor, C, depthwise=True), stride=factor,
                                     padding=factor // 2, groups=C)
    assert y.shape == (1, C, factor * H, factor * H) and k == autotune.bilinear_kernel(factor, 1).shape[-1]
    np.testing.assert_allclose(y_dw, y, rtol=1e-6, atol=1e-6)
    ref = F.interpolate(torch.from_numpy(x), scale_factor=factor, mode="bilinear", align_corners=False).numpy()
    inner = slice(factor, -factor)
    np.testing.assert_allclose(y[..., inner, inner], ref[..., inner, inner], rtol=1e-5, atol=1e-5)
