"""Triton backend specifics: every algorithm and both reduction paths against the reference, constraints and config
validation, devices (the interpreter where there is no GPU), NumPy/torch in and out, int64 offsets, laziness.

Kernels run in Triton's CPU interpreter here (TRITON_INTERPRET=1, as scripts/test.sh sets): shapes are tiny and the
configs few. The GPU space is checked through a stand-in GPU `Device` (space and constraints need no GPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close, inputs_for, require

import backends
import backends.triton as triton_backend  # the package itself imports neither triton nor torch
from autotune.core import reference
from autotune.core.devices import cpu_device_id
from autotune.core.problem import OPS, Problem
from backends.base import ConfigError, Device

# groups, dilation, output_padding, asymmetric padding and a bias at once; tiny for the interpreter.
PROBLEM = Problem.make(N=2, C_in=4, H=3, W=4, C_out=6, kH=3, kW=2, stride=(2, 3), padding=((2, 0), (1, 2)),
                       output_padding=(1, 2), dilation=(1, 2), groups=2, bias=True)
FAKE_GPU = Device(id="gpu-nvidia-test-80gb", name="test GPU", kind="gpu",
                  info={"warp_size": 32, "shared_memory_bytes": 227 * 1024})


@pytest.fixture(scope="module")
def tb():
    b = backends.get("triton")
    ok, why = b.available()
    require(ok, f"triton backend ({why}); tests run it with TRITON_INTERPRET=1")
    return b


@pytest.fixture(scope="module")
def dev(tb):
    return tb.devices()[0]


def need(module: str):
    """Import an optional module: skipped on a developer's machine without it, a failure in CI."""
    import importlib
    import importlib.util
    require(importlib.util.find_spec(module) is not None, module)
    return importlib.import_module(module)


def neutral(config, op, p):
    """`config` with the parameters it leaves out that only some problems have set to their plain values: float32's
    precision (tf32x3 where the tile uses tl.dot, the default), the forward weight through TMA (off)."""
    config = dict(config)
    if p.dtype == "float32" and op != "backward_bias" and "precision" not in config:
        dot = min(config.get("block_m", 1), config["block_n"], config["block_k"]) >= 16
        config["precision"] = "tf32x3" if dot else "ieee"
    if op == "forward" and p.dtype != "float64":
        config.setdefault("weight_tma", 0)
    return config


def run(tb, dev, op, p, config, inputs=None):
    inputs = inputs_for(op, p, seed=3) if inputs is None else inputs
    config = tb.space(op, p, dev).validate(neutral(config, op, p))
    return tb.prepare(op, p, dev, config)(*inputs), inputs


# ---- the tunable space: each algorithm, dot and FMA reductions, against the reference ----------------------

def cheapest(tb, dev, op, p, algorithm, dot):
    """The valid config of `algorithm` that interprets fastest, reducing with tl.dot or with FMAs."""
    space = tb.space(op, p, dev)
    valid = [c for c in space.grid() if c["algorithm"] == algorithm and space.violation(c) is None
             and triton_backend._uses_dot(p, c) == dot]
    assert valid, f"{op}: no valid {algorithm} config with dot={dot}"
    return min(valid, key=lambda c: (triton_backend.interpreter_steps(op, p, c), -c["block_k"], c["num_warps"]))


@pytest.mark.parametrize("op", ["forward", "backward_input", "backward_weight"])
def test_every_algorithm_and_reduction_path(tb, dev, op):
    """Each algorithm, with its tile reduced by tl.dot (blocks >= 16) and by FMAs, matches the reference."""
    p = PROBLEM.for_op(op)
    algorithms = tb.space(op, p, dev).params["algorithm"]
    assert algorithms == (("direct", "phase", "gemm") if op == "forward" else ("direct", "gemm"))
    inputs = inputs_for(op, p, seed=5)
    ref = reference.run(op, p, inputs)
    for algorithm in algorithms:
        for dot in (True, False):
            config = cheapest(tb, dev, op, p, algorithm, dot)
            out, _ = run(tb, dev, op, p, config, inputs)
            assert_close(out, ref, op, p, f"{op} {config}")


def test_split_reductions(tb, dev):
    """backward_weight and backward_bias with the reduction split in partial sums (split_k > 1) and without."""
    p = Problem.make(N=2, C_in=4, H=5, W=6, C_out=6, kH=3, kW=2, stride=(2, 3), padding=((2, 0), (1, 2)),
                     output_padding=(1, 2), dilation=(1, 2), groups=2)
    configs = {"backward_bias": [{"algorithm": "reduce", "block_n": bn, "block_k": bk, "split_k": split}
                                 for bn, bk, split in ((1, 64, 1), (4, 16, 8), (8, 64, 2), (8, 256, 1))],
               "backward_weight": [{"algorithm": "gemm", "block_m": 2, "block_n": 16, "block_k": 16, "split_k": 4},
                                   {"algorithm": "direct", "block_m": 4, "block_n": 4, "block_k": 32,
                                    "split_k": 2}]}
    for op, op_configs in configs.items():
        inputs = inputs_for(op, p, seed=5)
        ref = reference.run(op, p, inputs)
        for config in op_configs:
            config = {**config, "num_warps": 4, "num_stages": 1}
            assert_close(run(tb, dev, op, p, config, inputs)[0], ref, op, p, str(config))
    space = tb.space("backward_bias", p, FAKE_GPU)
    assert "empty splits" in space.violation({**configs["backward_bias"][0], "split_k": 32, "num_warps": 4,
                                              "num_stages": 1})


