"""The numpy backend's own rules: its `phase` algorithms (backward: gy in stride phases; forward: x padded; each
tap a shifted run) on random problems against the reference, over chunk boundaries, with the runs copied or read in
place by direct BLAS calls; the `chunk` and `runs` parameters' constraints and the values a config recorded before
them gets; which algorithm the defaults pick; and `blas.gemm` itself against NumPy's matmul, with the operands it
refuses."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, inputs_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_backends import problems

from autotune.core import reference
from autotune.core.problem import Problem
from autotune.core.space import ConfigError
from backends.numpy import CHUNKS, NumpyBackend, _forward_layout, _phase_layout, blas

BACKEND = NumpyBackend()
DEVICE = BACKEND.devices()[0]


def _phase(op: str, p: Problem, batch_block: int = 0, chunk: int = CHUNKS[1], runs: str = "copied") -> dict:
    config = {"algorithm": "phase", "batch_block": batch_block}
    if op == "backward_input" or (op == "forward" and runs == "in_place"):
        config.update(chunk=chunk, runs=runs)
    return BACKEND.space(op, p, DEVICE).validate(config)


def _runs() -> list[str]:
    return ["copied", "in_place"] if blas.reason() is None else ["copied"]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems(), op=st.sampled_from(["forward", "backward_input", "backward_weight"]),
       batch_block=st.sampled_from([0, 1]), runs=st.sampled_from(["copied", "in_place"]))
def test_phase_matches_reference_on_random_problems(p, op, batch_block, runs):
    if batch_block >= p.N:
        batch_block = 0
    runs = runs if runs in _runs() else "copied"
    inputs = inputs_for(op, p, seed=5)
    out = BACKEND.prepare(op, p, DEVICE, _phase(op, p, batch_block, runs=runs))(*inputs)
    assert_close(out, reference.run(op, p, inputs), op, p, f"numpy phase {op} {runs} {p.key}")


@pytest.mark.parametrize("op", ["forward", "backward_input", "backward_weight"])
def test_phase_over_several_chunks(op):
    """Runs of GEMM columns cut across image and row boundaries: each chunk size in the space, and more chunks than
    one (L = GEMM columns > the smallest chunk), with groups, dilation, asymmetric padding and output_padding."""
    p = Problem.make(N=3, C_in=4, H=19, W=23, C_out=6, kH=3, kW=4, stride=(2, 3), padding=((1, 2), (0, 1)),
                     output_padding=(1, 0), dilation=(1, 2), groups=2)
    assert _phase_layout(p, p.N).L > CHUNKS[1]
    inputs = inputs_for(op, p, seed=9)
    ref = reference.run(op, p, inputs)
    space = BACKEND.space(op, p, DEVICE)
    configs = [c for c in space.grid() if c["algorithm"] == "phase" and space.violation(c) is None]
    # backward_input: chunk 4096 only for the whole batch (L = 1525), each with the runs copied or in place;
    # forward: the im2col, or runs in place in chunks of 1024 or (blocks of 2 and 3 images, L = 1040 and 1586) 4096
    expected = {"forward": 3 + 5 * (len(_runs()) - 1), "backward_input": 4 * len(_runs()), "backward_weight": 3}
    assert len(configs) == expected[op]
    for config in configs:
        assert_close(BACKEND.prepare(op, p, DEVICE, config)(*inputs), ref, op, p, f"{config}")


def test_chunk_constraints():
    p = Problem.make(N=1, C_in=8, H=16, W=16, C_out=8, kH=4, kW=4, stride=2, padding=1)  # L = 17*17 < 1024
    space = BACKEND.space("backward_input", p, DEVICE)
    assert "chunk" in space.params and "chunk" not in BACKEND.space("backward_weight", p, DEVICE).params
    # a config recorded before `chunk` existed ran another algorithm: it reads as chunk 0; one recorded before
    # `runs` existed copied its runs
    assert space.validate({"algorithm": "im2col", "batch_block": 0}) == {"algorithm": "im2col", "batch_block": 0,
                                                                          "chunk": 0, "runs": "copied"}
    assert space.validate({"algorithm": "phase", "batch_block": 0, "chunk": 1024})["runs"] == "copied"
    with pytest.raises(ConfigError, match="runs applies to the phase algorithm alone"):
        space.validate({"algorithm": "im2col", "batch_block": 0, "chunk": 0, "runs": "in_place"})
    # forward: the chunk goes with the runs read in place; a phase config recorded before builds its im2col
    forward = BACKEND.space("forward", p, DEVICE)
    assert forward.validate({"algorithm": "phase", "batch_block": 0}) == {"algorithm": "phase", "batch_block": 0,
                                                                          "chunk": 0, "runs": "copied"}
    with pytest.raises(ConfigError, match="with runs=in_place alone"):
        forward.validate({"algorithm": "phase", "batch_block": 0, "chunk": 1024})
    with pytest.raises(ConfigError, match="with runs=in_place alone"):
        forward.validate({"algorithm": "phase", "batch_block": 0, "chunk": 0, "runs": "in_place"})
    with pytest.raises(ConfigError, match="phase algorithm alone"):
        space.validate({"algorithm": "phase", "batch_block": 0})
    with pytest.raises(ConfigError, match="phase algorithm alone"):
        space.validate({"algorithm": "per_tap", "batch_block": 0, "chunk": 4096})
    with pytest.raises(ConfigError, match="repeats chunk=1024"):
        space.validate({"algorithm": "phase", "batch_block": 0, "chunk": 4096})
    assert space.validate({"algorithm": "phase", "batch_block": 0, "chunk": 1024})["chunk"] == 1024


def test_runs_in_place_needs_the_blas(monkeypatch):
    """Without NumPy's BLAS at hand, in_place is pruned with the reason and the default copies its runs."""
    p = Problem.make(N=1, C_in=64, H=128, W=128, C_out=64, kH=4, kW=4, stride=2, padding=1)
    if blas.reason() is None:
        # superres_x2: 16512 GEMM columns (backward_input), 16770 (forward): one pass
        for op in ("forward", "backward_input"):
            assert BACKEND.default_config(op, p, DEVICE) == {"algorithm": "phase", "batch_block": 0,
                                                             "chunk": 65536, "runs": "in_place"}
    monkeypatch.setattr(blas, "_library", lambda: "no BLAS here")
    for op in ("forward", "backward_input"):
        space = BACKEND.space(op, p, DEVICE)
        assert "no BLAS here" in space.violation({"algorithm": "phase", "batch_block": 0, "chunk": 4096,
                                                  "runs": "in_place"})
    assert BACKEND.default_config("backward_input", p, DEVICE) == {"algorithm": "phase", "batch_block": 0,
                                                                    "chunk": 4096, "runs": "copied"}
    assert BACKEND.default_config("forward", p, DEVICE) == {"algorithm": "phase", "batch_block": 0, "chunk": 0,
                                                             "runs": "copied"}
    with pytest.raises(RuntimeError, match="no BLAS here"):
        blas.gemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), np.empty((2, 2), np.float32))


