"""Shared test helpers: which backends run here, random inputs, tolerances, and the CI rule that a missing
optional part fails instead of skipping."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import backends
from autotune.problem import Problem

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Backends CI installs and must therefore be able to run (triton through TRITON_INTERPRET=1).
EXPECTED_IN_CI = ("numpy", "opencl", "triton")


def require(condition: bool, what: str) -> None:
    """Skip when an optional part is missing on a developer's machine; fail in CI, which installs everything."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required in CI but missing")
        pytest.skip(f"{what} is not available here")


def backend_devices() -> list[tuple[str, backends.Device]]:
    """(backend name, device) for every available backend and each of its devices."""
    out = []
    for name in backends.names():
        backend = backends.get(name)
        ok, _ = backend.available()
        if ok:
            out.extend((name, d) for d in backend.devices())
    return out


def backend_params() -> list:
    return [pytest.param(name, device, id=f"{name}-{device.id}") for name, device in backend_devices()]


def inputs_for(op: str, p: Problem, seed: int = 0) -> tuple:
    """Random inputs in the order of the prepared kernels' signatures."""
    rng = np.random.default_rng(seed)
    return tuple(None if s is None else rng.standard_normal(s).astype(p.dtype) for s in p.operand_shapes(op))


def reduction_length(op: str, p: Problem) -> int:
    """How many products are summed per output element, at most (sizes the float32 tolerance)."""
    taps = p.kH * p.kW
    if op == "forward":
        return (p.C_in // p.groups) * taps
    if op == "backward_input":
        return (p.C_out // p.groups) * taps
    if op == "backward_weight":
        return p.N * p.H * p.W
    return p.N * p.output_size[0] * p.output_size[1]


def assert_close(out, ref: np.ndarray, op: str, p: Problem, what: str = "") -> None:
    out = np.asarray(out, dtype=np.float64)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    eps = {"float64": 1e-12, "float32": 2e-6, "float16": 2e-3, "bfloat16": 1e-2}[p.dtype]
    # Each output is a sum of unit-variance products: its rounding error grows like sqrt(length).
    tol = eps * 8 * np.sqrt(reduction_length(op, p)) * max(1.0, float(np.abs(ref).max(initial=0.0)) ** 0.5)
    err = float(np.abs(out - ref).max(initial=0.0))
    assert np.isfinite(out).all(), f"{what}: non-finite values"
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def sample_configs(space: backends.Space, count: int, seed: int = 0) -> list[dict]:
    """Up to `count` distinct configs that satisfy the space's constraints, chosen at random but reproducibly."""
    rng = random.Random(seed)
    valid = []
    if space.size <= 4096:
        valid = [c for c in space.grid() if space.violation(c) is None]
        rng.shuffle(valid)
        return valid[:count]
    seen = set()
    for _ in range(50 * count):
        c = {k: rng.choice(v) for k, v in space.params.items()}
        key = tuple(sorted(c.items()))
        if key not in seen and space.violation(c) is None:
            seen.add(key)
            valid.append(c)
            if len(valid) == count:
                break
    return valid
