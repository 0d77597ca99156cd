"""The numpy backend's own rules: its backward `phase` algorithm (gy in stride phases, each tap a shifted run) on
random problems against the reference, over chunk boundaries; the `chunk` parameter's constraints and the value a
config recorded before it existed gets; and which algorithm the defaults pick."""

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
from backends.numpy import CHUNKS, NumpyBackend, _phase_layout

BACKEND = NumpyBackend()
DEVICE = BACKEND.devices()[0]


def _phase(op: str, p: Problem, batch_block: int = 0, chunk: int = CHUNKS[1]) -> dict:
    config = {"algorithm": "phase", "batch_block": batch_block}
    return BACKEND.space(op, p, DEVICE).validate({**config, "chunk": chunk} if op == "backward_input" else config)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems(), op=st.sampled_from(["backward_input", "backward_weight"]), batch_block=st.sampled_from([0, 1]))
def test_phase_matches_reference_on_random_problems(p, op, batch_block):
    if batch_block >= p.N:
        batch_block = 0
    inputs = inputs_for(op, p, seed=5)
    out = BACKEND.prepare(op, p, DEVICE, _phase(op, p, batch_block))(*inputs)
    assert_close(out, reference.run(op, p, inputs), op, p, f"numpy phase {op} {p.key}")


@pytest.mark.parametrize("op", ["backward_input", "backward_weight"])
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
    assert len(configs) == (4 if op == "backward_input" else 3)  # chunk 4096 only for the whole batch (L = 1525)
    for config in configs:
        assert_close(BACKEND.prepare(op, p, DEVICE, config)(*inputs), ref, op, p, f"{config}")


def test_chunk_constraints():
    p = Problem.make(N=1, C_in=8, H=16, W=16, C_out=8, kH=4, kW=4, stride=2, padding=1)  # L = 17*17 < 1024
    space = BACKEND.space("backward_input", p, DEVICE)
    assert "chunk" in space.params and "chunk" not in BACKEND.space("backward_weight", p, DEVICE).params
    # a config recorded before `chunk` existed ran another algorithm: it reads as chunk 0
    assert space.validate({"algorithm": "im2col", "batch_block": 0}) == {"algorithm": "im2col", "batch_block": 0,
                                                                          "chunk": 0}
    with pytest.raises(ConfigError, match="phase algorithm alone"):
        space.validate({"algorithm": "phase", "batch_block": 0})
    with pytest.raises(ConfigError, match="phase algorithm alone"):
        space.validate({"algorithm": "per_tap", "batch_block": 0, "chunk": 4096})
    with pytest.raises(ConfigError, match="repeats chunk=1024"):
        space.validate({"algorithm": "phase", "batch_block": 0, "chunk": 4096})
    assert space.validate({"algorithm": "phase", "batch_block": 0, "chunk": 1024})["chunk"] == 1024


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


def test_phases_no_tap_reads_are_left_out():
    """Stride > kernel: of the 3x4 stride phases, only those the 2x2 taps land in are built (and the answer holds)."""
    p = Problem.make(N=2, C_in=3, H=5, W=4, C_out=2, kH=2, kW=2, stride=(3, 4), output_padding=(2, 1))
    assert _phase_layout(p, p.N).phases == ((0, 0), (0, 1), (1, 0), (1, 1))
    for op in ("backward_input", "backward_weight"):
        inputs = inputs_for(op, p, seed=2)
        out = BACKEND.prepare(op, p, DEVICE, _phase(op, p))(*inputs)
        assert_close(out, reference.run(op, p, inputs), op, p, f"numpy phase {op}")