def test_gpu_default_splits_long_reductions(tb, dev):
    """A weight gradient with few output tiles and a long reduction gets split on a GPU, not in the interpreter."""
    p = Problem.make(16, 32, 64, 64, 32, 4, 4, stride=2, padding=1)
    gpu = Device(id="gpu-test", name="test", kind="gpu",
                 info={**FAKE_GPU.info, "multiprocessors": 132})
    for op in ("backward_weight", "backward_bias"):
        assert tb.default_config(op, p, gpu)["split_k"] > 1
        interp = triton_backend._interpreter_device("triton")
        assert tb.default_config(op, PROBLEM, interp)["split_k"] == 1


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_other_dtypes(tb, dev, dtype):
    """float64 accumulates in float64, the 16-bit types in float32 (checked to their tolerance); bfloat16 comes in
    as torch tensors (NumPy has none)."""
    torch = need("torch")
    p = Problem.make(N=1, C_in=4, H=3, W=3, C_out=4, kH=3, kW=3, stride=2, padding=1, groups=2, bias=True,
                     dtype=dtype)
    for op in OPS:
        q = p.for_op(op)
        inputs32 = inputs_for(op, q.with_dtype("float32"), seed=2)
        tensors = tuple(None if a is None else torch.from_numpy(a).to(dev.handle, getattr(torch, dtype))
                        for a in inputs32)
        exact = tuple(None if t is None else t.double().cpu().numpy() for t in tensors)  # the rounded inputs
        out = tb.prepare(op, q, dev, tb.default_config(op, q, dev))(*tensors)
        assert isinstance(out, torch.Tensor) and out.dtype == getattr(torch, dtype)
        assert_close(out.double().cpu().numpy(), reference.run(op, q, exact), op, q, f"{dtype} {op}")


# ---- constraints and config validation ---------------------------------------------------------------------


def test_defaults_are_valid_everywhere(tb, dev):
    for p in (PROBLEM, PROBLEM.with_dtype("float64"), PROBLEM.with_dtype("bfloat16"),
              Problem.make(1, 64, 8, 8, 32, 4, 4, stride=2, padding=1),
              Problem.make(1, 3, 1, 1, 1, 1, 1)):
        for op in OPS:
            q = p.for_op(op)
            for device in (dev, FAKE_GPU):
                space = tb.space(op, q, device)
                space.validate(tb.default_config(op, q, device))  # values among the space's and constraints hold


def test_defaults_on_hopper(tb):
    """On an sm_90 GPU (the stand-in `autotune inspect` uses), every suite layer, op and dtype has a default that
    satisfies the space, Hopper's wgmma shape where it uses tl.dot, and the register model's budget."""
    from autotune.inspect import GPUS, stand_in_device
    from autotune.problems import load_problems
    h100 = stand_in_device("triton", GPUS["h100"])
    for named in load_problems():
        for dtype in ("float32", "bfloat16", "float16", "float64"):
            for op in OPS:
                q = named.problem.with_dtype(dtype).for_op(op)
                config = tb.space(op, q, h100).validate(tb.default_config(op, q, h100))
                if op != "backward_bias":
                    assert triton_backend.register_estimate(op, q, config) <= triton_backend.REGISTER_BUDGET
                    if triton_backend._uses_dot(q, config):
                        assert config["num_warps"] in (4, 8) and config["block_m"] in (64, 128), (named, config)


def test_large_problems_keep_a_config_in_the_interpreter(tb, dev):
    """Beyond the interpreter's usual step budget, the fastest-interpreting configs stay valid (slow, but it runs),
    and the default is one of them; on a GPU the same problems get the GPU default."""
    from autotune.problems import load_problems
    interp = triton_backend._interpreter_device("triton")
    suite = {n.name: n.problem for n in load_problems()}
    for name in ("dcgan_g2", "depthwise_up", "fcn_score_up8"):
        for op in OPS:
            q = suite[name].for_op(op)
            config = tb.space(op, q, interp).validate(tb.default_config(op, q, interp))
            tb.space(op, q, FAKE_GPU).validate(config)
            tb.space(op, q, FAKE_GPU).validate(tb.default_config(op, q, FAKE_GPU))