def test_blas_is_found_beside_numpys_wheel():
    """NumPy's PyPI wheels carry scipy-openblas: there the lookup must find its GEMMs (elsewhere it may not)."""
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if config.get("name") != "scipy-openblas":
        pytest.skip(f"NumPy here uses {config.get('name')}, not the wheel's scipy-openblas")
    assert blas.reason() is None and "openblas" in blas.describe()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blas_gemm_on_strided_views(dtype):
    """Every layout: rows or columns contiguous, leading dimensions wider than the row, beta 0 and 1, K = 0."""
    if blas.reason():
        pytest.skip(blas.reason())
    rng = np.random.default_rng(0)
    big = rng.standard_normal((40, 50)).astype(dtype)
    for a, b in [(big[:7, 3:12], big[20:29, 1:6]),  # both row-major, ld 50
                 (big[3:12, :7].T, big[20:29, 1:6]),  # a transposed
                 (big[:7, 3:12], big[1:6, 20:29].T),  # b transposed
                 (big[3:12, :7].T, big[1:6, 20:29].T),  # both
                 (big[:1, :9], big[10:19, :1]),  # a row and a column (strides of size-1 axes ignored)
                 (big[:7, :0], big[:0, :5])]:  # K = 0
        c0 = rng.standard_normal((a.shape[0], b.shape[1])).astype(dtype)
        for beta in (0.0, 1.0):
            frame = np.zeros((a.shape[0], b.shape[1] + 3), dtype)
            c = frame[:, 1:1 + b.shape[1]]  # a strided output too
            c[...] = c0
            blas.gemm(a, b, c, beta=beta)
            np.testing.assert_allclose(c, a @ b + beta * c0, rtol=1e-5, atol=1e-5)
            assert not frame[:, 0].any() and not frame[:, -2:].any()  # nothing written beside the view


