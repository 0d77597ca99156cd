"""Dispatch: the candidate chain (exact, nearest, default, fallback), untrusted results files, reloads, a backend
that fails at call time, and `autotune which` (library and CLI). Results files are fixtures written with
`results.append_rows` into temporary user and shipped directories."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import autotune
import backends
from autotune import cli, dispatch
from autotune.cli import which as cmd_which
from autotune.core import reference, results
from autotune.core.devices import cpu_device_id
from autotune.core.problem import Problem
from backends.base import Device, config_json
from backends.numpy import NumpyBackend

DEV = cpu_device_id()
P = Problem.make(2, 8, 8, 8, 8, 4, 4, stride=2, padding=1)
# the numpy forward configs as validated (a recorded config without chunk and runs reads so)
COPIED = {"chunk": 0, "runs": "copied"}
PHASE = {"algorithm": "phase", "batch_block": 0, **COPIED}
COL2IM = {"algorithm": "col2im", "batch_block": 0, **COPIED}


class FakeBackend(NumpyBackend):
    """A second CPU backend for the tests: the numpy kernels under another name (and, optionally, another device
    kind)."""

    kind = "cpu"

    def devices(self) -> list[Device]:
        # as the Triton backend does: an interpreter's timings are not speed
        return [Device(id=DEV, name="fake", kind=self.kind, timing_is_speed=self.kind != "interpreter")]


class InterpreterBackend(FakeBackend):
    kind = "interpreter"


class NotSpeedBackend(FakeBackend):
    def devices(self) -> list[Device]:
        return [Device(id=DEV, name="slow", kind="cpu", timing_is_speed=False)]


GPU = "gpu-test-fake-1gb"


class FakeGpuBackend(NumpyBackend):
    """Pretends to run on CUDA device 0 (its kernels are numpy's): for the GPU rules without a GPU."""

    def devices(self) -> list[Device]:
        return [Device(id=GPU, name="fake gpu", kind="gpu", info={"index": 0})]


class CudaLike:
    """Stands in for a CUDA tensor where only the device is looked at."""

    class device:
        type, index = "cuda", 0




@pytest.fixture
def fake(monkeypatch):
    """Register `fake` (a working second backend) and `interp` (an interpreter-kind one) beside the real ones."""
    instances = {"fake": FakeBackend(), "interp": InterpreterBackend(), "fakegpu": FakeGpuBackend(),
                 "notspeed": NotSpeedBackend()}
    for name, b in instances.items():
        b.name = name
    real_names, real_get = backends.names, backends.get
    monkeypatch.setattr(backends, "names", lambda: [*instances, *real_names()])
    monkeypatch.setattr(backends, "get", lambda name: instances[name] if name in instances else real_get(name))
    dispatch.clear_cache()
    yield instances
    dispatch.clear_cache()


def row(p: Problem, backend: str, config: dict, time_s: float, op: str = "forward", status: str = "ok",
        device: str = DEV, **extra) -> dict:
    q = p.for_op(op)
    return {"device": device, "device_name": "test cpu", "backend": backend, "op": op, **results.problem_columns(q),
            "config": config_json(config), "status": status, "time_s": time_s if status in ("ok", "baseline") else None,
            "gflops": q.flops(op) / time_s / 1e9, "max_abs_err": 0.0, "timestamp": "2026-11-21T00:00:00Z",
            **extra}


def write(directory, rows: list[dict]) -> None:
    results.append_rows(results.device_file(directory, DEV), rows)


def inputs(p: Problem, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(p.input_shape).astype(p.dtype), rng.standard_normal(p.weight_shape).astype(p.dtype))


def assert_forward_correct(p: Problem, **kw) -> None:
    x, w = inputs(p)
    y = autotune.conv_transpose2d(x, w, stride=p.stride, padding=p.padding, output_padding=p.output_padding,
                                  groups=p.groups, dilation=p.dilation, **kw)
    ref = reference.forward(p, x, w)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# ---- the chain ------------------------------------------------------------------------------------------------------
def test_nothing_tuned_uses_default_rule_then_fallback(dirs, monkeypatch):
    monkeypatch.setattr(dispatch, "_torch_loaded", lambda: False)  # a NumPy-only process
    w = autotune.which(P)
    assert (w.backend, w.reason, w.device) == ("numpy", "default", DEV)
    assert w.config == NumpyBackend().default_config("forward", P, NumpyBackend().devices()[0])
    assert "default rule" in w.source
    assert_forward_correct(P)


def test_fallback_for_a_dtype_numpy_does_not_compute(dirs):
    p = Problem.make(1, 2, 3, 3, 2, 3, 3, stride=2, dtype="float16")
    w = autotune.which(p)
    assert (w.backend, w.reason) == ("numpy", "fallback")
    x, wt = inputs(p)
    y = autotune.conv_transpose2d(x, wt, stride=2)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), reference.forward(p, x, wt), rtol=2e-3, atol=2e-2)