def test_constraints_reject_before_launch(tb):
    p = Problem.make(4, 256, 16, 16, 256, 3, 3, stride=2, padding=1)
    space = tb.space("forward", p, FAKE_GPU)
    base = {"algorithm": "gemm", "block_m": 64, "block_n": 64, "block_k": 32, "num_warps": 4, "num_stages": 2,
            "precision": "ieee"}
    assert space.violation(base) is None
    hopper = Device(id="gpu-h", name="sm_90", kind="gpu", info={**FAKE_GPU.info, "capability": "9.0"})
    cases = {
        "shared memory": {"block_m": 32, "block_n": 32, "block_k": 128, "num_stages": 4, "num_warps": 8,
                          "device": Device(id="gpu-small", name="48 KiB", kind="gpu",
                                           info={"warp_size": 32, "shared_memory_bytes": 48 * 1024})},
        "register pressure": {"block_m": 128, "block_n": 8, "block_k": 8, "num_stages": 1, "num_warps": 1},
        "registers per thread": {"block_m": 128, "block_n": 128, "block_k": 16, "num_warps": 1},
        "loads pipeline only into tl.dot": {"block_n": 8, "num_stages": 2},
        "needs tl.dot": {"block_n": 8, "num_stages": 1, "precision": "tf32"},
        "wgmma needs": {"block_m": 32, "device": hopper},
        "exceeds its extent": {"block_n": 128, "algorithm": "direct",
                               "problem": Problem.make(4, 256, 16, 16, 64, 3, 3, stride=2, padding=1)},
    }
    for reason, change in cases.items():
        change = dict(change)
        space = tb.space("forward", change.pop("problem", p), change.pop("device", FAKE_GPU))
        config = neutral({**base, **change}, "forward", p)
        assert reason in (space.violation(config) or ""), (change, space.violation(config))
        outside = "problem" in cases[reason]  # a block beyond every extent is not even among the values
        with pytest.raises(ConfigError, match="not one of" if outside else "breaks a constraint"):
            space.validate(config)


def test_grid_limits_and_too_large_problems(tb):
    wide = Problem.make(1, 1, 1, 2**20, 1, 1, 1)  # 2**20 output pixels in one row
    space = tb.space("forward", wide, FAKE_GPU)
    ok = {"algorithm": "direct", "block_m": 128, "block_n": 1, "block_k": 1, "num_warps": 1, "num_stages": 1}
    assert space.violation(ok) is None
    many_groups = Problem.make(1, 2**17, 1, 1, 2**17, 1, 1, groups=2**17)  # 131072 groups > 65535 grid rows
    assert "too large for one launch" in tb.supports(many_groups, FAKE_GPU)
    huge = Problem.make(2**20, 2**20, 2**12, 2**12, 1, 1, 1)
    assert "64-bit" in tb.supports(huge, FAKE_GPU)
    with pytest.raises(ValueError, match="cannot run"):
        tb.prepare("forward", huge, FAKE_GPU, ok)


def test_config_validation(tb, dev):
    p = PROBLEM.for_op("backward_input")
    space = tb.space("backward_input", p, dev)
    good = tb.default_config("backward_input", p, dev)
    bad = {
        "unknown": {**good, "tile": 4},
        "lacks": {k: v for k, v in good.items() if k != "num_warps"},
        "not one of": {**good, "algorithm": "phase"},  # phase decomposition is a forward algorithm
    }
    for message, config in bad.items():
        with pytest.raises(ConfigError, match=message):
            space.validate(config)
    for value in ("16", 16.0, 3, True):  # text or floats from a file, and values outside the grid
        with pytest.raises(ConfigError, match="block_m"):
            space.validate({**good, "block_m": value})
    gpu_space = tb.space("backward_input", p, FAKE_GPU)
    assert gpu_space.complete({"num_warps": 8}, good)["num_warps"] == 8
    with pytest.raises(ConfigError, match="num_warps"):  # the interpreter keeps one value of the launch options
        space.complete({"num_warps": 8}, good)


def test_interpreter_space_is_inside_the_gpu_space(tb, dev):
    """The interpreter keeps one value of the launch options and adds its time budget (and no bfloat16 dot): what
    runs there also compiles for a GPU."""
    for op in OPS:
        q = PROBLEM.for_op(op)
        gpu, interp = tb.space(op, q, FAKE_GPU), tb.space(op, q, triton_backend._interpreter_device("triton"))
        assert interp.params.keys() == gpu.params.keys()
        assert all(set(interp.params[k]) <= set(v) for k, v in gpu.params.items())
        configs = list(interp.grid())
        valid = [c for c in configs if interp.violation(c) is None]
        assert valid and all(gpu.violation(c) is None for c in valid)
        slow = [c for c in configs if gpu.violation(c) is None and interp.violation(c) is not None]
        assert all("too slow for the interpreter" in interp.violation(c) for c in slow)


# ---- devices, availability, laziness -----------------------------------------------------------------------