def test_blas_gemm_refuses_what_blas_cannot_take():
    if blas.reason():
        pytest.skip(blas.reason())
    a = np.ones((4, 4), np.float32)
    out = np.zeros((4, 4), np.float32)
    for args, match in [((a[::2, ::2], a[:2, :4], out[:2]), "unit-stride"),
                        ((a, a, out[:, ::2][:, :2]), "do not match"),
                        ((a, a.astype(np.float64), out), "one dtype"),
                        ((a.astype(np.int32), a.astype(np.int32), out.astype(np.int32)), "one dtype"),
                        ((a, a, a), "apart from the operands"),
                        ((a, a, out.T), "rows must be contiguous"),
                        ((a[0], a, out), "2-D"),
                        ((np.lib.stride_tricks.as_strided(a, (4, 4), (8, 4)), a, out), "unit-stride")]:
        with pytest.raises(ValueError, match=match):
            blas.gemm(*args)


@pytest.mark.parametrize("shape,expected", [
    (dict(N=1, C_in=64, H=128, W=128, C_out=64, kH=4, kW=4, stride=2, padding=1), "phase"),  # superres_x2
    (dict(N=64, C_in=128, H=16, W=16, C_out=64, kH=4, kW=4, stride=2, padding=1), "im2col"),  # small images
    (dict(N=64, C_in=64, H=32, W=32, C_out=3, kH=4, kW=4, stride=2, padding=1), "im2col"),  # 3 output channels
    (dict(N=4, C_in=64, H=32, W=32, C_out=32, kH=2, kW=2, stride=2), "blocks"),  # one tap per pixel
])
def test_default_algorithm(shape, expected):
    p = Problem.make(**shape)
    for op in ("backward_input", "backward_weight"):
        config = BACKEND.default_config(op, p, DEVICE)
        assert BACKEND.space(op, p, DEVICE).validate(config) == config
        assert config["algorithm"] == expected, (op, config)
        out = BACKEND.prepare(op, p, DEVICE, config)(*inputs_for(op, p, seed=1))
        assert np.isfinite(out).all()


@pytest.mark.parametrize("shape,expected", [
    (dict(N=1, C_in=64, H=128, W=128, C_out=64, kH=4, kW=4, stride=2, padding=1), "phase"),  # superres_x2
    (dict(N=64, C_in=128, H=16, W=16, C_out=64, kH=4, kW=4, stride=2, padding=1), "phase"),  # dcgan_g3
    (dict(N=64, C_in=512, H=4, W=4, C_out=256, kH=4, kW=4, stride=2, padding=1), "col2im"),  # 4x4 images
    (dict(N=64, C_in=64, H=32, W=32, C_out=3, kH=4, kW=4, stride=2, padding=1), "col2im"),  # 3 output channels
    (dict(N=4, C_in=64, H=32, W=32, C_out=32, kH=2, kW=2, stride=2), "phase"),  # one tap per pixel: runs too
    (dict(N=4, C_in=8, H=32, W=32, C_out=8, kH=2, kW=2, stride=2), "blocks"),  # ... but not with 8 channels
])
def test_default_forward_algorithm(shape, expected):
    p = Problem.make(**shape)
    config = BACKEND.default_config("forward", p, DEVICE)
    assert BACKEND.space("forward", p, DEVICE).validate(config) == config
    assert config["algorithm"] == expected
    assert config["runs"] == ("in_place" if expected == "phase" and blas.reason() is None else "copied")
    inputs = inputs_for("forward", p, seed=1)
    assert_close(BACKEND.prepare("forward", p, DEVICE, config)(*inputs), reference.run("forward", p, inputs),
                 "forward", p, f"{config}")


