"""A new device (issue 12): device-aware defaults, reuse of other devices' results (the `transfer` rule),
first-call tuning, seeded and abandoning studies, the OpenCL binary cache."""

from __future__ import annotations

import pytest
from conftest import require

import backends
from autotune.core import devices
from autotune.core.problem import Problem
from backends.base import Device

P = Problem.make(2, 64, 8, 8, 64, 4, 4, stride=2, padding=1)


# ---- 1. device-aware defaults --------------------------------------------------------------------------------
def test_cpu_features_has_safe_values() -> None:
    f = devices.cpu_features()
    assert f["simd_bits"] in (128, 256, 512) and f["float_lanes"] == f["simd_bits"] // 32
    assert f["registers"] in (16, 32) and f["cores"] >= 1
    assert ("avx512f" in f["flags"]) == (f["simd_bits"] == 512)


def _fake_cl_device(kind: str, **info: int) -> Device:
    base = {"max_work_group_size": 4096, "local_mem_size": 1 << 20, "global_mem_size": 8 << 30,
            "max_mem_alloc_size": 2 << 30, "compute_units": 2, "fp64": True}
    return Device(id=f"{kind}-test-x-1c", name="test", kind=kind, info={**base, **info})


@pytest.mark.parametrize("width", [4, 8, 16])
def test_opencl_default_follows_the_preferred_vector_width(width: int) -> None:
    ocl = backends.get("opencl")
    dev = _fake_cl_device("cpu", preferred_vector_width_float=width)
    for op in ("forward", "backward_input", "backward_weight", "backward_bias"):
        cfg = ocl.default_config(op, P, dev)
        assert cfg["vec"] <= width, (op, cfg)
        assert ocl.space(op, P, dev).violation(cfg) is None


def test_opencl_default_no_16_wide_vectors_without_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    import backends.opencl as ocl_mod
    monkeypatch.setattr(ocl_mod, "cpu_features", lambda: {"float_lanes": 8, "registers": 16})
    dev = _fake_cl_device("cpu")  # reports no vector width: the CPU's ISA decides
    cfg = backends.get("opencl").default_config("forward", P, dev)
    assert cfg["vec"] == 8
    # half the 16 AVX2 registers hold accumulators
    assert cfg["co_block"] * cfg["tile_h"] * cfg["tile_w"] <= 8


def test_opencl_default_on_a_gpu_uses_its_width_and_work_groups() -> None:
    dev = _fake_cl_device("gpu", preferred_vector_width_float=1, max_work_group_size=1024)
    cfg = backends.get("opencl").default_config("forward", P, dev)
    assert cfg["vec"] == 1 and cfg["wg_x"] * cfg["wg_y"] >= 32


def test_opencl_real_device_default_matches_its_width() -> None:
    ocl = backends.get("opencl")
    ok, why = ocl.available()
    require(ok, f"the opencl backend ({why})")
    from backends.opencl import device_traits
    dev = ocl.devices()[0]
    assert backends.get("opencl").default_config("forward", P, dev)["vec"] <= device_traits(dev)["vec_width"]


def test_numpy_default_workspace_from_the_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    import backends.numpy as np_mod
    monkeypatch.setattr(np_mod, "cpu_features", lambda: {"l3_bytes": 128 << 20, "l2_bytes": 0, "cores": 4})
    assert np_mod.default_workspace_bytes() == 32 << 20
    monkeypatch.setattr(np_mod, "cpu_features", lambda: {"l3_bytes": 0, "l2_bytes": 0, "cores": 4})
    assert np_mod.default_workspace_bytes() == np_mod.DEFAULT_WORKSPACE_BYTES