def test_exact_fastest_ok_row_wins(dirs, monkeypatch):
    monkeypatch.setattr(dispatch, "_torch_loaded", lambda: False)  # the chain of a NumPy-only process
    user, _ = dirs
    write(user, [row(P, "numpy", PHASE, 2e-3), row(P, "numpy", COL2IM, 1e-3),
                 row(P, "numpy", {"algorithm": "phase", "batch_block": 1, **COPIED}, 1e-4, status="wrong_answer")])
    w = autotune.which(P)
    assert (w.backend, w.config, w.reason, w.time_s) == ("numpy", COL2IM, "exact", 1e-3)
    assert str(results.device_file(user, DEV)) in w.source
    # the chain continues with the default rule (a different config) and nothing twice
    assert len(w.chain) == 2 and "[default]" in w.chain[1]
    assert_forward_correct(P)


def test_exact_orders_backends_by_time(dirs, fake):
    user, _ = dirs
    write(user, [row(P, "numpy", COL2IM, 2e-3), row(P, "fake", PHASE, 1e-3), row(P, "fake", COL2IM, 3e-3)])
    chain = dispatch.choices("forward", P)
    assert [(c.backend.name, c.reason, c.config) for c in chain][:2] == [("fake", "exact", PHASE),
                                                                         ("numpy", "exact", COL2IM)]
    assert chain[-1].backend.name == "numpy"


def test_configs_measured_with_another_backend_version_rank_after_current_ones(dirs, fake, monkeypatch):
    """Within a backend, configs measured with its version as it is now go first (an older measurement no longer
    says how the code runs); across backends each one's pick is ranked by its time; a backend measured only with
    another version keeps its order; `which` names the version."""
    user, _ = dirs
    now, before = "numpy 9.9", "numpy 9.8"
    monkeypatch.setattr(NumpyBackend, "version", lambda self: now)
    other = {"algorithm": "phase", "batch_block": 1, **COPIED}
    write(user, [row(P, "numpy", COL2IM, 1e-3, backend_version=before),  # fastest, but measured before
                 row(P, "numpy", PHASE, 3e-3, backend_version=now),
                 row(P, "numpy", other, 4e-3, backend_version=before), row(P, "numpy", other, 4e-3,
                                                                            backend_version=now),
                 row(P, "fake", PHASE, 2e-3, backend_version="fake 1")])  # fake's version is numpy's too: old
    chain = dispatch.choices("forward", P)
    assert [(c.backend.name, c.config, c.time_s) for c in chain][:2] == [("fake", PHASE, 2e-3),
                                                                         ("numpy", PHASE, 3e-3)]
    assert "measured with fake 1, not numpy 9.9: ranked after fake's configs measured with it" in chain[0].source
    assert "measured with" not in chain[1].source
    # one current row makes a config current (the median of all its rows still ranks it)
    write(user, [row(P, "numpy", COL2IM, 1e-3, backend_version=now)])
    dispatch.clear_cache()
    assert [(c.backend.name, c.config) for c in dispatch.choices("forward", P)][:2] == [("numpy", COL2IM),
                                                                                         ("fake", PHASE)]


def test_backward_ops_are_keyed_without_bias(dirs):
    user, _ = dirs
    pb = Problem.make(**{**P.as_args(), "bias": True})
    write(user, [row(pb, "numpy", {"algorithm": "per_tap", "batch_block": 0}, 1e-3, op="backward_input"),
                 row(pb, "numpy", {"algorithm": "gemv"}, 1e-5, op="backward_bias")])
    assert autotune.which(pb, "backward_input").reason == "exact"
    assert autotune.which(pb, "backward_input").problem == P.key  # the bias-less key
    assert autotune.which(pb, "backward_bias").config == {"algorithm": "gemv"}
    assert autotune.which(pb, "backward_weight").reason == "default"
    rng = np.random.default_rng(1)
    x, w = inputs(P)
    gy = rng.standard_normal(P.output_shape).astype(np.float32)
    gx, gw, gb = autotune.conv_transpose2d_backward(gy, x, w, stride=2, padding=1)
    np.testing.assert_allclose(gx, reference.backward_input(P, gy, w), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gb, reference.backward_bias(P, gy), rtol=1e-4, atol=1e-3)


def test_user_dir_is_read_first_and_latest_row_decides(dirs):
    user, shipped = dirs
    # shipped: col2im fastest; the user's re-measurement of col2im (slower here) replaces it
    write(shipped, [row(P, "numpy", COL2IM, 1e-3), row(P, "numpy", PHASE, 2e-3)])
    write(user, [row(P, "numpy", COL2IM, 5e-3)])
    w = autotune.which(P)
    assert (w.config, w.time_s) == (PHASE, 2e-3) and str(shipped) in w.source
    # a later failed check of a config withdraws it
    write(user, [row(P, "numpy", PHASE, 1e-4), row(P, "numpy", PHASE, 1e-4, status="wrong_answer")])
    dispatch.clear_cache()
    w = autotune.which(P)
    assert (w.config, w.time_s, w.reason) == (COL2IM, 5e-3, "exact")


