"""Tests specific to the `opencl` backend: its space and device-derived constraints, config validation before any
build, the build cache, broken or missing platforms, refusal of problems too large for the device, and several
configs of each op against the reference (the shared suite in test_backends.py checks the defaults)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close, inputs_for, require, sample_configs

import backends
from autotune.core import reference
from autotune.core.devices import cpu_device_id
from autotune.core.problem import OPS, Problem
from autotune.core.timing import measure
from autotune.problems import load_problems
from backends.base import ConfigError, Space
from backends.opencl import OpenCLBackend

SMALL = {
    "phase_groups_asym": Problem.make(2, 4, 5, 6, 6, 3, 3, stride=2, padding=((1, 0), (2, 1)), output_padding=1,
                                      groups=2, bias=True),
    "dilated_odd_stride": Problem.make(1, 3, 7, 5, 5, 4, 3, stride=(3, 2), padding=1, output_padding=(2, 1),
                                       dilation=(2, 1), bias=True),
    "dcgan_like": Problem.make(2, 8, 4, 4, 20, 4, 4, stride=2, padding=1),
    "stride_gt_kernel": Problem.make(1, 2, 4, 3, 3, 2, 2, stride=(3, 4), output_padding=(2, 1), bias=True),
}


@pytest.fixture(scope="module")
def ocl() -> OpenCLBackend:
    backend = backends.get("opencl")
    ok, why = backend.available()
    require(ok, f"the opencl backend ({why})")
    return backend  # type: ignore[return-value]


@pytest.fixture(scope="module")
def device(ocl: OpenCLBackend) -> backends.Device:
    return ocl.devices()[0]


def test_import_is_lazy() -> None:
    code = ("import sys, autotune, backends, backends.opencl; "
            "b = backends.get('opencl'); "
            "assert 'pyopencl' not in sys.modules, 'pyopencl imported too early'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_pyopencl_is_unavailable_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = OpenCLBackend()

    def no_pyopencl():
        raise ImportError("No module named 'pyopencl'")
    monkeypatch.setattr(backend, "_import", no_pyopencl)
    ok, why = backend.available()
    assert not ok
    assert "pyopencl" in why and "convt-autotune[opencl]" in why and "pocl-opencl-icd" in why
    assert backend.devices() == []


class _FakePlatform:
    def __init__(self, name: str, devices: list | None = None, error: Exception | None = None) -> None:
        self.name, self._devices, self._error = name, devices or [], error

    def get_devices(self) -> list:
        if self._error:
            raise self._error
        return self._devices


class _FakeHandle:
    name = "generic-cpu"


def _with_broken_platforms(monkeypatch: pytest.MonkeyPatch, keep_real: bool) -> OpenCLBackend:
    """A fresh backend whose platform list has a broken driver (its trivial build fails, as PyPI's PoCL wheel does
    on these CPUs) and a platform that cannot even list devices, plus the real platforms when `keep_real`."""
    backend = OpenCLBackend()
    real_make = backend._make_device
    real_platforms = backend._platforms

    def platforms(cl):
        fake = [_FakePlatform("Broken PoCL wheel", [_FakeHandle()]),
                _FakePlatform("Dead ICD", error=RuntimeError("clGetDeviceIDs failed: DEVICE_NOT_FOUND"))]
        return (list(real_platforms(cl)) if keep_real else []) + fake

    def make_device(cl, plat, handle):
        if isinstance(handle, _FakeHandle):
            raise RuntimeError("clBuildProgram failed: BUILD_PROGRAM_FAILURE - error: unknown target CPU 'generic'")
        return real_make(cl, plat, handle)
    monkeypatch.setattr(backend, "_platforms", platforms)
    monkeypatch.setattr(backend, "_make_device", make_device)
    return backend


def test_broken_platform_reported_and_others_used(monkeypatch: pytest.MonkeyPatch, ocl: OpenCLBackend) -> None:
    backend = _with_broken_platforms(monkeypatch, keep_real=True)
    ok, why = backend.available()
    assert ok, why
    assert [d.id for d in backend.devices()] == [d.id for d in ocl.devices()]
    broken = dict(backend.broken())
    assert "unknown target CPU 'generic'" in broken["Broken PoCL wheel / generic-cpu"]
    assert "DEVICE_NOT_FOUND" in broken["Dead ICD"]
    # The working device still computes.
    p = SMALL["dcgan_like"]
    dev = backend.devices()[0]
    x, w, b = inputs_for("forward", p)
    out = backend.prepare("forward", p, dev, backend.default_config("forward", p, dev))(x, w, b)
    assert_close(out, reference.forward(p, x, w, b), "forward", p)


def test_all_platforms_broken_is_unavailable_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _with_broken_platforms(monkeypatch, keep_real=False)
    ok, why = backend.available()
    assert not ok
    assert "unknown target CPU 'generic'" in why and "DEVICE_NOT_FOUND" in why and "pocl-opencl-icd" in why
    assert backend.devices() == []


def test_cpu_device_shares_the_cpu_id(ocl: OpenCLBackend) -> None:
    cpus = [d for d in ocl.devices() if d.kind == "cpu"]
    for d in cpus:
        assert d.id == cpu_device_id()
    ids = [d.id for d in ocl.devices()]
    assert len(ids) == len(set(ids))
    assert "pyopencl" in ocl.version()


def test_space_constraints_come_from_the_device(ocl: OpenCLBackend, device: backends.Device) -> None:
    p = load_problems()[2].problem  # dcgan_g1: 512 input channels, 4x4 kernel
    tiny = dataclasses.replace(device, info={**device.info, "max_work_group_size": 16, "local_mem_size": 4096})
    space = ocl.space("forward", p, tiny)
    base = ocl.default_config("forward", p, tiny)
    assert space.violation(base) is None
    assert "work-group" in space.violation({**base, "wg_x": 32, "wg_y": 1})
    assert "local memory" in space.violation({**base, "local": 1, "wg_y": 1})
    assert "wg_y == 1" in space.violation({**base, "local": 1, "wg_y": 2})
    assert "register tile" in space.violation({**base, "tile_h": 8, "tile_w": 8, "vec": 16, "co_block": 4})
    # On the real device the same local staging fits.
    big = ocl.space("forward", p, device)
    assert big.violation({**base, "local": 1, "wg_y": 1, "vec": 4, "co_block": 1}) is None
    assert set(space.params["algorithm"]) == {"phase", "direct"}
    for name in ("wg_x", "wg_y", "tile_h", "tile_w", "co_block", "vec", "local"):
        assert name in space.params
    wspace = ocl.space("backward_weight", p, tiny)
    assert {"split", "c_tile", "vec", "co_block", "wg_x", "wg_y"} <= set(wspace.params)


def test_default_config_valid_for_every_suite_problem(ocl: OpenCLBackend, device: backends.Device) -> None:
    for named in load_problems():
        for op in OPS:
            p = named.problem.for_op(op)
            space = ocl.space(op, p, device)
            assert space.validate(ocl.default_config(op, p, device))


@pytest.mark.parametrize("bad", [
    {"vec": "16 -DX=1"},            # text aimed at build options
    {"vec": "16"},                  # right digits, wrong type
    {"vec": 16.0},                  # a float that equals an allowed int
    {"vec": 3},                     # not an allowed value
    {"tile_w": True},               # bool is not an int here
    {"algorithm": "phase\n#define M 0"},
    {"unroll_hack": 1},             # unknown parameter
])
def test_bad_configs_rejected_before_any_build(ocl: OpenCLBackend, device: backends.Device, bad: dict) -> None:
    p = SMALL["dcgan_like"]
    space = ocl.space("forward", p, device)
    builds = device.handle.builds
    with pytest.raises(ConfigError):
        space.complete(bad, ocl.default_config("forward", p, device))
    assert device.handle.builds == builds


def test_defines_must_be_ints() -> None:
    from backends.opencl import _fmt
    assert _fmt({"VEC": 4, "TH": 2}) == ["-DTH=2", "-DVEC=4"]
    with pytest.raises(TypeError):
        _fmt({"VEC": "4 -cl-fast-relaxed-math"})
    with pytest.raises(ValueError):
        _fmt({"VEC=1 -DX": 4})


def test_build_cache(ocl: OpenCLBackend, device: backends.Device) -> None:
    p = Problem.make(1, 3, 5, 5, 4, 3, 3, stride=2, padding=1)
    c = {**ocl.default_config("forward", p, device), "tile_w": 2, "tile_h": 2}
    first = ocl.prepare("forward", p, device, c)
    builds = device.handle.builds
    assert ocl.prepare("forward", p, device, c) is first
    ocl._prepared.clear()  # a new prepared op for the same (device, source, defines) reuses the program
    again = ocl.prepare("forward", p, device, c)
    assert again is not first and device.handle.builds == builds
    ocl.prepare("forward", p, device, {**c, "tile_w": 4})  # another config: one more build of the main program
    assert device.handle.builds == builds + 1


def test_problem_too_large_refused_before_allocating(ocl: OpenCLBackend, device: backends.Device,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p = Problem.make(64, 256, 32, 32, 128, 4, 4, stride=2, padding=1)  # ~130 MB of buffers
    small = dataclasses.replace(device, info={**device.info, "global_mem_size": 64 << 20,
                                              "max_mem_alloc_size": 1 << 30})
    from backends import opencl

    def no_alloc(*args, **kwargs):
        raise AssertionError("allocated device memory for a problem that does not fit")
    monkeypatch.setattr(opencl, "Prepared", no_alloc)
    with pytest.raises(ValueError, match="too large"):
        ocl.prepare("forward", p, small, ocl.default_config("forward", p, small))
    huge = Problem.make(1024, 1024, 256, 256, 64, 2, 2, stride=2)  # x alone is 256 GiB
    assert "largest allocation" in ocl.supports(huge, device)
    with pytest.raises(ValueError, match="largest allocation"):
        ocl.prepare("forward", huge, device, ocl.default_config("forward", huge, device))


def test_float64_needs_fp64(ocl: OpenCLBackend, device: backends.Device) -> None:
    p = SMALL["dcgan_like"].with_dtype("float64")
    no_fp64 = dataclasses.replace(device, info={**device.info, "fp64": False})
    assert "cl_khr_fp64" in ocl.supports(p, no_fp64)
    assert "float16" in ocl.supports(SMALL["dcgan_like"].with_dtype("float16"), device)
    if device.info["fp64"]:
        assert ocl.supports(p, device) is None


def _small_tile(c: dict) -> str | None:
    n = c.get("tile_h", 1) * c.get("tile_w", 1) * c.get("c_tile", 1) * c.get("co_block", 1) * c["vec"]
    return "big tile" if n > 64 else None


@pytest.mark.parametrize("case", sorted(SMALL))
@pytest.mark.parametrize("op", OPS)
def test_several_configs_match_reference(ocl: OpenCLBackend, device: backends.Device, op: str, case: str) -> None:
    p = SMALL[case].for_op(op)
    space = ocl.space(op, p, device)
    # Random points of the space, kept to small register tiles: PoCL takes seconds to build the largest ones.
    small = Space(dict(space.params), [*space.constraints, _small_tile])
    configs = [ocl.default_config(op, p, device)] + sample_configs(small, 1 if op == "forward" else 2,
                                                                   seed=sorted(SMALL).index(case))
    if op == "forward":  # both algorithms, both vector axes, with and without local staging
        base = {**configs[0], "algorithm": "phase", "vec_axis": "co", "local": 0}
        configs += [{**base, "algorithm": "direct"}, {**base, "local": 1, "wg_y": 1},
                     {**base, "vec_axis": "w", "vec": 4, "tile_w": 2, "tile_h": 2, "co_block": 2}]
    if op in ("forward", "backward_input"):  # barriers in the k loop, with idle work-items past the last tile
        configs.append({**configs[0], "vec_axis": "co", "local": 0, "k_block": 16, "wg_x": 32})
    inputs = inputs_for(op, p, seed=1)
    ref = reference.run(op, p, inputs)
    for c in configs:
        c = space.validate(c)
        out = ocl.prepare(op, p, device, c)(*inputs)
        assert_close(out, ref, op, p, what=f"{op} {case} {c}")


@pytest.mark.parametrize("op", OPS)
def test_float64(ocl: OpenCLBackend, device: backends.Device, op: str) -> None:
    if not device.info["fp64"]:
        pytest.skip("device lacks cl_khr_fp64")  # PoCL has it; only other drivers take this branch
    p = SMALL["phase_groups_asym"].with_dtype("float64").for_op(op)
    inputs = inputs_for(op, p, seed=2)
    out = ocl.prepare(op, p, device, ocl.default_config(op, p, device))(*inputs)
    assert out.dtype == np.float64
    assert_close(out, reference.run(op, p, inputs), op, p)


def test_runner_times_device_work(ocl: OpenCLBackend, device: backends.Device) -> None:
    """The runner times the call with host arrays (copies included, issue 11); `device_runner` the kernels only."""
    p = SMALL["dcgan_like"]
    inputs = inputs_for("backward_weight", p)
    kernel = ocl.prepare("backward_weight", p, device, ocl.default_config("backward_weight", p, device))
    for run in (ocl.runner(kernel, inputs, device), ocl.device_runner(kernel, inputs, device)):
        seconds = run()
        assert isinstance(seconds, float) and seconds > 0
        t = measure(run, budget_s=0.05, min_reps=2)
        assert t.reps >= 2 and t.median_s > 0
    calls = []
    real = kernel.upload
    kernel.upload = lambda inp: calls.append(1) or real(inp)  # type: ignore[method-assign]
    try:
        ocl.runner(kernel, inputs, device)()
    finally:
        del kernel.upload
    assert calls == [1]  # each timed run stages the host arrays, as a user's call does


def test_a_trial_records_both_times(ocl: OpenCLBackend, device: backends.Device) -> None:
    """Issue 11: a tuning trial records the call's time (host arrays, staging included) and, beside it, the
    kernel-only device time of `device_runner`; re-timing measures both for each config, interleaved."""
    from autotune.tuner.trial import retime, run_trial

    p = SMALL["dcgan_like"].for_op("backward_weight")
    config = ocl.default_config("backward_weight", p, device)
    request = {"backend": "opencl", "device": device.id, "op": "backward_weight", "problem": p.key,
               "config": config, "budget_s": 0.02}
    out = run_trial(request)
    assert out["status"] == "ok", out
    assert 0 < out["device_time_s"] and out["device_time_s"] != out["time_s"]
    again = retime({**{k: v for k, v in request.items() if k != "config"}, "configs": [config, config], "rounds": 2})
    assert [r["status"] for r in again["results"]] == ["ok", "ok"]
    assert all(r["rounds"] == 2 and r["device_time_s"] > 0 and r["reps"] >= 2 for r in again["results"])


def test_wrong_inputs_rejected(ocl: OpenCLBackend, device: backends.Device) -> None:
    p = SMALL["phase_groups_asym"]  # has a bias
    x, w, b = inputs_for("forward", p)
    kernel = ocl.prepare("forward", p, device, ocl.default_config("forward", p, device))
    with pytest.raises(ValueError, match="x: expected shape"):
        kernel(x[:1], w, b)
    with pytest.raises(ValueError, match="bias"):
        kernel(x, w, None)
    q = p.for_op("backward_input")
    gy, w = inputs_for("backward_input", q)
    gx = ocl.prepare("backward_input", q, device, ocl.default_config("backward_input", q, device))
    with pytest.raises(ValueError, match="w: expected shape"):
        gx(gy, w.reshape(w.shape[0], -1))


def test_defaults_follow_the_heuristics(ocl: OpenCLBackend, device: backends.Device) -> None:
    """The defaults are the measured choices, not a fallback point of the grid."""
    by_name = {n.name: n.problem for n in load_problems()}
    fwd = ocl.default_config("forward", by_name["dcgan_g1"], device)
    from backends.opencl import device_traits
    traits = device_traits(device)  # issue 12: the vector width and register budget are the device's
    assert (fwd["vec_axis"], fwd["vec"], fwd["wg_x"]) == ("co", traits["vec_width"], 8)
    assert fwd["co_block"] * fwd["tile_h"] * fwd["tile_w"] == max(4, traits["registers"] // 2)
    few = ocl.default_config("forward", by_name["dcgan_rgb"], device)
    assert (few["vec_axis"], few["algorithm"], few["k_block"]) == ("w", "phase", 0)
    assert ocl.default_config("backward_input", by_name["dcgan_g1"], device)["k_block"] == 16
    assert ocl.default_config("backward_weight", by_name["dcgan_g1"], device)["split"] == 8


_NOISY_BUILD = """
import numpy as np, autotune
x = np.ones((1, 21, 32, 32), np.float32); w = np.ones((21, 21, 4, 4), np.float32)
cfg = {"algorithm": "phase", "co_block": 4, "k_block": 0, "local": 0, "tile_h": 4, "tile_w": 1, "vec": 16,
       "vec_axis": "w", "wg_x": 8, "wg_y": 1}