def test_interpreter_device(tb, dev, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    devices = tb.devices()
    assert [d.kind for d in devices] == ["interpreter"]
    assert devices[0].id == f"interpreter-{cpu_device_id()}" and not devices[0].timing_is_speed
    assert "triton" in tb.version() and "interpreter" in tb.version()


def test_without_interpreter_or_gpu_unavailable(tb, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if triton_backend._gpu_devices():
        assert tb.available() == (True, "") and all(d.kind == "gpu" for d in tb.devices())
        return
    ok, why = tb.available()
    assert not ok and "TRITON_INTERPRET=1" in why and "no GPU" in why
    assert tb.devices() == []


def test_imports_stay_lazy():
    code = ("import sys, autotune, backends, backends.triton; b = backends.get('triton'); b.space; "
            "bad = [m for m in ('triton', 'torch') if m in sys.modules]; assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# ---- arrays in and out -------------------------------------------------------------------------------------


def test_numpy_in_numpy_out_torch_in_torch_out(tb, dev):
    torch = need("torch")
    p = PROBLEM
    kernel = tb.prepare("forward", p, dev, tb.default_config("forward", p, dev))
    x, w, b = inputs_for("forward", p, seed=1)
    y = kernel(x, w, b)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == p.output_shape
    on = dev.handle
    wt, bt = torch.from_numpy(w).to(on), torch.from_numpy(b).to(on)
    yt = kernel(torch.from_numpy(x).to(on), wt, bt)
    assert isinstance(yt, torch.Tensor) and yt.device == on
    np.testing.assert_array_equal(yt.cpu().numpy(), y)
    # A non-contiguous tensor is made contiguous (one copy), with the same answer.
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 3, 2))).to(on).transpose(2, 3)
    assert not xt.is_contiguous()
    np.testing.assert_array_equal(kernel(xt, wt, bt).cpu().numpy(), y)


def test_no_copy_for_tensors_on_the_device(dev):
    torch = need("torch")
    t = torch.zeros(2, 3, device=dev.handle)
    assert triton_backend.to_tensor("x", t, (2, 3), "float32", dev.handle) is t
    a = np.zeros((2, 3), np.float32)
    staged = triton_backend.to_tensor("x", a, (2, 3), "float32", dev.handle)
    if dev.kind == "interpreter":  # NumPy memory is wrapped, not copied, where the kernels run on the CPU
        assert np.shares_memory(staged.numpy(), a)


def test_bad_arguments_are_clear_errors(tb, dev):
    torch = need("torch")
    p = PROBLEM.for_op("backward_input")
    kernel = tb.prepare("backward_input", p, dev, tb.default_config("backward_input", p, dev))
    gy, w = inputs_for("backward_input", p)
    with pytest.raises(TypeError, match="grad_output must have dtype float32"):
        kernel(gy.astype(np.float64), w)
    with pytest.raises(ValueError, match="weight must have shape"):
        kernel(gy, w[:1])
    with pytest.raises(TypeError, match="numpy.ndarray or a torch.Tensor"):
        kernel(gy.tolist(), w)
    with pytest.raises(ValueError, match="is on meta"):
        kernel(torch.from_numpy(gy).to("meta"), w)
    with pytest.raises(TypeError, match="takes"):
        kernel(gy)
    fwd = tb.prepare("forward", PROBLEM, dev, tb.default_config("forward", PROBLEM, dev))
    x, w, _ = inputs_for("forward", PROBLEM)
    with pytest.raises(ValueError, match="bias must be given"):
        fwd(x, w, None)


def test_accepts(tb, dev):
    torch = need("torch")
    assert tb.accepts(np.zeros(2, np.float32)) and tb.accepts(torch.zeros(2, device=dev.handle))
    assert not tb.accepts([1.0]) and not tb.accepts(torch.zeros(2, device="meta"))


def test_public_api_keeps_the_array_type(tb):
    torch = need("torch")
    import autotune
    x, w, b = inputs_for("forward", PROBLEM, seed=4)
    args = dict(stride=PROBLEM.stride, padding=PROBLEM.padding, output_padding=PROBLEM.output_padding,
                groups=PROBLEM.groups, dilation=PROBLEM.dilation)
    y = autotune.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **args,
                                  backend="triton")
    assert isinstance(y, torch.Tensor)
    assert_close(y.numpy(), reference.forward(PROBLEM, x, w, b), "forward", PROBLEM, "api")
    gy = np.random.default_rng(0).standard_normal(PROBLEM.output_shape).astype(np.float32)
    gx, gw, gb = autotune.conv_transpose2d_backward(gy, x, w, **args, backend="triton")
    assert all(isinstance(g, np.ndarray) for g in (gx, gw, gb))
    q = PROBLEM.for_op("backward_input")
    assert_close(gx, reference.backward_input(q, gy, w), "backward_input", q, "api gx")
    assert_close(gw, reference.backward_weight(q, gy, x), "backward_weight", q, "api gw")
    assert_close(gb, reference.backward_bias(q, gy), "backward_bias", q, "api gb")


def test_runner_in_the_interpreter_is_wall_clock(tb, dev):
    from autotune.core.timing import measure
    p = PROBLEM.for_op("backward_bias")
    kernel = tb.prepare("backward_bias", p, dev, tb.default_config("backward_bias", p, dev))
    run_once = tb.runner(kernel, inputs_for("backward_bias", p), dev)
    if dev.kind == "gpu":
        assert run_once() > 0  # CUDA events
        return
    assert run_once() is None  # no device timer: the caller's wall clock, and the device's timings are not speed
    assert measure(run_once, budget_s=0.0, min_reps=2, max_reps=2).reps == 2


