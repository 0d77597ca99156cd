"""One parametrized suite over every registered, available backend: each op on tricky problems and on random
ones (hypothesis) against the reference and against PyTorch; adjoint identities; several configs of each space.
A new backend is checked by all of this the day it registers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXPECTED_IN_CI, IN_CI, assert_close, backend_params, inputs_for, require, sample_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backends
from autotune.core import reference
from autotune.core.problem import OPS, Problem

# Small problems that each stress one semantic corner (kept small: the Triton interpreter runs them too).
CASES = {
    "basic": dict(N=2, C_in=3, H=5, W=4, C_out=4, kH=3, kW=3, stride=2, padding=1),
    "groups": dict(N=2, C_in=4, H=4, W=5, C_out=6, kH=3, kW=2, stride=(2, 1), padding=(1, 0), groups=2, bias=True),
    "depthwise": dict(N=1, C_in=4, H=6, W=6, C_out=4, kH=4, kW=4, stride=2, padding=1, groups=4, bias=True),
    "dilation_op": dict(N=2, C_in=3, H=5, W=5, C_out=2, kH=3, kW=3, stride=2, padding=2, output_padding=(2, 1),
                        dilation=3, bias=True),
    "stride_gt_kernel": dict(N=1, C_in=2, H=4, W=3, C_out=3, kH=2, kW=2, stride=(3, 4), output_padding=(2, 1),
                             bias=True),
    "crop_beyond_k": dict(N=1, C_in=2, H=7, W=6, C_out=2, kH=2, kW=3, stride=3, padding=(4, 3)),
    "one_pixel": dict(N=3, C_in=5, H=1, W=1, C_out=2, kH=3, kW=2, stride=2, bias=True),
    "non_square": dict(N=1, C_in=3, H=3, W=7, C_out=5, kH=1, kW=5, stride=(1, 3), padding=(0, 2),
                       dilation=(2, 1)),
    "odd_channels": dict(N=1, C_in=7, H=5, W=4, C_out=11, kH=3, kW=3, stride=2, padding=1, bias=True),
    "asymmetric": dict(N=2, C_in=3, H=5, W=6, C_out=4, kH=4, kW=3, stride=2, padding=((0, 3), (2, 1)),
                       output_padding=1, bias=True),
    "stride1": dict(N=1, C_in=4, H=5, W=5, C_out=3, kH=3, kW=3, stride=1, padding=1, bias=True),
    # one tap per output pixel (stride == kernel: U-Net's k2 s2): the blocks tile the output exactly
    "k_eq_s": dict(N=2, C_in=5, H=3, W=4, C_out=3, kH=2, kW=2, stride=2, bias=True),
    # one tap per pixel, with a crop, output_padding, groups and dilation gaps between the taps
    "k_eq_s_cropped": dict(N=2, C_in=4, H=3, W=4, C_out=6, kH=2, kW=3, stride=(2, 3), padding=(1, 0),
                           output_padding=1, groups=2, bias=True),
    "one_tap_dilated": dict(N=1, C_in=3, H=4, W=3, C_out=2, kH=2, kW=2, stride=3, padding=((0, 2), (1, 0)),
                            output_padding=2, dilation=2),
    # stride 1 with a non-square kernel (the suite's full convolutions), few output channels
    "stride1_3x5": dict(N=2, C_in=6, H=4, W=6, C_out=3, kH=3, kW=5, stride=1, padding=(1, 2)),
}
BACKENDS = backend_params()


def torch_reference(op: str, p: Problem, inputs: tuple) -> np.ndarray | None:
    """PyTorch's answer (float64), or None where torch cannot express the problem (asymmetric padding)."""
    torch = pytest.importorskip("torch") if not IN_CI else __import__("torch")
    pad = p.symmetric_padding
    if pad is None:
        return None
    F = torch.nn.functional
    if op == "forward":
        x, w, b = (None if a is None else torch.tensor(a, dtype=torch.float64) for a in inputs)
        return F.conv_transpose2d(x, w, b, p.stride, pad, p.output_padding, p.groups, p.dilation).numpy()
    gy = torch.tensor(inputs[0], dtype=torch.float64)
    x = torch.zeros(p.input_shape, dtype=torch.float64, requires_grad=True)
    w = torch.zeros(p.weight_shape, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(p.bias_shape, dtype=torch.float64, requires_grad=True)
    if op == "backward_input":
        w = torch.tensor(inputs[1], dtype=torch.float64, requires_grad=True)
    if op == "backward_weight":
        x = torch.tensor(inputs[1], dtype=torch.float64, requires_grad=True)
    F.conv_transpose2d(x, w, b, p.stride, pad, p.output_padding, p.groups, p.dilation).backward(gy)
    return {"backward_input": x, "backward_weight": w, "backward_bias": b}[op].grad.numpy()


def run_backend(name: str, device, op: str, p: Problem, inputs: tuple, config: dict | None = None):
    backend = backends.get(name)
    reason = backend.supports(p, device)
    if reason:
        pytest.skip(reason)
    space = backend.space(op, p, device)
    config = space.validate(backend.default_config(op, p, device) if config is None else config)
    return np.asarray(backend.prepare(op, p, device, config)(*inputs))


def test_expected_backends_available():
    """CI installs PoCL, pyopencl, triton and sets TRITON_INTERPRET=1: all built-in backends must run there."""
    names = {name for name, _ in (p.values for p in BACKENDS)}
    assert "numpy" in names
    for name in EXPECTED_IN_CI:
        ok, why = backends.get(name).available()
        require(ok, f"backend {name!r} ({why})")


@pytest.mark.parametrize("case", list(CASES))
def test_reference_matches_torch(case):
    for dtype in ("float64",):
        p = Problem.make(**CASES[case], dtype=dtype)
        for op in OPS:
            inputs = inputs_for(op, p, seed=1)
            expected = torch_reference(op, p, inputs)
            if expected is not None:
                np.testing.assert_allclose(reference.run(op, p, inputs), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,device", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", OPS)
def test_op_matches_reference_and_torch(name, device, op, case):
    p = Problem.make(**CASES[case])
    inputs = inputs_for(op, p, seed=sum(map(ord, case)))
    out = run_backend(name, device, op, p, inputs)
    assert_close(out, reference.run(op, p, inputs), op, p, f"{name} {op} {case} vs reference")
    expected = torch_reference(op, p, inputs)
    if expected is not None:
        assert_close(out, expected, op, p, f"{name} {op} {case} vs torch")


@pytest.mark.parametrize("name,device", BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_several_configs(name, device, op):
    """Every backend's space: a few valid configs of each op give the reference's answer."""
    backend = backends.get(name)
    for case in ("groups", "dilation_op", "asymmetric", "k_eq_s_cropped"):
        p = Problem.make(**CASES[case])
        space = backend.space(op, p, device)
        configs = sample_configs(space, 3 if device.kind == "interpreter" else 6, seed=len(case))
        assert configs, f"{name} {op} {case}: no valid config in the space"
        inputs = inputs_for(op, p, seed=7)
        ref = reference.run(op, p, inputs)
        for config in configs:
            assert_close(run_backend(name, device, op, p, inputs, config), ref, op, p, f"{name} {op} {config}")


@pytest.mark.parametrize("name,device", BACKENDS)
def test_adjoint_identities(name, device):
    """<gy, convT(x, w)> = <backward_input(gy, w), x> = <backward_weight(gy, x), w>."""
    for case in ("groups", "dilation_op", "crop_beyond_k"):
        p = Problem.make(**{**CASES[case], "bias": False})
        x, w, _ = inputs_for("forward", p, seed=3)
        gy = np.random.default_rng(4).standard_normal(p.output_shape).astype(np.float32)
        y = run_backend(name, device, "forward", p, (x, w, None))
        gx = run_backend(name, device, "backward_input", p, (gy, w))
        gw = run_backend(name, device, "backward_weight", p, (gy, x))
        lhs = float(np.vdot(gy.astype(np.float64), y))
        scale = np.sqrt(gy.size) * max(1.0, np.abs(y).max())
        assert abs(lhs - float(np.vdot(gx.astype(np.float64), x))) <= 1e-4 * scale, case
        assert abs(lhs - float(np.vdot(gw.astype(np.float64), w))) <= 1e-4 * scale, case


@st.composite
def problems(draw, max_size: int = 6) -> Problem:
    """Random valid problems, small enough for the Triton interpreter."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    op = tuple(draw(st.integers(0, max(s[i], d[i]) - 1)) for i in (0, 1))
    H, W = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    full = ((H - 1) * s[0] + d[0] * (k[0] - 1) + 1, (W - 1) * s[1] + d[1] * (k[1] - 1) + 1)
    pads = tuple(tuple(draw(st.integers(0, max(0, (full[i] + op[i] - 1) // 2))) for _ in range(2)) for i in (0, 1))
    return Problem.make(N=draw(st.integers(1, 2)), C_in=groups * draw(st.integers(1, 3)), H=H, W=W,
                        C_out=groups * draw(st.integers(1, 3)), kH=k[0], kW=k[1], stride=s, padding=pads,
                        output_padding=op, dilation=d, groups=groups, bias=draw(st.booleans()))


@pytest.mark.parametrize("name,device", BACKENDS)
def test_random_problems(name, device):
    examples = 6 if device.kind == "interpreter" else 40

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(p=problems(), op=st.sampled_from(OPS))
    def check(p, op):
        inputs = inputs_for(op, p, seed=11)
        out = run_backend(name, device, op, p, inputs)
        assert_close(out, reference.run(op, p, inputs), op, p, f"{name} {op} {p.key}")
        expected = torch_reference(op, p, inputs)
        if expected is not None:
            assert_close(out, expected, op, p, f"{name} {op} {p.key} vs torch")

    check()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(p=problems(max_size=5))
def test_reference_random_problems_match_torch(p):
    p = p.with_dtype("float64")
    for op in OPS:
        inputs = inputs_for(op, p, seed=5)
        expected = torch_reference(op, p, inputs)
        if expected is not None:
            np.testing.assert_allclose(reference.run(op, p, inputs), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", ["dilation_op", "asymmetric", "groups"])
def test_reference_gradients_by_finite_differences(case):
    """The reference's gradients against central differences of its own forward, in float64."""
    p = Problem.make(**CASES[case], dtype="float64")
    x, w, b = inputs_for("forward", p, seed=2)
    gy = np.random.default_rng(9).standard_normal(p.output_shape)

    def loss(x_, w_, b_):
        return float(np.vdot(gy, reference.forward(p, x_, w_, b_)))

    rng = np.random.default_rng(0)
    h = 1e-6
    for name, arr, grad in (("x", x, reference.backward_input(p, gy, w)), ("w", w, reference.backward_weight(p, gy, x)),
                            ("b", b, reference.backward_bias(p, gy))):
        if arr is None:
            continue
        for _ in range(5):
            idx = tuple(rng.integers(0, n) for n in arr.shape)
            plus, minus = arr.astype(np.float64).copy(), arr.astype(np.float64).copy()
            plus[idx] += h
            minus[idx] -= h
            args = {"x": (x, w, b), "w": (x, w, b), "b": (x, w, b)}[name]
            lp = loss(*[plus if a is arr else a for a in args])
            lm = loss(*[minus if a is arr else a for a in args])
            assert abs((lp - lm) / (2 * h) - grad[idx]) <= 1e-5 * max(1.0, abs(grad[idx])), (name, idx)


@pytest.mark.parametrize("name,device", BACKENDS)
def test_float64_where_supported(name, device):
    p = Problem.make(**CASES["dilation_op"], dtype="float64")
    if backends.get(name).supports(p, device):
        pytest.skip(f"{name} does not compute float64: {backends.get(name).supports(p, device)}")
    for op in OPS:
        inputs = inputs_for(op, p, seed=1)
        assert_close(run_backend(name, device, op, p, inputs), reference.run(op, p, inputs), op, p, f"{name} {op}")
