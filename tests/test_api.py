"""The public API and the problem model: shapes, keys, FLOPs, array types, and clear errors for bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import IN_CI, require

import autotune
import backends
from autotune.core import reference
from autotune.core.devices import cpu_device_id, device_id, slug
from autotune.core.problem import Problem
from autotune.problems import load_problems


def _xw(N=2, C_in=4, H=5, W=5, C_out=6, k=3, groups=1, dtype=np.float32):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N, C_in, H, W)).astype(dtype),
            rng.standard_normal((C_in, C_out // groups, k, k)).astype(dtype))


# ---- problem model ---------------------------------------------------------------------------------------------
def test_output_shape_and_flops():
    p = Problem.make(N=2, C_in=4, H=5, W=7, C_out=6, kH=3, kW=2, stride=(2, 3), padding=((1, 2), (0, 1)),
                     output_padding=(1, 0), dilation=(2, 1), groups=2, bias=True)
    assert p.output_size == ((5 - 1) * 2 - 3 + 2 * 2 + 1 + 1, (7 - 1) * 3 - 1 + 1 + 1 + 0)
    assert p.output_shape == (2, 6, *p.output_size)
    assert p.weight_shape == (4, 3, 3, 2)
    assert p.flops("forward") == 2 * 2 * 4 * 3 * 5 * 7 * 3 * 2 == p.flops("backward_weight")
    assert p.flops("backward_bias") == 2 * 6 * p.output_size[0] * p.output_size[1]
    assert p.symmetric_padding is None
    assert Problem.make(N=1, C_in=1, H=5, W=9, C_out=1, kH=1, kW=1, padding=(1, 2)).padding == ((1, 1), (2, 2))


def test_cached_shapes_do_not_change_equality_or_the_gradient_problem():
    a = Problem.make(N=2, C_in=4, H=5, W=7, C_out=6, kH=3, kW=2, stride=2, bias=True)
    b = Problem.make(N=2, C_in=4, H=5, W=7, C_out=6, kH=3, kW=2, stride=2, bias=True)
    assert a.output_shape == (2, 6, 11, 14)  # computed (and kept) on a only
    assert a == b and hash(a) == hash(b)
    g = a.for_op("backward_input")
    assert g.bias is False and g.output_shape == a.output_shape and g == b.for_op("backward_weight")


def test_key_round_trips_and_is_filesystem_safe():
    for named in load_problems():
        p = named.problem
        assert Problem.from_key(p.key) == p
        assert slug(p.key.replace("_", "-").replace(".", "-")) == p.key.replace("_", "-").replace(".", "-").lower()
    p = load_problems()[0].problem
    assert p.for_op("backward_input").key == p.for_op("backward_weight").key
    with pytest.raises(ValueError, match="not a problem key"):
        Problem.from_key("n1_ci2; rm -rf /")


def test_device_ids_are_slugs():
    assert cpu_device_id().startswith("cpu-")
    assert slug(cpu_device_id()) == cpu_device_id()
    xeon = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert device_id("cpu", "GenuineIntel", xeon, 2) == "cpu-intel-xeon-gold-6338-2c"
    assert device_id("cpu", "AuthenticAMD", "AMD EPYC 7B13 64-Core Processor", 2) == "cpu-amd-epyc-7b13-2c"
    assert device_id("gpu", "NVIDIA Corporation", "NVIDIA H100 80GB HBM3", memory_gb=80) == "gpu-nvidia-h100-80gb"
    assert device_id("gpu", "nvidia", "../../etc/passwd") == "gpu-nvidia-etc-passwd"


@pytest.mark.parametrize("kwargs,match", [
    (dict(stride=0), "stride must be >= 1"),
    (dict(dilation=(1, 0)), "dilation must be >= 1"),
    (dict(padding=-1), "padding must be >= 0"),
    (dict(output_padding=2, stride=2), "output_padding must be smaller than either stride or dilation"),
    (dict(groups=3), "groups=3 must divide both C_in=4 and C_out=6"),
    (dict(padding=9), "output size .* is smaller than 1"),
    (dict(dtype="int32"), "dtype must be one of"),
])
def test_problem_errors_name_the_rule(kwargs, match):
    base = dict(N=1, C_in=4, H=3, W=3, C_out=6, kH=3, kW=3)
    with pytest.raises(ValueError, match=match):
        Problem.make(**{**base, **kwargs})


def test_output_padding_allowed_below_dilation():
    # output_padding >= stride is legal when it is below the dilation (PyTorch's rule).
    p = Problem.make(N=1, C_in=1, H=3, W=3, C_out=1, kH=2, kW=2, stride=1, output_padding=2, dilation=3)
    assert p.output_size == (2 + 3 + 1 + 2,) * 2


# ---- public calls ----------------------------------------------------------------------------------------------
def test_forward_and_backward_match_reference():
    x, w = _xw(groups=2)
    b = np.arange(6, dtype=np.float32)
    y = autotune.conv_transpose2d(x, w, b, stride=2, padding=((0, 1), (1, 0)), output_padding=1, groups=2)
    p = Problem.make(N=2, C_in=4, H=5, W=5, C_out=6, kH=3, kW=3, stride=2, padding=((0, 1), (1, 0)),
                     output_padding=1, groups=2, bias=True)
    assert y.dtype == np.float32 and y.shape == p.output_shape
    np.testing.assert_allclose(y, reference.forward(p, x, w, b), rtol=1e-5, atol=1e-4)
    gy = np.ones_like(y)
    gx, gw, gb = autotune.conv_transpose2d_backward(gy, x, w, stride=2, padding=((0, 1), (1, 0)), output_padding=1,
                                                    groups=2)
    np.testing.assert_allclose(gx, reference.backward_input(p, gy, w), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gw, reference.backward_weight(p, gy, x), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(gb, np.full(6, y.shape[2] * y.shape[3] * 2.0))
    gx, gw, gb = autotune.conv_transpose2d_backward(gy, x, w, stride=2, padding=((0, 1), (1, 0)), output_padding=1,
                                                    groups=2, output_mask=(False, True, False))
    assert gx is None and gb is None and gw.shape == w.shape


def test_non_contiguous_inputs_are_accepted():
    x, w = _xw()
    xt = np.asfortranarray(x)[:, :, ::-1, :]
    wt = w.transpose(0, 1, 3, 2)
    p = Problem.make(N=2, C_in=4, H=5, W=5, C_out=6, kH=3, kW=3, stride=2)
    np.testing.assert_allclose(autotune.conv_transpose2d(xt, wt, stride=2), reference.forward(p, xt, wt), rtol=1e-5,
                               atol=1e-4)


def test_forced_backend_and_config():
    x, w = _xw()
    y0 = autotune.conv_transpose2d(x, w, stride=2, backend="numpy")
    for config in ({"algorithm": "col2im"}, {"algorithm": "phase", "batch_block": 1}):
        np.testing.assert_allclose(autotune.conv_transpose2d(x, w, stride=2, backend="numpy", config=config), y0,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="algorithm='nope' is not one of"):
        autotune.conv_transpose2d(x, w, stride=2, backend="numpy", config={"algorithm": "nope"})
    with pytest.raises(ValueError, match="unknown config parameter"):
        autotune.conv_transpose2d(x, w, backend="numpy", config={"algorithm": "phase", "evil": "-DX=1"})
    with pytest.raises(ValueError, match="batch_block=1 is not one of|batch_block='1'"):
        autotune.conv_transpose2d(x, w, backend="numpy", config={"batch_block": "1"})
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        autotune.conv_transpose2d(x, w, backend="cuda-magic")


def test_float64_and_torch_tensors_round_trip():
    x, w = _xw(dtype=np.float64)
    assert autotune.conv_transpose2d(x, w).dtype == np.float64
    try:
        import torch
    except ImportError:
        require(False, "torch")
    xt, wt = torch.tensor(x[:, :, :, ::2].copy()).transpose(2, 3), torch.tensor(w)  # non-contiguous tensor
    y = autotune.conv_transpose2d(xt, wt, stride=2, padding=1)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    torch.testing.assert_close(y, torch.nn.functional.conv_transpose2d(xt, wt, stride=2, padding=1))
    gx, gw, gb = autotune.conv_transpose2d_backward(torch.ones_like(y), xt, wt, stride=2, padding=1)
    assert all(isinstance(g, torch.Tensor) for g in (gx, gw, gb))


BAD_CALLS = [
    (lambda x, w: autotune.conv_transpose2d(x[0], w), ValueError, "input must have 4 dimensions"),
    (lambda x, w: autotune.conv_transpose2d(x, w[0]), ValueError, "weight must have 4 dimensions"),
    (lambda x, w: autotune.conv_transpose2d(x.tolist(), w), TypeError, "input must be a numpy.ndarray or a torch"),
    (lambda x, w: autotune.conv_transpose2d(x.astype(np.int64), w.astype(np.int64)), TypeError,
     "input must be a floating-point array"),
    (lambda x, w: autotune.conv_transpose2d(x, w.astype(np.float64)), TypeError, "weight dtype float64 differs"),
    (lambda x, w: autotune.conv_transpose2d(x[:, :3], w), ValueError, r"weight.shape\[0\]=4 must equal the input"),
    (lambda x, w: autotune.conv_transpose2d(x, w, groups=3), ValueError, "groups=3 must divide"),
    (lambda x, w: autotune.conv_transpose2d(x, w, groups=0), ValueError, "groups must be a positive int"),
    (lambda x, w: autotune.conv_transpose2d(x, w, stride=0), ValueError, "stride must be >= 1"),
    (lambda x, w: autotune.conv_transpose2d(x, w, stride=(1, 2, 3)), TypeError, "stride must be an int or a pair"),
    (lambda x, w: autotune.conv_transpose2d(x, w, stride=1.5), TypeError, "stride must be an int or a pair"),
    (lambda x, w: autotune.conv_transpose2d(x, w, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda x, w: autotune.conv_transpose2d(x, w, padding=-1), ValueError, "padding must be >= 0"),
    (lambda x, w: autotune.conv_transpose2d(x, w, padding="same"), TypeError, "padding must be an int"),
    (lambda x, w: autotune.conv_transpose2d(x, w, stride=2, output_padding=2), ValueError,
     "output_padding must be smaller than either stride or dilation"),
    (lambda x, w: autotune.conv_transpose2d(x, w, padding=7), ValueError, "output size .* is smaller than 1"),
    (lambda x, w: autotune.conv_transpose2d(x, w, np.zeros(5, np.float32)), ValueError,
     "bias must have C_out=6 elements"),
    (lambda x, w: autotune.conv_transpose2d(x, w, np.zeros((6, 1), np.float32)), ValueError,
     "bias must have 1 dimensions"),
    (lambda x, w: autotune.conv_transpose2d(x, w, backend=3), TypeError, "backend must be a backend name"),
    (lambda x, w: autotune.conv_transpose2d(x, w, backend="numpy", config=[1]), ValueError, "config must be a mapping"),
    (lambda x, w: autotune.conv_transpose2d_backward(np.zeros((2, 6, 6, 6), np.float32), x, w), ValueError,
     r"grad_output must have the output's shape \(2, 6, 7, 7\)"),
    (lambda x, w: autotune.conv_transpose2d_backward(np.zeros((2, 6, 7, 7)), x, w), TypeError,
     "grad_output dtype float64 differs"),
    (lambda x, w: autotune.conv_transpose2d_backward(np.zeros((2, 6, 7, 7), np.float32), x, w, output_mask=True),
     TypeError, "output_mask must be a tuple of three bools"),
]


@pytest.mark.parametrize("call,exc,match", BAD_CALLS)
def test_bad_input_gives_a_clear_error(call, exc, match):
    x, w = _xw()
    with pytest.raises(exc, match=match):
        call(x, w)


def test_numpy_backend_refuses_float16_clearly():
    x, w = _xw(dtype=np.float16)
    with pytest.raises(ValueError, match="numpy backend computes float32 and float64 only, not float16"):
        autotune.conv_transpose2d(x, w, backend="numpy")


def test_registry():
    assert "numpy" in backends.names()
    assert backends.get("numpy") is backends.get("numpy")
    ok, why = backends.get("numpy").available()
    assert ok and why == ""
    with pytest.raises(ValueError, match="unknown backend 'nope'; registered backends: .*numpy"):
        backends.get("nope")


def test_import_is_lazy():
    """`import autotune` (and the registry) must not import the optional libraries."""
    code = ("import sys, autotune, backends; backends.names(); "
            "bad = [m for m in ('torch', 'pyopencl', 'triton', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_problem_files_are_validated(tmp_path):
    assert [p.name for p in load_problems()][:2] == ["fcn_score_up2", "fcn_score_up8"]
    header = "name,N,C_in,H,W,C_out,kH,kW,stride,padding,output_padding,dilation,groups,bias\n"
    bad = {
        "ok,1,2,3,3,2,3,3,2,1,0,1,1,0\nbad,1,2,3,3,2,3,3,x,1,0,1,1,0\n":
            "line 3, column 'stride': expected an integer, got 'x'",
        "a,1,2,3,3,2,3,3,2,1,3,1,1,0\n": "line 2 .a.: output_padding must be smaller",
        "a;rm,1,2,3,3,2,3,3,2,1,0,1,1,0\n": "column 'name' must be",
        "a,1,2,3,3,2,3,3,2,1,0,1,1\n": "line 2: wrong number of fields",
        "a,1,2,3,3,2,3,3,2,1:2:3,0,1,1,0\n": "expected 1 or 2 or 4 integer",
        "a,1,2,3,3,2,3,3,2,1,0,1,1,0\na,1,2,3,3,2,3,3,2,1,0,1,1,0\n": "duplicate problem name 'a'",
        "": "no problems in the file",
    }
    for body, match in bad.items():
        f = tmp_path / "p.csv"
        f.write_text(header + body)
        with pytest.raises(ValueError, match=match):
            load_problems(f)
    (tmp_path / "q.csv").write_text("name,N\nx,1\n")
    with pytest.raises(ValueError, match="missing column"):
        load_problems(tmp_path / "q.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_problems(tmp_path / "missing.csv")
    (tmp_path / "asym.csv").write_text(header.replace("bias\n", "bias,dtype\n")
                                       + "a,1,2,3,3,2,3,3,2,0:1:1:0,0,1,1,1,float64\n")
    p = load_problems(tmp_path / "asym.csv")[0].problem
    assert p.padding == ((0, 1), (1, 0)) and p.dtype == "float64" and p.bias


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,N\n")
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "bench", "--problems", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing column" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "bench", "--only", "nope"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "unknown problem name(s) nope" in proc.stderr


def test_bench_runs_and_prints_ratios(tmp_path):
    out = tmp_path / "bench.csv"
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "bench", "--only", "odd_shapes", "--backends", "numpy",
                           "--timing-budget", "0.01", "--csv", str(out), "--record",
                           "--results", str(tmp_path / "res")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import pandas as pd
    df = pd.read_csv(out)
    assert set(df.op) == set(autotune.OPS)
    assert (df[df.backend == "numpy"].status == "ok").all()
    assert (df[df.backend == "numpy"].gflops > 0).all()
    if IN_CI or "torch" in set(df.backend):
        assert (df[df.backend == "torch"].status == "baseline").all() and len(df[df.backend == "torch"]) == 4
        assert "numpy/torch" in proc.stdout and "Geometric mean" in proc.stdout
    from autotune.core import results
    recorded = results.read_file(results.device_file(tmp_path / "res", cpu_device_id()))
    # issue 11: a dispatch column (what a plain call runs) beside the backends, never recorded as a backend
    disp = df[df.backend == "dispatch"]
    assert len(disp) == 4 and (disp.status == "ok").all() and (disp.gflops > 0).all()
    assert disp.config.str.split().str[0].isin(backends.names()).all()
    assert (disp.threads == df[df.backend == "numpy"].threads.iloc[0]).all()
    assert "dispatch" in proc.stdout and "Ceiling" in proc.stdout
    if "torch" in set(df.backend):
        assert "dispatch/torch" in proc.stdout
    assert "dispatch" not in set(recorded.backend)
    assert len(recorded) == len(df[df.status.isin(["ok", "baseline"]) & (df.backend != "dispatch")])
    assert set(recorded[recorded.backend == "numpy"].status) == {"ok"}
    # issue 11: the device time beside the call's (numpy on a CPU: one thing); none for baselines
    mine = recorded[recorded.backend == "numpy"]
    assert (mine.device_time_s == mine.time_s).all()
    assert recorded[recorded.status == "baseline"].device_time_s.isna().all()
    # issue 14: what wrote each row, the threads it ran with and the load at the time; the sgemm peak, once
    assert set(recorded.source) == {"bench"}
    assert (recorded.threads >= 1).all() and recorded.load_avg.notna().all()
    assert len(recorded[recorded.backend == "blas"]) == 1 and "sgemm peak" in proc.stdout
    if "torch" in set(recorded.backend):
        threads = recorded.groupby("backend").threads.agg(set)
        assert threads["torch"] == threads["numpy"]
    assert "deprecated" not in proc.stderr and "warnings generated" not in proc.stderr


def test_bench_budget_is_a_deprecated_alias(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "bench", "--only", "odd_shapes", "--backends", "numpy",
                           "--ops", "backward_bias", "--no-torch", "--budget", "0"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--budget is deprecated" in proc.stderr and "--timing-budget must be > 0" in proc.stderr


def test_check_command_passes_and_catches_a_wrong_kernel(monkeypatch, capsys):
    from autotune import cli
    assert cli.main(["check", "--backends", "numpy", "--configs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == 4 and "FAIL" not in out
    numpy_backend = backends.get("numpy")
    real = numpy_backend.prepare

    def off_by_one(op, problem, device, config):
        kernel = real(op, problem, device, config)
        return (lambda *a: kernel(*a) + 1) if op == "backward_input" else kernel
    monkeypatch.setattr(numpy_backend, "prepare", off_by_one)
    assert cli.main(["check", "--backends", "numpy"]) == 1
    captured = capsys.readouterr()
    from autotune import check
    corners = len(check.corner_problems())
    assert re.search(rf"backward_input\s+{corners}\s+\S+\s+FAIL", captured.out)
    assert "numpy cpu" in captured.err and "> tolerance" in captured.err


def test_openblas_threads_sleep_at_once_when_autotune_loads_numpy():
    """`import autotune` before NumPy sets OPENBLAS_THREAD_TIMEOUT (OpenBLAS's idle threads otherwise spin ~0.1 s
    and hold the cores PyTorch's pool needs next); a value already set, or NumPy already loaded, is left alone."""
    code = "import sys, os; {first}import autotune, numpy; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}

    def run(first: str = "", **extra: str) -> str:
        proc = subprocess.run([sys.executable, "-c", code.format(first=first)], capture_output=True, text=True,
                              env={**env, **extra}, check=True)
        return proc.stdout.strip()
    assert run() == "4"
    assert run(OPENBLAS_THREAD_TIMEOUT="10") == "10"
    assert run(first="import numpy; ") == "None"
