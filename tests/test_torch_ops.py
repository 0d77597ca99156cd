"""The registered custom ops behind `autotune.torch`: torch.compile(fullgraph=True), torch.export, TorchScript,
opcheck, channels_last, double backward; the model-level calls (`convert`, `layer_problems`, `model_problems`) on
the example models; the `--model` flag of tune and bench; the dispatch log switch."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI

import autotune
from autotune import cli, dispatch, log
from autotune.cli import tune as cli_tune
from autotune.problems import load_problems

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch extra: required in CI
    if IN_CI:
        raise
    pytest.skip("torch is not installed (pip install 'convt-autotune[torch]')", allow_module_level=True)

import autotune.torch as att

MODELS = str(Path(__file__).resolve().parent.parent / "examples" / "models.py")


@pytest.fixture(autouse=True)
def empty_results(dirs):
    """Hermetic dispatch: no results anywhere (conftest's `dirs`), so calls take the default rule."""
    yield


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = att.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
        self.up2 = att.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up2(torch.relu(self.up(x)))


def _small() -> tuple[Small, torch.Tensor]:
    torch.manual_seed(0)
    return Small(), torch.randn(2, 4, 5, 5)


def _ops_in(graph) -> list[str]:
    return [str(n.target) for n in graph.nodes if n.op == "call_function" and "autotune" in str(n.target)]


def test_compile_fullgraph_without_warnings():
    model, x = _small()
    ref = model(x)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    torch._dynamo.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(torch.compile(model, fullgraph=True, backend=record)(x), ref)
            # aot_eager: the fake implementations and the autograd formulas, traced forward and backward
            xg = x.clone().requires_grad_(True)
            y = torch.compile(model, fullgraph=True, backend="aot_eager")(xg)
            torch.testing.assert_close(y, ref)
            y.square().sum().backward()
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1 and _ops_in(graphs[0].graph) == ["autotune.conv_transpose2d.default"] * 2
    xr = x.clone().requires_grad_(True)
    model(xr).square().sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-5)


def test_export_with_a_dynamic_batch():
    model, x = _small()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    assert _ops_in(ep.graph) == ["autotune.conv_transpose2d.default"] * 2
    for n in (2, 3):
        xn = torch.randn(n, 4, 5, 5)
        torch.testing.assert_close(ep.module()(xn), model(xn))


def test_torchscript():
    model, x = _small()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in recent torch
        scripted = torch.jit.script(model)
        traced = torch.jit.trace(model, x)  # tracing records the registered op, not the eager shortcut
    assert "autotune.conv_transpose2d" in scripted.up.code
    torch.testing.assert_close(scripted(x), model(x))
    assert "autotune::conv_transpose2d" in str(traced.inlined_graph)
    x3 = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(traced(x3), model(x3))