# ---- int64 offsets -----------------------------------------------------------------------------------------


def test_int64_offsets(tb, dev, monkeypatch):
    assert not triton_backend.needs_int64(PROBLEM)
    assert triton_backend.needs_int64(Problem.make(1, 1024, 1500, 1500, 1, 1, 1))  # 2.3e9-element input
    assert triton_backend.needs_int64(Problem.make(1, 1, 1, 1, 1, 2**16, 2**15))  # 2**31-element weight
    # Force the int64 path on a small problem: same answers as the int32 path.
    monkeypatch.setattr(triton_backend, "INT32_LIMIT", 16)
    assert triton_backend.needs_int64(PROBLEM)
    for op, config in (("forward", {"algorithm": "phase", "block_m": 32, "block_n": 4, "block_k": 4}),
                       ("forward", {"algorithm": "gemm", "block_m": 64, "block_n": 16, "block_k": 16}),
                       ("backward_input", {"algorithm": "direct", "block_m": 32, "block_n": 2, "block_k": 4}),
                       ("backward_weight", {"algorithm": "gemm", "block_m": 2, "block_n": 8, "block_k": 8,
                                            "split_k": 2}),
                       ("backward_bias", {"algorithm": "reduce", "block_n": 4, "block_k": 64, "split_k": 1})):
        q = PROBLEM.for_op(op)
        config = {**config, "num_warps": 4, "num_stages": 1}
        out, inputs = run(tb, dev, op, q, config)
        assert_close(out, reference.run(op, q, inputs), op, q, f"int64 {op} {config}")


# ---- the GPU path, compiled without a GPU ------------------------------------------------------------------

def compile_for_nvidia(arch: int) -> list[str]:
    """Compile one config of each kernel and path for sm_`arch`; returns what compiled. Runs in a process without
    TRITON_INTERPRET (the interpreter patches triton.language in its process)."""
    from backends.triton import aot, kernels

    assert not kernels.INTERPRETED
    p = Problem.make(N=2, C_in=64, H=9, W=7, C_out=96, kH=3, kW=4, stride=(2, 3), padding=((2, 0), (1, 2)),
                     output_padding=(1, 2), dilation=(1, 2), groups=2, bias=True)
    plans = [("forward", "phase", "float16", (64, 32, 32, 4, 3)), ("forward", "gemm", "float32", (64, 32, 32, 4, 2)),
             ("forward", "direct", "float64", (32, 4, 4, 2, 1)),
             ("backward_input", "gemm", "bfloat16", (64, 32, 32, 4, 3)),
             ("backward_input", "direct", "float32", (32, 4, 4, 2, 1)),
             ("backward_weight", "gemm", "float32", (32, 64, 32, 4, 2)),
             ("backward_weight", "direct", "float16", (16, 16, 64, 4, 3)),
             ("backward_bias", "reduce", "float32", (0, 16, 256, 4, 1))]
    tb = backends.get("triton")
    done = []
    for i, (op, algorithm, dtype, (bm, bn, bk, warps, stages)) in enumerate(plans):
        q = p.with_dtype(dtype).for_op(op)
        config = {"algorithm": algorithm, "block_n": bn, "block_k": bk, "num_warps": warps, "num_stages": stages}
        if op != "backward_bias":
            config["block_m"] = bm
        if op in ("backward_weight", "backward_bias"):
            config["split_k"] = 2
        config = tb.space(op, q, FAKE_GPU).validate(neutral(config, op, q))
        fn, meta = triton_backend.launch_plan(op, q, config, kernels)
        if i % 2:  # half of them with int64 offsets
            meta["IDX"] = kernels.tl.int64
        compiled = aot.compile_plan(fn, meta, dtype, arch, triton_backend.pointer_types(op, q, config))
        assert compiled.asm.get("cubin"), (op, algorithm, dtype)
        done.append(f"{op}/{algorithm}/{dtype}")
    return done


