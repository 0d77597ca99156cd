"""Is this output correct? One answer, used by tuning trials, `autotune bench`, `autotune check` and the tests:
the inputs every check uses, the error allowed, the comparison, and the valid configs to sample from a space.

Inputs are uniform in [-1, 1], so every product in a sum is at most 1 in magnitude; a sum of K of them,
accumulated in float32 (float64 for float64 problems) and rounded to the dtype once, is off by at most about
K*eps_acc + |y|*eps_dtype. We allow 4x the accumulation bound (blocked and tree sums stay well inside it) plus twice
the output rounding; a wrong index or a missing tap moves an element by a whole product, far more for any sane K.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.core.problem import Problem
from autotune.core.space import Config, Space

_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def make_inputs(op: str, p: Problem, seed: int = 0) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(kernel inputs in the problem's dtype, the same values in float64 for the reference), in the order of the
    prepared kernels' signatures (None for an absent bias)."""
    rng = np.random.default_rng(seed)
    kernel_in: list[Any] = []
    exact: list[Any] = []
    for shape in p.operand_shapes(op):
        if shape is None:
            kernel_in.append(None)
            exact.append(None)
            continue
        values = rng.uniform(-1.0, 1.0, size=shape)
        if p.dtype == "bfloat16":  # NumPy has no bfloat16: torch tensors (only GPU backends offer this dtype)
            import torch
            t = torch.from_numpy(values).to(torch.bfloat16)
            kernel_in.append(t)
            exact.append(t.to(torch.float64).numpy())
        else:
            a = np.ascontiguousarray(values.astype(p.dtype))
            kernel_in.append(a)
            exact.append(a.astype(np.float64))
    return tuple(kernel_in), tuple(exact)


def reduction_length(op: str, p: Problem) -> int:
    """Terms summed into one output element, at most (the bias counts as one term of the forward)."""
    G = p.groups
    if op == "forward":
        return (p.C_in // G) * p.kH * p.kW + int(p.bias)
    if op == "backward_input":
        return (p.C_out // G) * p.kH * p.kW
    if op == "backward_weight":
        return p.N * p.H * p.W
    return p.N * p.output_size[0] * p.output_size[1]


def tolerance(op: str, p: Problem, magnitude: float | None = None) -> float:
    """Largest accepted |result - reference| for inputs from `make_inputs`; `magnitude` is max|reference| (its
    worst case, the reduction length, when not given)."""
    K = reduction_length(op, p)
    accumulate = _EPS["float64"] if p.dtype == "float64" else _EPS["float32"]
    y = K if magnitude is None else magnitude
    return 4.0 * K * accumulate + 2.0 * y * _EPS.get(p.dtype, _EPS["float32"]) + 1e-12


def as_float64(out: Any) -> np.ndarray:
    """A backend's result (NumPy array or torch tensor on any device) as a float64 NumPy array."""
    if type(out).__module__.startswith("torch"):
        out = out.detach().to("cpu").double().numpy()
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    max_abs_err: float
    tolerance: float
    reason: str  # empty when ok


def compare(out: Any, expected: np.ndarray, op: str, p: Problem) -> Verdict:
    """Check a result against the float64 reference of the same inputs."""
    got = as_float64(out)
    if got.shape != expected.shape:
        return Verdict(False, math.inf, 0.0, f"result shape {got.shape}, expected {expected.shape}")
    finite = bool(np.isfinite(got).all())
    err = float(np.max(np.abs(got - expected))) if got.size and finite else (0.0 if finite else math.inf)
    tol = tolerance(op, p, float(np.max(np.abs(expected))) if expected.size else 0.0)
    if err <= tol:
        return Verdict(True, err, tol, "")
    what = "non-finite values" if not finite else f"max |error| {err:.3g} > tolerance {tol:.3g}"
    return Verdict(False, err, tol, f"{what} against the reference")


def sample_configs(space: Space, count: int, seed: int = 0, exclude: Config | None = None) -> list[Config]:
    """Up to `count` distinct configs that satisfy the space's constraints, chosen at random but reproducibly
    (`exclude`: a config not to return, such as the default already checked)."""
    if count <= 0:
        return []
    rng = random.Random(seed)
    if space.size <= 4096:
        every = [c for c in space.grid() if space.violation(c) is None and c != exclude]
        rng.shuffle(every)
        return every[:count]
    valid: list[Config] = []
    seen = set()
    for _ in range(50 * count):
        c = {k: rng.choice(v) for k, v in space.params.items()}
        key = tuple(sorted(c.items()))
        if key not in seen and c != exclude and space.violation(c) is None:
            seen.add(key)
            valid.append(c)
            if len(valid) == count:
                break
    return valid