@pytest.mark.parametrize("op, args", [
    ("conv_transpose2d", lambda x, w, gy: (x, w, torch.randn(6, dtype=x.dtype), [2, 1], [1, 0, 2, 1], [1, 0], 2,
                                           [1, 2], None, None)),
    ("conv_transpose2d_backward_input", lambda x, w, gy: (gy, w, [3, 4], [2, 1], [1, 0, 2, 1], [1, 0], 2, [1, 2],
                                                          None, None)),
    ("conv_transpose2d_backward_weight", lambda x, w, gy: (gy, x, [3, 2], [2, 1], [1, 0, 2, 1], [1, 0], 2,
                                                           [1, 2], None, None)),
    ("conv_transpose2d_backward_bias", lambda x, w, gy: (gy, w, [3, 4], [2, 1], [1, 0, 2, 1], [1, 0], 2, [1, 2],
                                                         None, None)),
])
def test_opcheck(op, args):
    """torch.library.opcheck: schema, fake implementation, autograd registration, AOT dispatch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    y = F.conv_transpose2d(x, w, None, (2, 1), 0, (1, 0), 2, (1, 2))  # shape only (asymmetric padding below)
    gy = torch.randn(2, 6, y.shape[2] - 1, y.shape[3] - 3, dtype=torch.float64, generator=gen, requires_grad=True)
    torch.library.opcheck(getattr(torch.ops.autotune, op).default, args(x, w, gy))


@pytest.mark.parametrize("kw", [
    dict(stride=2, padding=1, output_padding=1, groups=2),
    dict(stride=(2, 1), padding=((1, 0), (0, 2)), dilation=(1, 2)),
], ids=["groups-outpad", "asymmetric-dilation"])
def test_double_backward_through_the_same_ops(kw):
    gen = torch.Generator().manual_seed(0)
    groups = kw.get("groups", 1)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 6 // groups, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    def fn(*t):
        return att.conv_transpose2d(*t, **kw)

    assert torch.autograd.gradgradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6)
    if "padding" in kw and isinstance(kw["padding"], int):  # torch can express it: the same second derivative
        def penalty(conv, x, w, b):
            (gx,) = torch.autograd.grad(conv(x, w, b, **kw).square().sum(), x, create_graph=True)
            return torch.autograd.grad(gx.square().sum(), (x, w, b))
        for got, want in zip(penalty(att.conv_transpose2d, x, w, b), penalty(F.conv_transpose2d, x, w, b)):
            torch.testing.assert_close(got, want)


def test_channels_last_in_channels_last_out():
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
    mod = att.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 5, 6).to(memory_format=torch.channels_last).requires_grad_(True)
    x_ref = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    y, y_ref = mod(x), ref(x_ref)
    assert y_ref.is_contiguous(memory_format=torch.channels_last) and not y_ref.is_contiguous()
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    gy = torch.randn_like(y_ref)
    y.backward(gy)
    y_ref.backward(gy)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mod.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-4)
    # contiguous stays contiguous
    assert mod(torch.randn(2, 8, 5, 6)).is_contiguous()


def test_eager_and_registered_op_agree():
    """Eager calls skip the dispatcher (`_call`); the registered op runs the same implementation."""
    gen = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(2, 4, 5, 5, generator=gen), torch.randn(4, 3, 3, 3, generator=gen), torch.randn(3)
    args = ([2, 2], [1, 1, 1, 1], [1, 1], 1, [1, 1], None, None)
    torch.testing.assert_close(torch.ops.autotune.conv_transpose2d(x, w, b, *args),
                               att.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1))
    with pytest.raises(ValueError, match="weight.shape\\[0\\]=4 must equal the input channels"):
        att.conv_transpose2d(torch.randn(1, 3, 4, 4), w)
    with pytest.raises(ValueError, match="bias must have C_out=3"):
        att.conv_transpose2d(x, w, torch.randn(4))


# ---- model-level calls --------------------------------------------------------------------------------------------
class MyConvT(torch.nn.ConvTranspose2d):
    """A subclass with torch's forward and a method of its own: converted, keeping the method."""

    def describe(self) -> str:
        return f"{self.in_channels}->{self.out_channels}"


class OwnForward(torch.nn.ConvTranspose2d):
    def forward(self, x, output_size=None):
        return super().forward(x, output_size) * 2


def test_convert_keeps_parameters_state_dict_and_outputs():
    factory = att.load_factory(f"{MODELS}:dcgan_generator")
    torch.manual_seed(0)
    model = torch.nn.Sequential(factory(nz=8, ngf=4), MyConvT(3, 2, 3, stride=2), OwnForward(2, 2, 3))
    ref = copy.deepcopy(model)
    params = list(model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert att.convert(model) is model
    convs = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert sum(isinstance(m, att.ConvTranspose2d) for m in convs) == 6  # 5 DCGAN layers and MyConvT
    assert not isinstance(model[2], att.ConvTranspose2d)  # its own forward: left to torch
    assert isinstance(model[1], MyConvT) and model[1].describe() == "3->2"
    assert list(model.parameters()) == params and all(a is b for a, b in zip(model.parameters(), params))
    assert list(model.state_dict()) == list(state)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    x = torch.randn(3, 8, 1, 1)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)  # training mode: batch statistics
    model.eval()
    ref.eval()
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    model64 = att.convert(copy.deepcopy(ref).double())
    assert model64[0][0].weight.dtype == torch.float64 and model64(x.double()).dtype == torch.float64