y = autotune.conv_transpose2d(x, w, stride=2, padding=1, backend="opencl", config=cfg)
print(y.shape)
"""


def test_compiler_output_is_captured_unless_verbose(ocl: OpenCLBackend, tmp_path) -> None:
    """Issue 14: a normal call prints no compiler text ("N warnings generated.", pyopencl's CompilerWarning) on
    stderr; AUTOTUNE_VERBOSE shows it. PoCL's kernel cache is off so that the compiler runs each time."""
    import os
    env = {**os.environ, "POCL_KERNEL_CACHE": "0", "PYOPENCL_NO_CACHE": "1"}
    env.pop("AUTOTUNE_VERBOSE", None)
    quiet = subprocess.run([sys.executable, "-c", _NOISY_BUILD], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr
    loud = subprocess.run([sys.executable, "-c", _NOISY_BUILD], capture_output=True, text=True,
                          env={**env, "AUTOTUNE_VERBOSE": "1"})
    assert loud.returncode == 0, loud.stderr
    if "pocl" in ocl.devices()[0].name.lower() or "warning" in loud.stderr.lower():
        assert "warning" in loud.stderr.lower()


@pytest.mark.parametrize("name", ["phase_groups_asym", "dcgan_like"])
def test_new_paths_match_the_reference(ocl: OpenCLBackend, device: backends.Device, name: str) -> None:
    """Issue 11: backward_bias in one launch (a work-group per channel) and backward_weight vectorised along input
    channels (few output channels), each against the reference; configs recorded before these parameters existed
    still validate, as the path they ran."""
    p = SMALL[name]
    for op, extra in (("backward_bias", [{"one_launch": 1, "split": s} for s in (1, 8, 64)]),
                      ("backward_weight", [{"vec_axis": "ci", "vec": v, "co_block": b, "c_tile": t}
                                           for v, b, t in ((1, 1, 1), (4, 2, 4), (8, 1, 2), (16, 1, 8))])):
        q = p.for_op(op)
        inputs = inputs_for(op, q, seed=5)
        expected = reference.run(op, q, inputs)
        space = ocl.space(op, q, device)
        for change in extra:
            config = space.validate({**ocl.default_config(op, q, device), **change})
            kernel = ocl.prepare(op, q, device, config)
            assert_close(kernel(*inputs), expected, op, q)
            if op == "backward_bias":
                assert len(kernel.launches) == 1  # no second reduce launch
        old = {k: v for k, v in ocl.default_config(op, q, device).items() if k not in ("one_launch", "vec_axis")}
        assert space.validate(old) == {**old, **({"one_launch": 0} if op == "backward_bias" else {"vec_axis": "co"})}


def test_few_output_channels_default_to_input_channel_vectors(ocl: OpenCLBackend, device: backends.Device) -> None:
    p = Problem.make(2, 64, 8, 8, 3, 4, 4, stride=2, padding=1)  # an RGB layer
    assert ocl.default_config("backward_weight", p.for_op("backward_weight"), device)["vec_axis"] == "ci"
    assert ocl.default_config("backward_bias", p.for_op("backward_bias"), device)["one_launch"] == 1
