"""`autotune inspect`'s library half without compiling for a GPU (the sm_90 compile is in tests/test_triton.py):
roofline arithmetic, GPU and arch names, backends without an ahead-of-time compiler, OpenCL through the local
driver."""

from __future__ import annotations

import pytest
from conftest import require

import backends
from autotune.core.problem import Problem
from autotune.inspect import GPUS, gpu_for, inspect_kernels, roofline, traffic_bytes
from autotune.problems import NamedProblem

LAYER = NamedProblem("tiny", Problem.make(N=1, C_in=8, H=4, W=4, C_out=8, kH=4, kW=4, stride=2, padding=1))


def test_roofline_and_names():
    p = LAYER.problem.with_dtype("bfloat16")
    assert traffic_bytes("forward", p) == 2 * (8 * 16 + 8 * 8 * 16 + 8 * 64)
    h100 = gpu_for(90)
    assert h100 is GPUS["h100"] and gpu_for(80) is GPUS["a100"] and gpu_for(90, "H200") is GPUS["h200"]
    tensor = roofline("forward", p, h100, "HGMMA", None)
    cuda_cores = roofline("forward", p, h100, "none", None)
    assert tensor["peak_unit"] == "bf16" and cuda_cores["peak_unit"] == "fp32"
    assert tensor["roofline_us"] <= cuda_cores["roofline_us"]
    assert roofline("forward", p, h100, "HGMMA", None, staging_bytes=10**9)["roofline_staged_us"] > 100
    f32 = p.with_dtype("float32")
    assert roofline("forward", f32, h100, "HGMMA", "tf32x3")["peak_unit"] == "tf32x3"
    with pytest.raises(ValueError, match="unknown GPU"):
        gpu_for(90, "v100")
    with pytest.raises(ValueError, match="no GPU known"):
        gpu_for(75)


def test_backend_without_ahead_of_time_compile_says_so():
    records = inspect_kernels([LAYER], backend="numpy", arch="sm_90", ops=("forward",))
    assert len(records) == 1 and "cannot compile its kernels ahead of time" in records[0]["error"]
    with pytest.raises(ValueError, match="sm_80 or sm_90"):
        inspect_kernels([LAYER], backend="numpy", arch="volta")


def test_opencl_through_the_local_driver():
    ok, why = backends.get("opencl").available()
    require(ok, f"opencl backend ({why})")
    records = inspect_kernels([LAYER], backend="opencl", arch="local", ops=("forward", "backward_weight"))
    assert records and all("error" not in r for r in records), records
    assert {r["arch"] for r in records} == {"local"} and all(r["shared_bytes"] >= 0 for r in records)
    assert all(r["registers"] is None and "private_bytes" in r for r in records)


def test_sass_instruction_mix():
    """Widths and families as cuobjdump prints them (predicated, 128/64/16-bit, asynchronous copies, TMA, wgmma,
    spills, atomics), without compiling anything."""
    from backends.triton.aot import parse_arch, sass_stats
    sass = "\n".join([
        "        /*0100*/                   LDG.E.128 R4, desc[UR6][R2.64] ;",
        "        /*0110*/              @!P0 LDG.E.64 R8, desc[UR6][R2.64+0x10] ;",
        "        /*0120*/               @P1 LDG.E.U16 R9, desc[UR6][R10.64] ;",
        "        /*0130*/                   LDGSTS.E.BYPASS.LTC128B.128 [R5], desc[UR6][R2.64] ;",
        "        /*0140*/                   UTMALDG.3D [UR8], [UR4] ;",
        "        /*0150*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;",
        "        /*0160*/                   STL [R1], R4 ;",
        "        /*0170*/                   STG.E.U16 desc[UR6][R2.64], R4 ;",
        "        /*0180*/                   RED.E.ADD.F32.FTZ.RN.STRONG.GPU desc[UR6][R2.64], R5 ;",
    ])
    s = sass_stats(sass)
    assert s["global_load_bits"] == {16: 1, 64: 1, 128: 2} and s["tma_loads"] == 1
    assert s["wide_load_fraction"] == 0.8  # (two 128-bit, one 64-bit, one TMA) of five
    assert s["tensor_core"] == "HGMMA" and s["tensor_core_ops"] == ["HGMMA.64x64x16.F32.BF16"]
    assert s["spill_stores"] == 1 and s["global_store_bits"] == {16: 1} and s["atomics"] == 1
    assert parse_arch("sm_90a") == 90 and parse_arch(80) == 80