def _small_models() -> dict[str, tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[tuple]]]:
    """The three example models at small sizes, their inputs and the (C_in, H, C_out, k, stride, padding) of the
    transposed convolutions they should report."""
    def load(name):
        return att.load_factory(f"{MODELS}:{name}")

    torch.manual_seed(0)
    return {
        "dcgan_generator": (load("dcgan_generator")(nz=8, ngf=4), (torch.randn(2, 8, 1, 1),),
                            [(8, 1, 32, 4, 1, 0), (32, 4, 16, 4, 2, 1), (16, 8, 8, 4, 2, 1), (8, 16, 4, 4, 2, 1),
                             (4, 32, 3, 4, 2, 1)]),
        "unet_decoder": (load("unet_decoder")(channels=(32, 16, 8), classes=2), (torch.randn(1, 32, 4, 4),),
                         [(32, 4, 16, 2, 2, 0), (16, 8, 8, 2, 2, 0)]),
        "fcn8s_head": (load("fcn8s_head")(classes=3, pool3=4, pool4=5, conv7=6),
                       (torch.randn(1, 4, 8, 8), torch.randn(1, 5, 4, 4), torch.randn(1, 6, 2, 2)),
                       [(3, 2, 3, 4, 2, 1), (3, 4, 3, 4, 2, 1), (3, 8, 3, 16, 8, 4)]),
    }


@pytest.mark.parametrize("name", ["dcgan_generator", "unet_decoder", "fcn8s_head"])
def test_layer_problems_of_the_example_models(name, tmp_path):
    model, inputs, expected = _small_models()[name]
    model.train()
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bn]
    found = att.layer_problems(model, *inputs)
    assert [(p.problem.C_in, p.problem.H, p.problem.C_out, p.problem.kH, p.problem.stride[0],
             p.problem.padding[0][0]) for p in found] == expected
    assert model.training and all(torch.equal(m.running_mean, b) for m, b in zip(bn, before))
    assert all(p.problem.N == inputs[0].shape[0] and p.problem.dtype == "float32" for p in found)
    y = model(*inputs)  # every problem is what the layer computes: the output size matches
    assert found[-1].problem.output_size == tuple(y.shape[-2:]) or name == "unet_decoder"
    text = att.problems_csv(found, tmp_path / "p.csv")
    assert [(p.name, p.problem) for p in load_problems(tmp_path / "p.csv")] == [(p.name, p.problem) for p in found]
    assert text.splitlines()[0].startswith("name,N,C_in,H,W,C_out")


def test_layer_problems_output_size_and_repeated_layers():
    layer = torch.nn.ConvTranspose2d(2, 2, 3, stride=2)

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = layer

        def forward(self, x):
            return self.up(self.up(x), output_size=[20, 19])
    found = att.layer_problems(Twice(), torch.randn(1, 2, 4, 4))
    assert [p.name for p in found] == ["up", "up.2"]
    assert found[1].problem.output_padding == (1, 0) and found[1].problem.output_size == (20, 19)


def test_model_problems_errors():
    with pytest.raises(ValueError, match="expected pkg.module:factory"):
        att.model_problems("examples.models")
    with pytest.raises(ValueError, match="cannot import no_such_module"):
        att.model_problems("no_such_module:f", ["1,2,3,4"])
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        att.model_problems(f"{MODELS}:nope", ["1,2,3,4"])
    with pytest.raises(ValueError, match="--input-shape '1,x'"):
        att.model_problems(f"{MODELS}:dcgan_generator", ["1,x"])
    with pytest.raises(ValueError, match="missing 2 required positional"):
        att.model_problems(f"{MODELS}:fcn8s_head", ["1,4096,2,2"])
    found = att.model_problems(f"{MODELS}:fcn8s_head", ["1,256,8,8", "1,512,4,4", "1,4096,2,2"])
    assert [p.name for p in found] == ["fcn8s_head.upscore2", "fcn8s_head.upscore_pool4", "fcn8s_head.upscore8"]


