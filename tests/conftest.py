"""Shared test helpers: which backends run here, random inputs, tolerances, and the CI rule that a missing
optional part fails instead of skipping."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import backends
from autotune.core import verify
from autotune.core.problem import Problem

TESTS = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Backends CI installs and must therefore be able to run (triton through TRITON_INTERPRET=1; torch on the CPU).
EXPECTED_IN_CI = ("numpy", "opencl", "triton", "torch")


def require(condition: bool, what: str) -> None:
    """Skip when an optional part is missing on a developer's machine; fail in CI, which installs everything."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is required in CI but missing")
        pytest.skip(f"{what} is not available here")


def backend_devices() -> list[tuple[str, backends.Device]]:
    """(backend name, device) for every available backend and each of its devices."""
    return [(t.backend.name, t.device) for t in backends.targets()[0]]


def register_plugin(monkeypatch: pytest.MonkeyPatch, directory: Path, name: str, target: str) -> None:
    """Register a backend through the registry's one external route, an `autotune.backends` entry point: installed
    metadata in `directory`, put on the path of this process and of its subprocesses (workers, CLI runs); the
    tests folder goes on the path too, for the plug-in's module."""
    info = directory / f"autotune_test_{name}-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: autotune-test-{name}\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{backends.ENTRY_POINT_GROUP}]\n{name} = {target}\n")
    paths = [str(directory), str(TESTS)]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")])))
    for p in reversed(paths):
        monkeypatch.syspath_prepend(p)
    backends.clear_cache()


def backend_params() -> list:
    return [pytest.param(name, device, id=f"{name}-{device.id}") for name, device in backend_devices()]


def inputs_for(op: str, p: Problem, seed: int = 0) -> tuple:
    """The inputs every check uses (verify.make_inputs), in the order of the prepared kernels' signatures."""
    return verify.make_inputs(op, p, seed)[0]


def assert_close(out, ref: np.ndarray, op: str, p: Problem, what: str = "") -> None:
    """The one correctness check (verify.compare) as a test assertion."""
    verdict = verify.compare(out, ref, op, p)
    assert verdict.ok, f"{what}: {verdict.reason}"


sample_configs = verify.sample_configs


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Empty user and shipped results directories; dispatch's caches cleared before and after."""
    from autotune import dispatch
    from autotune.core import results
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    user.mkdir()
    shipped.mkdir()
    monkeypatch.setenv(results.ENV_VAR, str(user))
    monkeypatch.setattr(results, "shipped_results_dir", lambda: shipped)
    dispatch.clear_cache()
    yield user, shipped
    dispatch.clear_cache()