def test_kernels_compile_for_nvidia_gpus():
    """Triton compiles ahead of time for a target it does not have (front end, TTGIR, LLVM, PTX, ptxas to a cubin):
    every kernel, with tl.dot (16-bit and float32) and with FMAs (float64), int32 and int64 offsets, compiles for
    sm_80 and sm_90. A GPU run would add only the launch and the answer, which the interpreter checks."""
    need("triton")
    code = ("import sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, 'tests'); "
            "import test_triton as t; print(len(t.compile_for_nvidia(80)) + len(t.compile_for_nvidia(90)))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "16"


# ---- the GPU branches' Python, with torch.cuda and Triton's driver stubbed -------------------------------------


def test_gpu_enumeration_with_a_stubbed_driver(monkeypatch):
    """Two H100s as torch and Triton's driver would report them: one device each, ids from autotune.core.devices."""
    torch = need("torch")
    import triton.runtime

    class Props:
        name, total_memory, major, minor, warp_size = "NVIDIA H100 80GB HBM3", 85_031_714_816, 9, 0, 32

    class Utils:
        @staticmethod
        def get_device_properties(index):
            return {"max_shared_mem": 232448}

    class Active:
        utils = Utils()

    class Driver:
        active = Active()

    monkeypatch.setattr(triton.runtime, "driver", Driver())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(torch.version, "hip", None)
    found = triton_backend._gpu_devices.__wrapped__()
    assert [d.id for d in found] == ["gpu-nvidia-h100-80gb"] * 2
    assert [d.info["index"] for d in found] == [0, 1] and [str(d.handle) for d in found] == ["cuda:0", "cuda:1"]
    assert found[0].info["shared_memory_bytes"] == 232448 and found[0].info["timing"] == "device"
    assert found[0].kind == "gpu"


class _StubCuda:
    """torch.cuda as a GPU machine would have it, for the GPU branches' Python: device contexts, synchronize, CUDA
    events (25 ms between any two) and CUDA graphs that record which calls were captured."""

    def __init__(self, torch, monkeypatch, graphs=True):
        self.entered, self.captured, self.replays, self.capturing = [], 0, 0, False
        stub = self

        class DeviceContext:
            def __init__(self, where):
                stub.entered.append(str(where))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing

            def record(self):
                pass

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return 25.0  # milliseconds

        class Graph:
            def __init__(self):
                if not graphs:
                    raise RuntimeError("CUDA graphs not supported")

            def replay(self):
                stub.replays += 1

        class Capture:
            def __init__(self, graph):
                pass

            def __enter__(self):
                stub.capturing = True

            def __exit__(self, *exc):
                stub.capturing = False
                return False

        monkeypatch.setattr(torch.cuda, "device", DeviceContext)
        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", Capture)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)


def test_gpu_launch_and_graph_timing(tb, dev, monkeypatch):
    """The prepared kernel's and the runner's GPU branches on a stand-in GPU whose kernels the interpreter runs on
    the CPU: inputs staged once, the kernel called (compiled, outputs allocated) before timing and captured in a
    CUDA graph; a timed call only replays the graph between two events, and reports seconds per launch; the
    empty-launch cost is measured the same way. Without graphs: events around each call."""
    torch = need("torch")
    stub = _StubCuda(torch, monkeypatch)
    gpu = Device(id="gpu-test", name="stand-in", kind="gpu", info=dict(FAKE_GPU.info),
                 handle=torch.device("cpu"))
    p = PROBLEM.for_op("backward_input")
    config = tb.default_config("backward_input", p, dev)
    prepared = tb.prepare("backward_input", p, gpu, config)
    inputs = inputs_for("backward_input", p, seed=8)
    assert_close(prepared(*inputs), reference.run("backward_input", p, inputs), "backward_input", p, "stand-in gpu")
    assert stub.entered == ["cpu"]

    calls, staged_types = [], []

    def kernel(*args):
        calls.append(stub.capturing)
        staged_types.append({type(a).__name__ for a in args})
        return prepared(*args)

    run_once = tb.runner(kernel, inputs, gpu)
    launches = triton_backend.GRAPH_LAUNCHES
    assert calls == [False] + [True] * launches  # warm-up outside capture, then the captured launches
    assert staged_types[0] == {"Tensor"}  # NumPy inputs were staged as device tensors before any call
    for _ in range(3):
        assert run_once() == pytest.approx(25e-3 / launches)
    assert len(calls) == 1 + launches and stub.replays >= 3  # timed calls replay; no Python launch inside
    assert run_once.launch_overhead_s == pytest.approx(25e-3 / launches)  # the empty kernel, timed alike

    no_graphs = _StubCuda(torch, monkeypatch, graphs=False)
    calls.clear()
    run_events = tb.runner(kernel, inputs, gpu)
    assert run_events() == pytest.approx(25e-3) and calls == [False, False]  # warm-up, then the timed call
    assert no_graphs.replays == 0


# ---- autotune inspect: what the compiled code says, without a GPU ----------------------------------------------


def inspect_records() -> list[dict]:
    """`autotune inspect --arch sm_90 --json` on a few suite layers, both dtypes (run without TRITON_INTERPRET)."""
    import io
    import json
    from contextlib import redirect_stdout

    from autotune import cli
    out = io.StringIO()
    with redirect_stdout(out):
        status = cli.main(["inspect", "--arch", "sm_90", "--only", "dcgan_g2", "unet_up_deep", "--ops", "forward",
                           "backward_input", "--dtype", "float32", "bfloat16", "--json"])
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return ([{**r, "status": status} for r in records] + compile_heaviest_sampled()
            + [compile_tma_config(), compile_spilling_config()])


def heaviest_sampled(count: int = 3) -> list[tuple]:
    """The `count` configs with the most registers by the model among 300 valid ones sampled (fixed seed) from the
    sm_90 spaces of two dense layers: where a spill would show first."""
    import random

    from autotune.inspect import GPUS, stand_in_device
    from autotune.problems import load_problems
    suite = {n.name: n.problem for n in load_problems()}
    tb = backends.get("triton")
    h100 = stand_in_device("triton", GPUS["h100"])
    rng = random.Random(16)
    found = []
    while len(found) < 300:
        name, op, dtype = (rng.choice(("dcgan_g2", "unet_up_shallow")), rng.choice(OPS[:3]),
                           rng.choice(("float32", "bfloat16")))
        q = suite[name].with_dtype(dtype).for_op(op)
        space = tb.space(op, q, h100)
        config = {k: rng.choice(v) for k, v in space.params.items()}
        if space.violation(config) is None:
            found.append((triton_backend.register_estimate(op, q, config), name, op, dtype, config))
    return [f[1:] for f in sorted(found, key=lambda f: -f[0])[:count]]


def compile_heaviest_sampled() -> list[dict]:
    from autotune.problems import load_problems
    from backends.triton import aot, kernels
    suite = {n.name: n.problem for n in load_problems()}
    out = []
    for name, op, dtype, config in heaviest_sampled():
        q = suite[name].with_dtype(dtype).for_op(op)
        fn, meta = triton_backend.launch_plan(op, q, config, kernels)
        compiled = aot.compile_plan(fn, meta, dtype, 90, triton_backend.pointer_types(op, q, config))
        out.append({"sampled": [name, op, dtype, config], **aot.cubin_report(compiled.asm["cubin"])})
    return out


def compile_tma_config() -> dict:
    """A forward config with the weight tile through a tensor descriptor, compiled for sm_90."""
    from autotune.problems import load_problems
    from backends.triton import aot, kernels
    q = {n.name: n.problem for n in load_problems()}["dcgan_g2"].with_dtype("bfloat16")
    config = {"algorithm": "phase", "block_m": 64, "block_n": 64, "block_k": 64, "num_warps": 4, "num_stages": 3,
              "weight_tma": 1}
    fn, meta = triton_backend.launch_plan("forward", q, config, kernels)
    compiled = aot.compile_plan(fn, meta, "bfloat16", 90, triton_backend.pointer_types("forward", q, config))
    return {"tma": True, **aot.cubin_report(compiled.asm["cubin"])}


# A config that spills on sm_90 (ptxas: 255 registers and spill stores); the register model must reject it.
SPILLING = ("dcgan_g1", "forward", "bfloat16", {"algorithm": "phase", "block_m": 128, "block_n": 128,
                                                 "block_k": 32, "num_warps": 4, "num_stages": 3})


def compile_spilling_config() -> dict:
    from autotune.problems import load_problems
    from backends.triton import aot, kernels
    name, op, dtype, config = SPILLING
    q = {n.name: n.problem for n in load_problems()}[name].with_dtype(dtype).for_op(op)
    fn, meta = triton_backend.launch_plan(op, q, config, kernels)
    compiled = aot.compile_plan(fn, meta, dtype, 90, triton_backend.pointer_types(op, q, config))
    return {"spilling": True, **aot.cubin_report(compiled.asm["cubin"])}


def test_register_model_rejects_a_known_spilling_config():
    """The config ptxas spills (checked by compiling it in test_inspect_sm90_without_a_gpu) breaks the register
    constraint, and so do a few more measured spilling; every default of the suite passes it (and compiles without
    spills there, for the layers inspected)."""
    from autotune.inspect import GPUS, stand_in_device
    from autotune.problems import load_problems
    suite = {n.name: n.problem for n in load_problems()}
    tb = backends.get("triton")
    h100 = stand_in_device("triton", GPUS["h100"])
    more = [("dcgan_g1", "backward_weight", "float32", {"algorithm": "direct", "block_m": 64, "block_n": 256,
                                                         "block_k": 128, "num_warps": 4, "num_stages": 2,
                                                         "precision": "ieee", "split_k": 1}),
            ("unet_up_shallow", "forward", "float32", {"algorithm": "direct", "block_m": 64, "block_n": 64,
                                                        "block_k": 128, "num_warps": 4, "num_stages": 2,
                                                        "precision": "ieee"})]
    for name, op, dtype, config in [SPILLING, *more]:
        q = suite[name].with_dtype(dtype).for_op(op)
        assert "register pressure" in (tb.space(op, q, h100).violation(config) or ""), (name, op, config)


def test_inspect_sm90_without_a_gpu():
    """Default configs compiled for sm_90 on a machine without a GPU: no spills, wgmma (HGMMA) for bfloat16 dense
    layers, vector loads (at least half 64-bit or wider), one JSON object per kernel with the documented keys."""
    need("triton")
    import json
    code = ("import sys, json, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, 'tests'); "
            "import test_triton as t; print(json.dumps(t.inspect_records()))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout.splitlines()[-1])
    spilling = records.pop()
    assert spilling["spills"] > 0, spilling  # what test_register_model_rejects_a_known_spilling_config rejects
    tma = records.pop()
    assert tma["tma_loads"] > 0 and tma["tensor_core"] == "HGMMA" and tma["spills"] == 0, tma
    sampled = [records.pop() for _ in range(3)]
    assert all(r["spills"] == 0 for r in sampled), sampled  # the register model's most loaded accepted configs
    assert len(records) == 2 * 2 * 2 and all(r["status"] == 0 for r in records)
    for r in records:
        for key in ("problem", "op", "dtype", "arch", "registers", "spills", "shared_bytes", "tensor_core",
                    "global_load_bits", "global_store_bits", "roofline_us", "bytes", "flops"):
            assert key in r, key
        assert r["arch"] == "sm_90" and r["spills"] == 0 and r["registers"] <= 255, r
        assert r["wide_load_fraction"] >= 0.5, r
        if r["dtype"] == "bfloat16":
            assert r["tensor_core"] == "HGMMA", r
        assert any(int(bits) >= 64 for bits in r["global_load_bits"]), r


def test_precision_is_gated_by_the_correctness_check(tb, dev):
    """float32's `precision` (ieee, tf32x3, tf32): the interpreter rounds operands as the tensor cores do, so each
    precision's error is the GPU's. The trial's float32 check keeps ieee and tf32x3 and rejects tf32; the space
    prunes exactly what the check would reject (tf32 here), so sampled configs stay correct."""
    from autotune.core import verify
    from autotune.tuner import trial
    p = Problem.make(N=1, C_in=16, H=3, W=3, C_out=16, kH=3, kW=3, stride=2, padding=1)
    op = "forward"
    base = {"algorithm": "direct", "block_m": 16, "block_n": 16, "block_k": 16, "num_warps": 4, "num_stages": 1,
            "weight_tma": 0}
    inputs, exact = verify.make_inputs(op, p, seed=1)
    ref = reference.run(op, p, exact)
    tol = verify.tolerance(op, p, float(np.abs(ref).max()))  # as the trial's check computes it
    space = tb.space(op, p, dev)
    errors = {}
    for precision in ("ieee", "tf32x3", "tf32"):
        config = {**base, "precision": precision}
        kernel = triton_backend._build(op, p, dev, config)  # bypasses the space: tf32 runs too
        errors[precision] = float(np.max(np.abs(kernel(*inputs).astype(np.float64) - ref)))
        verdict = space.violation(config)
        assert (verdict is None) == (errors[precision] <= tol), (precision, errors, tol, verdict)
    assert errors["ieee"] <= tol and errors["tf32x3"] <= tol < errors["tf32"], (errors, tol)
    assert errors["tf32"] > 100 * errors["tf32x3"]  # the emulation rounds: tf32 is visibly coarser
    result = trial.run_trial({"backend": "triton", "device": dev.id, "op": op, "problem": p.key,
                              "config": {**base, "precision": "tf32x3"}, "budget_s": 0.0, "seed": 1})
    assert result["status"] == "ok" and result["max_abs_err"] <= tol, result


def test_weight_through_tma(tb, dev):
    """The forward weight tile through a tensor descriptor (TMA on Hopper; its zero fill replaces the channel masks):
    offered on sm_90 only where TMA's 16-byte rule holds (the packed rows are padded to it; boxes must reach it); in
    the interpreter (which emulates descriptors) it gives the reference's answer for the direct and phase algorithms,
    channels not a multiple of the block included."""
    hopper = Device(id="gpu-h", name="sm_90", kind="gpu", info={**FAKE_GPU.info, "capability": "9.0"})
    p = Problem.make(N=2, C_in=24, H=3, W=4, C_out=40, kH=3, kW=2, stride=(2, 3), padding=((2, 0), (1, 2)),
                     output_padding=(1, 2), dilation=(1, 2), groups=2, bias=True)
    assert tb.space("forward", p, hopper).params["weight_tma"] == (0, 1)
    assert tb.space("forward", p, FAKE_GPU).params["weight_tma"] == (0,)
    base = {"block_m": 64, "block_n": 16, "block_k": 16, "num_warps": 4, "num_stages": 3, "precision": "tf32x3",
            "weight_tma": 1}
    space = tb.space("forward", Problem.make(**{**p.as_args(), "N": 8}), hopper)
    assert space.violation({**base, "algorithm": "phase"}) is None
    assert "gathers the weight" in space.violation({**base, "algorithm": "gemm"})
    odd = Problem.make(N=8, C_in=24, H=3, W=4, C_out=6, kH=3, kW=2, stride=2)  # rows padded to 16 bytes
    assert tb.space("forward", odd, hopper).violation({**base, "algorithm": "phase"}) is None
    narrow = {**base, "algorithm": "phase", "block_n": 2, "num_stages": 1, "precision": "ieee"}
    assert "16 bytes" in tb.space("forward", odd, hopper).violation(narrow)
    inputs = inputs_for("forward", p, seed=2)
    ref = reference.run("forward", p, inputs)
    for algorithm in ("direct", "phase"):
        config = {**base, "algorithm": algorithm, "block_m": 16, "num_stages": 1, "precision": "ieee"}
        out = triton_backend._build("forward", p, dev, config)(*inputs)  # the interpreter's space keeps TMA off
        assert_close(out, ref, "forward", p, f"weight through TMA, {algorithm}")