def test_model_flag_of_bench_and_tune(capsys, monkeypatch):
    monkeypatch.chdir(Path(MODELS).parent.parent)  # pkg.module:factory resolves from the current directory
    spec = "examples.models:dcgan_generator"
    argv = ["--model", spec, "--input-shape", "2,8,1,1"]
    # a small generator: the factory's defaults are the real model; its first layer takes 100 channels
    with pytest.raises(SystemExit):
        cli.main(["tune", "--model"])
    code = cli.main(["bench", *argv, "--ops", "forward", "--backends", "numpy", "--timing-budget", "0.001",
                     "--no-torch"])
    out, err = capsys.readouterr()
    assert code == 2 and "error: --model 'examples.models:dcgan_generator' on input shape(s) 2,8,1,1" in err
    code = cli.main(["bench", "--model", f"{MODELS}:fcn8s_head", "--input-shape", "1,8,8,8", "--input-shape",
                     "1,8,4,4", "--input-shape", "1,8,2,2", "--ops", "forward", "--backends", "numpy", "--budget",
                     "0.001", "--no-torch"])
    out, err = capsys.readouterr()
    assert code == 2 and "to have 4096 channels" in err.splitlines()[-1]  # wrong channels: one clear line
    code = cli.main(["bench", "--model", spec, "--ops", "forward", "--backends", "numpy", "--timing-budget", "0.001",
                     "--no-torch", "--only", "dcgan_generator.12"])
    out, err = capsys.readouterr()
    assert code == 0 and "dcgan_generator.12" in out and "dcgan_generator.3 " not in out
    args = cli.build_parser().parse_args(["tune", "--model", spec, "--only", "dcgan_generator.0"])
    problems = cli_tune.options_from_args(args).problems
    assert [(p.name, p.problem.C_in, p.problem.N) for p in problems] == [("dcgan_generator.0", 100, 64)]
    assert cli.main(["tune", "--model", spec, "--problems", "x.csv"]) == 2
    assert "alternatives" in capsys.readouterr().err


# ---- the log switch -----------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_logger():
    logger = logging.getLogger("autotune")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    for h in logger.handlers:
        if h not in handlers:
            logger.removeHandler(h)
    log._handler = None


def test_log_switch_environment(fresh_logger, monkeypatch, capfd):
    x, w = np.ones((1, 2, 3, 3), np.float32), np.ones((2, 2, 3, 3), np.float32)
    autotune.conv_transpose2d(x, w)
    assert "autotune.dispatch" not in capfd.readouterr().err  # off by default
    dispatch.clear_cache()
    monkeypatch.setattr(log, "_handler", None)
    monkeypatch.setenv(log.ENV_VAR, "1")
    autotune.conv_transpose2d(x, w)
    autotune.conv_transpose2d(x, w)  # memoized: logged once
    autotune.conv_transpose2d_backward(np.ones((1, 2, 5, 5), np.float32), x, w, output_mask=(True, False, False))
    err = capfd.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("autotune.dispatch:")]
    assert len(lines) == 2, err
    # torch is loaded here: the untuned CPU default is PyTorch's plain call
    assert " forward n1_ci2_h3_w3_co2_k3x3" in lines[0] and "-> torch on cpu-" in lines[0]
    assert '"algorithm":' in lines[0] and "[default] default rule" in lines[0]
    assert " backward_input " in lines[1]


def test_log_switch_python_logging(fresh_logger, caplog, monkeypatch):
    monkeypatch.delenv(log.ENV_VAR, raising=False)
    x, w = np.ones((1, 2, 3, 3), np.float32), np.ones((2, 2, 3, 3), np.float32)
    with caplog.at_level(logging.INFO, logger="autotune"):
        autotune.conv_transpose2d(x, w, backend="numpy", config={"algorithm": "col2im"})
    (rec,) = [r for r in caplog.records if r.name == "autotune.dispatch"]
    assert "[forced] forced by backend= and config=" in rec.getMessage() and "col2im" in rec.getMessage()