@pytest.mark.parametrize("shape,shifts", [
    (dict(N=2, C_in=3, H=6, W=5, C_out=4, kH=4, kW=4, stride=2, padding=1), 4),  # k4 s2: 4 phases x 4 shifts
    (dict(N=1, C_in=2, H=3, W=4, C_out=3, kH=6, kW=3, stride=(3, 1), padding=(2, 1), groups=1), 6),  # 3x1 phases
    (dict(N=2, C_in=4, H=5, W=5, C_out=4, kH=4, kW=4, stride=2, padding=1, groups=2), 4),  # per group
    (dict(N=1, C_in=3, H=6, W=6, C_out=2, kH=3, kW=3, stride=2, padding=1), 0),  # k3 s2: phases of 1 and 2 taps
    (dict(N=1, C_in=3, H=6, W=6, C_out=2, kH=3, kW=3, stride=1, padding=1), 0),  # one phase: nothing to stack
])
def test_phases_stack_by_shift_where_every_phase_has_every_shift(shape, shifts):
    """Where every phase has one tap at every shift, the phases' runs at one shift are one GEMM operand (backward)
    or one GEMM result (forward): the layouts say so, and the answers hold."""
    p = Problem.make(**shape)
    stacked = [run for run in _phase_layout(p, p.N).runs if run[2] - run[1] > 1]  # runs over several phases
    assert len(_forward_layout(p).shifts) == shifts and len(stacked) == shifts
    for op in ("forward", "backward_input", "backward_weight"):
        inputs = inputs_for(op, p, seed=4)
        ref = reference.run(op, p, inputs)
        for runs in _runs():
            out = BACKEND.prepare(op, p, DEVICE, _phase(op, p, runs=runs))(*inputs)
            assert_close(out, ref, op, p, f"numpy phase {op} {runs}")


def test_col2im_with_the_batch_innermost():
    """Many images narrower than a quarter of the batch: col2im adds its taps along the batch (and not for a batch
    block of 2); groups, dilation, asymmetric padding and output_padding included."""
    p = Problem.make(N=9, C_in=4, H=3, W=2, C_out=6, kH=3, kW=4, stride=(2, 3), padding=((1, 2), (0, 1)),
                     output_padding=(1, 0), dilation=(1, 2), groups=2, bias=True)
    inputs = inputs_for("forward", p, seed=6)
    ref = reference.run("forward", p, inputs)
    for batch_block in (0, 2):
        config = BACKEND.space("forward", p, DEVICE).validate({"algorithm": "col2im", "batch_block": batch_block})
        assert_close(BACKEND.prepare("forward", p, DEVICE, config)(*inputs), ref, "forward", p, f"{config}")


def test_phases_no_tap_reads_are_left_out():
    """Stride > kernel: of the 3x4 stride phases, only those the 2x2 taps land in are built (and the answer holds)."""
    p = Problem.make(N=2, C_in=3, H=5, W=4, C_out=2, kH=2, kW=2, stride=(3, 4), output_padding=(2, 1))
    assert _phase_layout(p, p.N).phases == ((0, 0), (0, 1), (1, 0), (1, 1))
    for op in ("backward_input", "backward_weight"):
        inputs = inputs_for(op, p, seed=2)
        out = BACKEND.prepare(op, p, DEVICE, _phase(op, p))(*inputs)
        assert_close(out, reference.run(op, p, inputs), op, p, f"numpy phase {op}")
    # the forward's runs: output phases no tap writes are zeros
    layout = _forward_layout(p)
    assert len(layout.phases) == 4 and len(layout.empty) == 3 * 4 - 4
    inputs = inputs_for("forward", p, seed=2)
    for runs in _runs():
        out = BACKEND.prepare("forward", p, DEVICE, _phase("forward", p, runs=runs))(*inputs)
        assert_close(out, reference.run("forward", p, inputs), "forward", p, f"numpy phase forward {runs}")