def test_nearest_tuned_problem(dirs):
    user, _ = dirs
    near = Problem.make(2, 8, 16, 16, 8, 4, 4, stride=2, padding=1)  # H, W doubled: distance 2
    far = Problem.make(2, 64, 8, 8, 64, 4, 4, stride=2, padding=1)  # C_in, C_out x8: distance 6
    other = Problem.make(2, 8, 8, 8, 8, 3, 3, stride=2, padding=1)  # kernel differs: distance 8
    write(user, [row(near, "numpy", COL2IM, 1e-3), row(far, "numpy", PHASE, 1e-3),
                 row(other, "numpy", PHASE, 1e-6)])
    w = autotune.which(P)
    assert (w.reason, w.config, w.tuned_problem, w.distance) == ("nearest", COL2IM, near.key, 2.0)
    assert_forward_correct(P)


def test_nearest_skips_configs_invalid_for_the_new_problem(dirs):
    user, _ = dirs
    p1 = Problem.make(1, 8, 8, 8, 8, 4, 4, stride=2, padding=1)
    closest = Problem.make(4, 8, 8, 8, 8, 4, 4, stride=2, padding=1)  # distance 2
    further = Problem.make(1, 8, 64, 8, 8, 4, 4, stride=2, padding=1)  # distance 3
    assert (dispatch.distance(p1, closest), dispatch.distance(p1, further)) == (2, 3)
    # batch_block=2 is valid for N=4 but not for N=1: the closest problem's only config cannot be borrowed
    write(user, [row(closest, "numpy", {"algorithm": "col2im", "batch_block": 2, **COPIED}, 1e-3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an invalid borrowed config is skipped quietly: that is normal
        assert autotune.which(p1).reason == "default"
    write(user, [row(further, "numpy", COL2IM, 1e-3)])
    dispatch.clear_cache()
    w = autotune.which(p1)
    assert (w.reason, w.tuned_problem, w.config, w.distance) == ("nearest", further.key, COL2IM, 3)
    write(user, [row(closest, "numpy", PHASE, 2e-3)])
    dispatch.clear_cache()
    w = autotune.which(p1)
    assert (w.reason, w.tuned_problem, w.config) == ("nearest", closest.key, PHASE)
    assert_forward_correct(p1)


def test_distance_rule():
    d = dispatch.distance
    assert d(P, P) == 0
    assert d(P, Problem.make(**{**P.as_args(), "H": 16})) == 1
    assert d(P, Problem.make(**{**P.as_args(), "N": 8, "C_out": 4})) == 3
    assert d(P, Problem.make(**{**P.as_args(), "kH": 3, "kW": 3})) == dispatch.PENALTY_KERNEL
    assert d(P, Problem.make(**{**P.as_args(), "stride": 4, "padding": 0})) == \
        dispatch.PENALTY_STRIDE + dispatch.PENALTY_PADDING
    assert d(P, P.with_dtype("float64")) == dispatch.PENALTY_DTYPE
    assert d(P, Problem.make(**{**P.as_args(), "groups": 8})) == dispatch.PENALTY_GROUPS_KIND
    g2, g4 = (Problem.make(**{**P.as_args(), "groups": g}) for g in (2, 4))
    assert d(g2, g4) == 1 and d(g2, g4) == d(g4, g2)


def test_interpreter_devices_are_never_chosen_by_timing(dirs, fake):
    user, _ = dirs
    write(user, [row(P, "interp", PHASE, 1e-9), row(P, "notspeed", PHASE, 1e-9), row(P, "numpy", COL2IM, 1e-3)])
    chain = dispatch.choices("forward", P)
    assert all(c.backend.name not in ("interp", "notspeed") for c in chain)
    assert (chain[0].backend.name, chain[0].reason) == ("numpy", "exact")


def test_gpu_inputs_use_the_gpu_device_and_its_default_rule(dirs, fake):
    assert autotune.api.device_of(CudaLike()) == GPU
    assert autotune.api.device_of(np.zeros(1)) == DEV
    w = autotune.which(P, device=GPU)
    # on a GPU the first registered backend with a device of that id runs its default config; numpy last
    assert (w.backend, w.reason, w.device) == ("fakegpu", "default", GPU)
    assert "[fallback]" in w.chain[-1] and w.chain[-1].startswith("numpy")
    user, _ = dirs
    results.append_rows(results.device_file(user, GPU), [row(P, "fakegpu", COL2IM, 1e-5, device=GPU)])
    dispatch.clear_cache()
    assert (autotune.which(P, device=GPU).reason, autotune.which(P).reason) == ("exact", "default")


def test_forced_backend_and_config(dirs, fake):
    w = autotune.which(P, backend="fake", config={"algorithm": "col2im"})
    assert (w.backend, w.reason, w.config) == ("fake", "forced", COL2IM)
    assert_forward_correct(P, backend="fake", config={"algorithm": "col2im"})
    with pytest.raises(ValueError, match="backend="):
        assert_forward_correct(P, config={"algorithm": "col2im"})
    with pytest.raises(ValueError, match="unknown backend"):
        assert_forward_correct(P, backend="nosuch")


def test_repeated_calls_skip_checks_only_for_identical_arguments(dirs):
    x, w = inputs(P)
    y = autotune.conv_transpose2d(x, w, stride=2, padding=1)
    assert autotune.api._problem(x, w, None, 2, 1, 0, 1, 1) is autotune.api._problem(x, w, None, 2, 1, 0, 1, 1)
    with pytest.raises(TypeError, match="stride"):
        autotune.conv_transpose2d(x, w, stride=True, padding=1)  # True == 1 must not hit the cache
    with pytest.raises(TypeError, match="weight dtype"):
        autotune.conv_transpose2d(x, w.astype(np.float64), stride=2, padding=1)
    with pytest.raises(ValueError, match="output_padding"):
        autotune.conv_transpose2d(x, w, stride=2, padding=1, output_padding=2)
    np.testing.assert_array_equal(autotune.conv_transpose2d(x, w, stride=[2, 2], padding=(1, 1)), y)


# ---- failures at call time ----------------------------------------------------------------------------------------
def test_backend_that_raises_is_skipped_with_one_warning(dirs, fake, monkeypatch):
    user, _ = dirs
    write(user, [row(P, "fake", PHASE, 1e-4), row(P, "numpy", COL2IM, 1e-3)])

    def broken(*args):
        raise RuntimeError("device lost")
    monkeypatch.setattr(fake["fake"], "prepare", lambda *a: broken)
    with pytest.warns(RuntimeWarning, match=r"'fake'.*device lost") as record:
        assert_forward_correct(P)
    assert len([w for w in record if "fake" in str(w.message)]) == 1
    assert "running the next candidate (numpy)" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once: no second warning, straight to numpy
        assert_forward_correct(P)
    assert dispatch.choices("forward", P)[0].backend.name == "numpy"


def test_wrongly_shaped_result_counts_as_a_failure(dirs, fake, monkeypatch):
    user, _ = dirs
    write(user, [row(P, "fake", PHASE, 1e-4)])
    monkeypatch.setattr(fake["fake"], "prepare", lambda *a: lambda x, w, b: np.zeros((1, 1, 1, 1), np.float32))
    with pytest.warns(RuntimeWarning, match=r"'fake'.*returned shape"):
        assert_forward_correct(P)


def test_a_forced_backend_that_raises_reaches_the_caller(dirs, fake, monkeypatch):
    def broken(*args):
        raise RuntimeError("device lost")
    monkeypatch.setattr(fake["fake"], "prepare", lambda *a: broken)
    with pytest.raises(RuntimeError, match="device lost"):
        assert_forward_correct(P, backend="fake")


def test_kernels_are_prepared_lazily_and_decisions_memoized(dirs, fake, monkeypatch):
    user, _ = dirs
    write(user, [row(P, "fake", PHASE, 1e-4), row(P, "numpy", COL2IM, 1e-3)])
    prepared = []
    real = fake["fake"].prepare
    monkeypatch.setattr(fake["fake"], "prepare", lambda *a: prepared.append(a) or real(*a))
    for _ in range(3):
        assert_forward_correct(P)
    assert len(prepared) == 1
    assert dispatch.choices("forward", P) is dispatch.choices("forward", P)
    assert all(c._kernel is None for c in dispatch.choices("forward", P)[1:])  # never built


# ---- untrusted files ----------------------------------------------------------------------------------------------
def test_torn_and_hostile_rows_cost_only_themselves(dirs):
    """Issue 15, items 1 and 2: a torn row (cut inside its quoted config) and hostile rows (100,000 nested `[`, a
    5000-digit integer) cost those rows only; the good rows of the same file still decide."""
    user, _ = dirs
    write(user, [row(P, "numpy", PHASE, 3e-3)])
    path = results.device_file(user, DEV)
    whole = results.format_row(row(P, "numpy", COL2IM, 1e-6))
    with open(path, "a", encoding="utf-8") as f:
        f.write(results.format_row({**row(P, "numpy", COL2IM, 1e-6), "config": "[" * 100_000}))
        f.write(results.format_row({**row(P, "numpy", COL2IM, 1e-6), "config": '{"batch_block":' + "9" * 5000
                                    + "}"}))
        f.write(whole[:whole.index('"') + 12])  # torn: the next append starts a new line
    write(user, [row(P, "numpy", PHASE, 2e-3)])
    with pytest.warns(RuntimeWarning, match=r"line 3.*line 4.*line 5"):
        w = autotune.which(P)
    # the two good rows decide, ranked by the median of their medians (issue 14)
    assert w.reason == "exact" and w.time_s == pytest.approx(2.5e-3)


def test_foreign_and_stale_rows_are_ignored_with_warnings(dirs):
    user, _ = dirs
    write(user, [
        row(P, "numpy", COL2IM, 1e-6, device="gpu-nvidia-h100-80gb"),  # another device's row in this file
        row(P, "nosuch", PHASE, 1e-6),  # unknown backend
        row(P, "numpy", {"algorithm": "winograd", "batch_block": 0}, 1e-6),  # not in the space
        row(P, "numpy", {"algorithm": "phase", "batch_block": "0"}, 1e-6),  # wrong type (text)
        row(P, "numpy", {"algorithm": "phase", "batch_block": 0, "x": 1}, 1e-6),  # unknown parameter
        row(P, "numpy", {"algorithm": "phase"}, 1e-6),  # missing parameter
        row(P, "numpy", PHASE, 3e-3),  # the one valid row
        row(P, "blas", {"routine": "sgemm"}, 1e-9, status="baseline"),  # a reference timing: silently ignored
        row(P, "torch", {}, 1.0, status="baseline"),  # PyTorch's default call: the torch backend's default
    ])
    with open(results.device_file(user, DEV), "a", encoding="utf-8") as f:
        f.write("garbage,row,with,too,few,fields\n")
        f.write(results.format_row(row(P, "numpy", COL2IM, 1e-6)).replace(",ok,", ",bogus,"))
        f.write(results.format_row(row(P, "numpy", COL2IM, 1e-6)).replace(P.key, "n1_not_a_key"))
        f.write(results.format_row({**row(P, "numpy", COL2IM, 1e-6), "config": "[1, 2]"}))
        f.write(results.format_row({**row(P, "numpy", COL2IM, 1e-6), "config": "{not json"}))
        f.write(results.format_row(row(P, "numpy", COL2IM, -1.0)))
    with pytest.warns(RuntimeWarning) as record:
        w = autotune.which(P)
    messages = "\n".join(str(r.message) for r in record)
    assert (w.reason, w.config, w.time_s) == ("exact", PHASE, 3e-3)
    assert "'torch'" not in messages and "'blas'" not in messages
    for needle in ("another device 'gpu-nvidia-h100-80gb'", "unknown backend 'nosuch'", "winograd",
                   "batch_block='0'", "unknown config parameter", "lacks parameter", "bogus", "not a problem key",
                   "not a JSON object", "config is not JSON", "time_s -1.0", "incomplete row"):
        assert needle in messages, needle
    assert_forward_correct(P)


@pytest.mark.parametrize("content", [b"\x00\xff\xfe binary junk\n\x00", b"a,b,c\n1,2,3\n",
                                     b'device,backend\n"unterminated\n'], ids=["binary", "wrong-header", "broken"])
def test_unreadable_file_is_ignored_with_a_warning(dirs, content):
    user, shipped = dirs
    results.device_file(user, DEV).write_bytes(content)
    write(shipped, [row(P, "numpy", COL2IM, 1e-3)])
    with pytest.warns(RuntimeWarning, match=str(results.device_file(user, DEV))):
        w = autotune.which(P)
    assert (w.reason, w.config) == ("exact", COL2IM)  # the shipped file still counts
    assert_forward_correct(P)


def test_a_results_read_that_raises_is_a_warning_not_a_failed_call(dirs, monkeypatch):
    def unreadable(*args, **kw):
        raise PermissionError("[Errno 13] Permission denied: 'cpu.csv'")
    monkeypatch.setattr(results, "read_dirs", unreadable)
    with pytest.warns(RuntimeWarning, match="Permission denied"):
        assert autotune.which(P).reason == "default"
    assert_forward_correct(P)


def test_reload_when_the_file_changes(dirs, monkeypatch):
    user, _ = dirs
    monkeypatch.setattr(dispatch, "RELOAD_CHECK_S", 0.0)
    assert autotune.which(P).reason == "default"
    write(user, [row(P, "numpy", COL2IM, 1e-3)])
    assert (autotune.which(P).reason, autotune.which(P).config) == ("exact", COL2IM)
    write(user, [row(P, "numpy", PHASE, 1e-4)])
    assert autotune.which(P).config == PHASE
    results.device_file(user, DEV).unlink()
    assert autotune.which(P).reason == "default"


def test_no_reload_within_the_check_interval(dirs, monkeypatch):
    user, _ = dirs
    monkeypatch.setattr(dispatch, "RELOAD_CHECK_S", 3600.0)
    assert autotune.which(P).reason == "default"
    write(user, [row(P, "numpy", COL2IM, 1e-3)])
    assert autotune.which(P).reason == "default"  # not stat'ed again yet
    monkeypatch.setattr(dispatch, "RELOAD_CHECK_S", 0.0)
    assert autotune.which(P).reason == "exact"


# ---- which: library and CLI ---------------------------------------------------------------------------------------
def test_which_arguments():
    with pytest.raises(TypeError, match="problem"):
        autotune.which(42)
    with pytest.raises(ValueError, match="op must be"):
        autotune.which(P, "sideways")
    with pytest.raises(ValueError, match="not a problem key"):
        autotune.which("n1_garbage")
    with pytest.raises(ValueError, match="device id"):
        autotune.which(P, device="Not A Slug!")
    with pytest.raises(ValueError, match="CUDA"):
        autotune.which(P, device="cuda:7")
    assert autotune.which(P.key).problem == P.key


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    # Only this verb: the CLI imports every verb's module to build its parser.
    orig = dict(cli.COMMANDS)
    cli.COMMANDS.clear()
    cli.COMMANDS["which"] = "autotune.cli.which"
    try:
        rc = cli.main(["which", *argv])
    finally:
        cli.COMMANDS.clear()
        cli.COMMANDS.update(orig)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_which_by_flags(dirs, capsys, monkeypatch):
    monkeypatch.setattr(dispatch, "_torch_loaded", lambda: False)  # the chain of a NumPy-only process
    user, _ = dirs
    write(user, [row(P, "numpy", COL2IM, 1e-3)])
    rc, out, err = _cli(["--N", "2", "--C-in", "8", "--H", "8", "--W", "8", "--C-out", "8", "--kernel", "4",
                         "--stride", "2", "--padding", "1", "--op", "forward", "--json", "--chain"], capsys)
    assert rc == 0, err
    (answer,) = [json.loads(line) for line in out.splitlines()]
    assert (answer["backend"], answer["config"], answer["reason"], answer["problem"]) == \
        ("numpy", COL2IM, "exact", P.key)
    assert len(answer["chain"]) == 2
    rc, out, err = _cli(["--N", "2", "--C-in", "8", "--H", "8", "--W", "8", "--C-out", "8", "--kernel", "4",
                         "--stride", "2", "--padding", "1"], capsys)
    assert rc == 0 and len(out.splitlines()) == 5 and " exact " in out and " default " in out


def test_cli_which_by_name_and_results_flag(dirs, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    fcn = next(n.problem for n in autotune.problems.load_problems() if n.name == "fcn_score_up2")
    results.append_rows(results.device_file(other, DEV), [row(fcn, "numpy", COL2IM, 1e-3)])
    rc, out, err = _cli(["--problem", "fcn_score_up2", "--op", "forward", "--results", str(other)], capsys)
    assert rc == 0, err
    assert out.startswith(f"fcn_score_up2: {fcn.key}") and " exact " in out


@pytest.mark.parametrize("argv, message", [
    (["--N", "1"], "missing: --C-in"),
    (["--problem", "nope"], "unknown problem name"),
    (["--problem", "fcn_score_up2", "--N", "1"], "not both"),
    (["--N", "1", "--C-in", "2", "--H", "3", "--W", "3", "--C-out", "2", "--kernel", "3", "--stride", "x"],
     "column 'stride'"),
    (["--N", "1", "--C-in", "2", "--H", "3", "--W", "3", "--C-out", "3", "--kernel", "3", "--groups", "2"],
     "groups"),
])
def test_cli_which_errors_are_one_line(dirs, capsys, argv, message):
    rc, out, err = _cli(argv, capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_which_prints_file_warnings(dirs, capsys):
    user, _ = dirs
    write(user, [row(P, "nosuch", PHASE, 1e-3)])
    rc, out, err = _cli(["--problem", "fcn_score_up2"], capsys)
    assert rc == 0 and "warning:" in err and "unknown backend 'nosuch'" in err


def test_which_module_parser_has_documented_flags():
    parser = argparse.ArgumentParser()
    cmd_which.add_arguments(parser)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--N", "--C-in", "--H", "--W", "--C-out", "--kernel", "--stride", "--padding", "--output-padding",
            "--dilation", "--groups", "--bias", "--dtype", "--op", "--problem", "--problems"} <= flags


def test_cli_module_does_not_shadow_the_library_function():
    # a submodule named `autotune.which` would rebind `autotune.which` to itself once imported
    import importlib
    importlib.import_module(cli.COMMANDS.get("which", "autotune.cli.which"))
    assert callable(autotune.which) and autotune.which is dispatch.which


def test_import_autotune_stays_light():
    code = "import sys, autotune; autotune.which; print(sorted(m for m in ('torch', 'pandas', 'pyopencl', " \
           "'triton') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_noisy_remeasure_keeps_the_tuned_winner(dirs):
    """Issue 14: the tuned config at 0.362 ms, re-timed by bench at 0.544 ms, must not lose to a default timed at
    0.521 ms: configs are ranked by the median of their ok measurements, not by the latest row."""
    user, _ = dirs
    write(user, [row(P, "numpy", PHASE, 0.521e-3, source="tune", is_default=1),
                 row(P, "numpy", COL2IM, 0.362e-3, source="tune"),
                 row(P, "numpy", COL2IM, 0.544e-3, source="bench", reason="autotune bench")])
    w = autotune.which(P)
    assert (w.config, w.reason) == (COL2IM, "exact")
    assert w.time_s == pytest.approx((0.362e-3 + 0.544e-3) / 2)
    assert "median of 2 measurements" in w.source
    # ... while a latest failed correctness check still withdraws it
    write(user, [row(P, "numpy", COL2IM, 0.3e-3, status="wrong_answer")])
    dispatch.clear_cache()
    assert autotune.which(P).config == PHASE


def test_the_time_that_matches_the_call_ranks(dirs, fake, monkeypatch):
    """Issue 11: host arrays (a CPU call) rank by `time_s`, the call with its staging; CUDA tensors by the kernel-only
    `device_time_s` where the backend takes them as they are, else (converted through the host) by `time_s`."""
    user, _ = dirs
    # staging costs COL2IM much more than PHASE: PHASE is faster for host arrays, COL2IM on the device
    write(user, [row(P, "numpy", PHASE, 1.5e-3, device_time_s=1.4e-3),
                 row(P, "numpy", COL2IM, 2e-3, device_time_s=1e-3)])
    results.append_rows(results.device_file(user, GPU), [
        row(P, "fakegpu", PHASE, 1.5e-3, device=GPU, device_time_s=1.4e-3),
        row(P, "fakegpu", COL2IM, 2e-3, device=GPU, device_time_s=1e-3),
        row(P, "fakegpu", {"algorithm": "col2im", "batch_block": 1}, 1.2e-3, device=GPU)])  # no device time: time_s
    assert autotune.which(P).config == PHASE  # this CPU: host arrays
    assert autotune.which(P, device=GPU).config == {"algorithm": "col2im", "batch_block": 1, **COPIED}  # staged: time_s
    monkeypatch.setattr(FakeGpuBackend, "takes_device_arrays", lambda self, device: device.kind == "gpu")
    dispatch.clear_cache()
    w = autotune.which(P, device=GPU)
    assert (w.config, w.time_s) == (COL2IM, 1e-3)
    assert autotune.which(P).config == PHASE  # a CPU call is never resident


def test_which_answers_for_another_machines_device(dirs):
    """Issue 14: `which --device` answers for any device with results (here, a shipped one not present here)."""
    _, shipped = dirs
    other = "cpu-other-test-2c"
    results.append_rows(results.device_file(shipped, other), [row(P, "numpy", COL2IM, 1e-3, device=other),
                                                              row(P, "numpy", PHASE, 2e-3, device=other)])
    w = autotune.which(P, device=other)
    assert (w.device, w.backend, w.config, w.reason) == (other, "numpy", COL2IM, "exact")
    assert autotune.which(P).reason == "transfer"  # this CPU has no results of its own: the other CPU's (issue 12)
    with pytest.raises(ValueError, match="unknown device 'cpu-bogus-1c'"):
        autotune.which(P, device="cpu-bogus-1c")


def test_which_cli_shipped_device_and_unknown_device(tmp_path, capsys):
    shipped = sorted(p.stem for p in results.shipped_results_dir().glob("*.csv"))
    assert shipped, "the project ships results"
    dispatch.clear_cache()
    args = ["which", "--problem", "fcn_score_up2", "--results", str(tmp_path), "--op", "forward"]
    assert cli.main([*args, "--device", shipped[0]]) == 0
    out = capsys.readouterr().out
    assert f"on {shipped[0]}" in out and "[exact]" not in out and " exact " in out
    assert cli.main([*args, "--device", "bogus"]) == 2
    assert "unknown device 'bogus'" in capsys.readouterr().err
    dispatch.clear_cache()


def test_reload_is_off_the_callers_path(dirs, monkeypatch):
    """Issue 15, item 7: a changed file is re-read in the background; the old table serves calls meanwhile."""
    import threading

    user, _ = dirs
    monkeypatch.setattr(dispatch, "RELOAD_CHECK_S", 0.0)
    write(user, [row(P, "numpy", COL2IM, 1e-3)])
    assert dispatch.choices("forward", P)[0].config == COL2IM
    gate = threading.Event()
    real = dispatch._read

    def slow_read(table):
        gate.wait(10)  # a huge file being read
        return real(table)
    monkeypatch.setattr(dispatch, "_read", slow_read)
    write(user, [row(P, "numpy", PHASE, 1e-4)])
    start = time.monotonic()
    for _ in range(20):
        assert dispatch.choices("forward", P)[0].config == COL2IM  # the old table serves, nobody waits
    assert time.monotonic() - start < 2
    gate.set()
    deadline = time.monotonic() + 10
    while dispatch.choices("forward", P)[0].config != PHASE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dispatch.choices("forward", P)[0].config == PHASE
    assert autotune.which(P).config == PHASE


def test_pytorchs_baseline_is_the_torch_backends_default(dirs):
    """A bench baseline of PyTorch's default call (backend torch, config {}) is a measurement of the torch
    backend's default config: it competes in dispatch here (exact) and from a similar device (transfer)."""
    torch_backend = backends.get("torch")
    if not torch_backend.available()[0]:
        pytest.skip(f"torch backend: {torch_backend.available()[1]}")
    device = next(d for d in torch_backend.devices() if d.kind == "cpu")
    default = torch_backend.default_config("forward", P, device)
    user, shipped = dirs
    write(user, [row(P, "numpy", PHASE, 3e-3), row(P, "torch", {}, 1e-3, status="baseline", source="bench")])
    w = autotune.which(P)
    assert (w.backend, w.reason, w.config, w.time_s) == ("torch", "exact", default, 1e-3)
    assert "baseline" in w.source
    assert_forward_correct(P)
    # the same rows measured on a similar CPU (another core count) transfer
    other = DEV.rsplit("-", 1)[0] + "-64c"
    dispatch.clear_cache()
    user.joinpath(results.device_file(user, DEV).name).unlink()
    results.append_rows(results.device_file(shipped, other),
                        [row(P, "numpy", PHASE, 3e-3, device=other),
                         row(P, "torch", {}, 1e-3, status="baseline", source="bench", device=other)])
    w = autotune.which(P)
    assert (w.backend, w.reason, w.config) == ("torch", "transfer", default)


def test_untuned_cpu_default_is_pytorchs_plain_call_where_torch_is_loaded(dirs, monkeypatch):
    torch_backend = backends.get("torch")
    if not torch_backend.available()[0]:
        pytest.skip(f"torch backend: {torch_backend.available()[1]}")
    monkeypatch.setattr(dispatch, "_torch_loaded", lambda: True)
    w = autotune.which(P, "backward_input")
    device = next(d for d in torch_backend.devices() if d.kind == "cpu")
    assert (w.backend, w.reason) == ("torch", "default")
    assert w.config == torch_backend.default_config("backward_input", P, device)
    assert "PyTorch's plain call" in w.source
    assert_forward_correct(P)


def test_transfer_puts_a_vendor_library_before_configs_with_a_thin_lead(dirs):
    """Another device's winner goes first only when it beat the vendor library (torch) there by TRANSFER_MARGIN:
    a config tuned for another CPU rarely keeps a thin lead, a vendor library re-tunes itself per device."""
    torch_backend = backends.get("torch")
    if not torch_backend.available()[0]:
        pytest.skip(f"torch backend: {torch_backend.available()[1]}")
    _, shipped = dirs
    other = DEV.rsplit("-", 1)[0] + "-64c"
    rows = [row(P, "numpy", PHASE, 0.9e-3, device=other), row(P, "torch", {}, 1e-3, status="baseline", device=other),
            row(P, "numpy", {"algorithm": "im2col", "batch_block": 0}, 0.9e-3, op="backward_input", device=other),
            row(P, "torch", {}, 2e-3, op="backward_input", status="baseline", device=other)]
    results.append_rows(results.device_file(shipped, other), rows)
    assert dispatch.TRANSFER_MARGIN == 1.25
    fwd = autotune.which(P)  # numpy 1.11x faster there: not enough
    assert (fwd.backend, fwd.reason) == ("torch", "transfer")
    assert dispatch.choices("forward", P)[1].backend.name == "numpy"  # still the next candidate
    bwd = autotune.which(P, "backward_input")  # numpy 2.2x faster there: first
    assert (bwd.backend, bwd.reason) == ("numpy", "transfer")


def test_nearest_takes_the_vendor_librarys_plain_call_over_its_config_with_a_thin_lead(dirs):
    """The nearest problem's torch config replaces torch's default call only where it beat that call there by
    TRANSFER_MARGIN: a library that re-plans per shape keeps a thin lead less often than a fixed config does."""
    torch_backend = backends.get("torch")
    if not torch_backend.available()[0]:
        pytest.skip(f"torch backend: {torch_backend.available()[1]}")
    device = next(d for d in torch_backend.devices() if d.kind == "cpu")
    near = dataclasses.replace(P, N=P.N * 4)  # P with a larger batch
    default = torch_backend.default_config("forward", P, device)
    tuned = next(c for c in (dict(default, memory_format=m) for m in ("channels_last", "contiguous"))
                 if c != default)
    user, _ = dirs
    write(user, [row(near, "torch", tuned, 1.0e-3), row(near, "torch", {}, 1.2e-3, status="baseline"),
                 row(near, "numpy", PHASE, 1.1e-3)])
    w = autotune.which(P)  # 1.2x: not enough; the plain call (1.2 ms there) now ranks after numpy's 1.1 ms
    assert (w.backend, w.reason) == ("numpy", "nearest")
    second = dispatch.choices("forward", P)[1]
    assert (second.backend.name, second.config, second.time_s) == ("torch", default, 1.2e-3)
    assert "default call" in second.source
    dispatch.clear_cache()
    results.device_file(user, DEV).unlink()
    write(user, [row(near, "torch", tuned, 1.0e-3), row(near, "torch", {}, 2.0e-3, status="baseline"),
                 row(near, "numpy", PHASE, 1.1e-3)])  # the tuned config 2x faster than the plain call there
    w = autotune.which(P)
    assert (w.backend, w.reason, w.config) == ("torch", "nearest", tuned)


def test_old_rows_of_a_staging_backend_do_not_rank_host_array_calls(dirs):
    """Results of schemas 1-2 timed OpenCL's kernel alone in time_s: a call on NumPy arrays also waits for the
    copies, so those rows are not used to rank it (the numpy row wins though it was slower there)."""
    opencl = backends.get("opencl")
    if not opencl.available()[0]:
        pytest.skip(f"opencl: {opencl.available()[1]}")
    device = next(d for d in opencl.devices() if d.id == DEV and d.timing_is_speed)
    user, _ = dirs
    config = opencl.default_config("forward", P, device)
    write(user, [row(P, "numpy", PHASE, 2e-3), row(P, "opencl", config, 1e-3)])
    assert autotune.which(P).backend == "opencl"  # a row of this schema: the call's time
    path = results.device_file(user, DEV)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n").rsplit(",", 1)[0] + ",1\n"  # the same row as schema 1 wrote it
    path.write_text("".join(lines))
    dispatch.clear_cache()
    w = autotune.which(P)
    assert (w.backend, w.config) == ("numpy", PHASE)
    (first, second, *_) = dispatch.choices("forward", P)  # still a candidate, after every measured call
    assert (second.backend.name, second.time_s) == ("opencl", float("inf")) and "kernel-only" in second.source
