"""`autotune explain`: the exported per-phase kernels, run as ordinary stride-1 convolutions and interleaved,
must reproduce the reference transposed convolution; the overlap map must match the reference run on ones."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

from autotune import explain
from autotune.cli import explain as cli_explain
from autotune.core import reference
from autotune.core.problem import Problem
from autotune.explain import phase_decomposition

# (kernel, stride, padding, dilation, output_padding, groups, H, W): k < s, k % s != 0, dilation sharing a
# factor with the stride, asymmetric padding that crops more than one phase period, output_padding from dilation.
CASES = [
    ((4, 4), (2, 2), 1, (1, 1), (0, 0), 1, 5, 6),
    ((3, 3), (2, 2), 1, (1, 1), (1, 1), 1, 4, 4),
    ((1, 1), (3, 3), 0, (1, 1), (2, 2), 1, 3, 4),       # k < s: phases without taps
    ((2, 3), (3, 2), (0, 1), (1, 1), (1, 0), 2, 4, 3),   # k < s on rows, groups
    ((3, 3), (2, 2), 0, (2, 2), (1, 1), 1, 4, 5),        # dilation = stride: only phase (0,0) has taps
    ((5, 4), (2, 3), ((3, 0), (1, 4)), (3, 2), (2, 1), 1, 5, 4),  # asymmetric padding, output_padding < dilation
    ((4, 2), (4, 1), ((5, 2), (0, 0)), (1, 3), (3, 0), 2, 3, 6),
    ((16, 16), (8, 8), 4, (1, 1), (0, 0), 1, 3, 3),
    ((3, 3), (1, 1), 2, (2, 1), (0, 0), 1, 4, 4),        # stride 1: one phase, a dilated convolution
]


def _problem(case: tuple) -> Problem:
    k, s, p, d, op, g, H, W = case
    return Problem.make(N=2, C_in=2 * g, H=H, W=W, C_out=3 * g, kH=k[0], kW=k[1], stride=s, padding=p,
                        output_padding=op, dilation=d, groups=g, dtype="float64")


def _torch():
    if os.environ.get("CI") == "true":
        import torch  # in CI a missing torch is a failure, not a skip
        return torch
    return pytest.importorskip("torch")


def _correlate(x: np.ndarray, k: np.ndarray, pad: list, dil: list, groups: int) -> np.ndarray:
    """A plain stride-1 correlation (what conv2d computes), written independently of autotune.explain."""
    (pt, pb), (pl, pr) = pad
    x = np.pad(x, ((0, 0), (0, 0), (max(pt, 0), max(pb, 0)), (max(pl, 0), max(pr, 0))))
    x = x[:, :, max(-pt, 0):x.shape[2] - max(-pb, 0), max(-pl, 0):x.shape[3] - max(-pr, 0)]
    N, _, H, W = x.shape
    Co, Cg, a, b = k.shape
    Ho, Wo = H - (a - 1) * dil[0], W - (b - 1) * dil[1]
    out = np.zeros((N, Co, Ho, Wo))
    for o in range(Co):
        g = o // (Co // groups)
        for c in range(Cg):
            for i in range(a):
                for j in range(b):
                    rows, cols = slice(i * dil[0], i * dil[0] + Ho), slice(j * dil[1], j * dil[1] + Wo)
                    out[:, o] += x[:, g * Cg + c, rows, cols] * k[o, c, i, j]
    return out


def _interleave_exported(directory, x: np.ndarray, conv) -> np.ndarray:
    desc = json.loads((directory / "phases.json").read_text())
    sh, sw = desc["stride"]
    Ho, Wo = desc["output_size"]
    y = None
    for item in desc["phases"]:
        rh, rw = item["phase"]
        if item["file"] is None:
            assert item["n_taps"] == 0
            continue
        k = np.load(directory / item["file"], allow_pickle=False)
        part = conv(x, k, item["conv2d_padding"], item["dilation"], desc["groups"])
        if y is None:
            y = np.zeros((x.shape[0], k.shape[0], Ho, Wo))
        assert part.shape[2:] == tuple(item["output_size"])
        y[:, :, rh::sh, rw::sw] = part
    return y


def _torch_conv(x, k, pad, dil, groups):
    torch = _torch()
    xt = torch.nn.functional.pad(torch.from_numpy(x), (pad[1][0], pad[1][1], pad[0][0], pad[0][1]))
    return torch.nn.functional.conv2d(xt, torch.from_numpy(k), dilation=tuple(dil), groups=groups).numpy()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[0]}s{c[1]}p{c[2]}d{c[3]}op{c[4]}g{c[5]}".replace(" ", ""))
@pytest.mark.parametrize("conv", ["numpy", "torch"])
def test_exported_phases_reproduce_reference(case, conv, tmp_path) -> None:
    p = _problem(case)
    rng = np.random.default_rng(7)
    x, w = rng.normal(size=p.input_shape), rng.normal(size=p.weight_shape)
    dec = phase_decomposition((p.kH, p.kW), p.stride, p.padding, p.dilation, p.output_padding)
    explain.export(dec, w, tmp_path, p.H, p.W, groups=p.groups)
    y = _interleave_exported(tmp_path, x, _correlate if conv == "numpy" else _torch_conv)
    expected = reference.forward(p, x, w)
    if y is None:  # no phase has a tap: the output is all zeros
        y = np.zeros_like(expected)
    # Phases without taps were never written: they must be zero in the reference too.
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dec.run(x, w, groups=p.groups), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[0]}s{c[1]}p{c[2]}d{c[3]}op{c[4]}".replace(" ", ""))
def test_overlap_and_taps(case) -> None:
    p = _problem(case)
    dec = phase_decomposition((p.kH, p.kW), p.stride, p.padding, p.dilation, p.output_padding)
    one = Problem.make(N=1, C_in=1, H=p.H, W=p.W, C_out=1, kH=p.kH, kW=p.kW, stride=p.stride, padding=p.padding,
                       output_padding=p.output_padding, dilation=p.dilation)
    ones = reference.forward(one, np.ones(one.input_shape), np.ones(one.weight_shape))[0, 0]
    np.testing.assert_array_equal(dec.overlap_count(p.H, p.W), ones)
    # Every tap feeds exactly one phase, and a phase's tap count is its gain for a constant weight.
    taps = sorted(t for ph in dec.phases for t in ph.taps)
    assert taps == [(a, b) for a in range(p.kH) for b in range(p.kW)]
    assert (dec.tap_phase_map() >= 0).all()
    sums = dec.phase_sums(np.ones((p.kH, p.kW)))
    assert sums[:, 0].tolist() == [ph.n_taps for ph in dec.phases]
    assert len(dec.phases) == p.stride[0] * p.stride[1]


def test_checkerboard_counts() -> None:
    even = phase_decomposition(4, 2, 1)
    assert [ph.n_taps for ph in even.phases] == [4, 4, 4, 4]
    odd = phase_decomposition(3, 2, 1)
    assert [ph.n_taps for ph in odd.phases] == [1, 2, 2, 4]
    # A k=4, s=2 kernel whose taps differ: phases sum differently although their tap counts are equal.
    w = np.arange(16.0).reshape(4, 4)
    sums = even.phase_sums(w)[:, 0]
    assert sums.tolist() == [w[[3, 1]][:, [3, 1]].sum(), w[[3, 1]][:, [2, 0]].sum(), w[[2, 0]][:, [3, 1]].sum(),
                             w[[2, 0]][:, [2, 0]].sum()]
    assert len(set(sums.tolist())) == 4
    assert "Uneven tap counts" in explain.checkerboard_note(odd, odd.phase_sums(np.ones((3, 3))), True)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_explain.add_arguments(parser)
    return cli_explain.run(parser.parse_args(list(argv)))


def test_cli_text_and_export(tmp_path, capsys) -> None:
    assert _cli("--kernel", "4", "--stride", "2", "--padding", "1", "--export", str(tmp_path / "out")) == 0
    text = capsys.readouterr().out
    assert "phase (0,0): output rows 0::2, cols 0::2" in text and "phase (1,1)" in text
    assert "Overlap count per output pixel" in text and "Every phase has 4 tap(s)" in text
    names = sorted(f.name for f in (tmp_path / "out").iterdir())
    assert names == ["phase_0_0.npy", "phase_0_1.npy", "phase_1_0.npy", "phase_1_1.npy", "phases.json",
                     "phases.txt"]
    # A weight file gives the kernel size and channels; asymmetric padding and a k < s phase without taps.
    w = np.random.default_rng(0).normal(size=(2, 3, 2, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    assert _cli("--weight", str(tmp_path / "w.npy"), "--stride", "3:2", "--padding", "0:1:1:0", "--export",
                str(tmp_path / "e2")) == 0
    text = capsys.readouterr().out
    assert "kernel 2x3, stride 3x2" in text and "no kernel tap reaches these pixels" in text
    desc = json.loads((tmp_path / "e2" / "phases.json").read_text())
    assert [item["file"] for item in desc["phases"]][4:] == [None, None]
    assert np.load(tmp_path / "e2" / "phase_0_0.npy").shape[:2] == (3, 2)


@pytest.mark.parametrize("argv, message", [
    (["--kernel", "0"], "kernel"),
    (["--kernel", "3", "--stride", "2", "--output-padding", "2"], "output_padding"),
    (["--kernel", "3", "--padding", "1:2:3"], "--padding"),
    (["--kernel", "3", "--stride", "-1"], "--stride"),
    (["--stride", "2"], "--kernel is required"),
    (["--kernel", "3", "--padding", "9", "--input-size", "2"], "output size"),
    (["--kernel", "3", "--input-size", "0"], "--input-size"),
    (["--kernel", "3", "--dilation", "65"], "dilation"),
])
def test_cli_bad_arguments(argv, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        _cli(*argv)


def test_bad_weights(tmp_path) -> None:
    dec = phase_decomposition(3, 2)
    with pytest.raises(ValueError, match="shape"):
        dec.phase_sums(np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        dec.phase_sums(np.full((3, 3), np.nan))
    with pytest.raises(TypeError, match="real numbers"):
        dec.phase_sums(np.full((3, 3), "a"))
    with pytest.raises(ValueError, match="groups"):
        dec.phase_sums(np.ones((3, 1, 3, 3)), groups=2)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable"):
        _cli("--weight", str(tmp_path / "obj.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable"):
        _cli("--weight", str(tmp_path / "junk.npy"))
    with pytest.raises(FileNotFoundError):
        _cli("--weight", str(tmp_path / "missing.npy"))
    with pytest.raises(TypeError, match="kernel"):
        phase_decomposition(2.5)


def test_large_overlap_map_is_summarized(capsys) -> None:
    assert _cli("--kernel", "3", "--stride", "2", "--input-size", "40:30", "--weight", "ones") == 0
    text = capsys.readouterr().out
    assert "81x61 pixels; top-left 24x24 corner" in text and "pixels per count:" in text


def test_registered_in_cli(capsys) -> None:
    from autotune import cli
    assert cli.COMMANDS["explain"] == "autotune.cli.explain"
    assert cli.main(["explain", "--kernel", "2", "--stride", "2"]) == 0
    assert "phase (1,1)" in capsys.readouterr().out
    assert cli.main(["explain", "--kernel", "3", "--stride", "2", "--output-padding", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autotune explain: error: output_padding") and err.count("\n") == 1
