"""`autotune explain`: the stride-phase (sub-pixel) decomposition of a transposed convolution.

Output pixel `oh` of a transposed convolution receives tap `kh` from input row `ih = (oh + pad_top - kh*d) /
s` when that division is exact. So the output rows split into `s` phases `r = oh % s`; every row of one phase
uses the same taps, each reading the input at a fixed offset. A phase is therefore an ordinary stride-1
correlation of the input with a small kernel (the phase's taps, flipped), and the layer is `s_h * s_w` such
convolutions whose outputs are interleaved: `y[:, :, r_h::s_h, r_w::s_w] = conv2d(x, K[r_h, r_w])`. This
module computes that decomposition, the per-phase weight sums (a phase whose taps sum differently gives
checkerboard artefacts), the overlap count per output pixel, and exports the small kernels so the layer can
run as plain convolutions (e.g. in a shader).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotune.core.errors import ArgumentTypeError, MissingFileError, UserError
from autotune.core.geometry import stride_phases
from autotune.core.problem import Problem

MAX_KERNEL = 64        # per axis, also for stride and dilation: a bigger layer is not something a person reads
MAX_GRID = 48          # rows/columns of the overlap map printed in full; bigger maps are summarized
MAX_WEIGHT_BYTES = 256 * 2**20
MAX_INPUT_SIZE = 256


@dataclass(frozen=True)
class AxisPhase:
    """One axis of one phase. Output positions `o = phase + stride*m` (m = 0, 1, ...) receive
    `sum_j x[m + offset + j*dilation] * w[taps[j]]`: `taps` are kernel indices in the small kernel's order
    (descending, i.e. flipped), `dilation` the spacing of the small kernel."""

    phase: int
    taps: tuple[int, ...]
    offset: int
    dilation: int

    def output_length(self, out_size: int, stride: int) -> int:
        return len(range(self.phase, out_size, stride))

    def conv_padding(self, in_size: int, out_size: int, stride: int) -> tuple[int, int]:
        """(begin, end) padding of the input for a stride-1 correlation giving this phase's outputs; negative
        means crop. Only meaningful when the phase has taps and outputs."""
        m = self.output_length(out_size, stride)
        begin = -self.offset
        end = (m - 1) + self.offset + (len(self.taps) - 1) * self.dilation - (in_size - 1)
        return begin, end


@dataclass(frozen=True)
class Phase:
    """Output pixels `(oh, ow)` with `oh % s_h == rows.phase` and `ow % s_w == cols.phase`."""

    rows: AxisPhase
    cols: AxisPhase

    @property
    def index(self) -> tuple[int, int]:
        return (self.rows.phase, self.cols.phase)

    @property
    def taps(self) -> list[tuple[int, int]]:
        """The kernel taps (kh, kw) feeding this phase, in the small kernel's (flipped) order."""
        return [(kh, kw) for kh in self.rows.taps for kw in self.cols.taps]

    @property
    def n_taps(self) -> int:
        return len(self.rows.taps) * len(self.cols.taps)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return (len(self.rows.taps), len(self.cols.taps))

    def small_kernel(self, weight: np.ndarray) -> np.ndarray:
        """The phase's kernel in transposed-convolution layout (C_in, C_out/groups, a, b)."""
        return weight[:, :, list(self.rows.taps)][:, :, :, list(self.cols.taps)]

    def conv2d_kernel(self, weight: np.ndarray, groups: int = 1) -> np.ndarray:
        """The phase's kernel in conv2d layout (C_out, C_in/groups, a, b), for `conv2d(..., groups=groups)`."""
        k = self.small_kernel(weight)
        c_in, cog, a, b = k.shape
        k = k.reshape(groups, c_in // groups, cog, a, b).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(k.reshape(groups * cog, c_in // groups, a, b))


@dataclass(frozen=True)
class Decomposition:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    output_padding: tuple[int, int]
    phases: tuple[Phase, ...]   # row-major over (r_h, r_w)

    def output_size(self, H: int, W: int) -> tuple[int, int]:
        return self._problem(H, W).output_size

    def _problem(self, H: int, W: int, C_in: int = 1, C_out: int = 1, groups: int = 1) -> Problem:
        return Problem.make(N=1, C_in=C_in, H=H, W=W, C_out=C_out, kH=self.kernel[0], kW=self.kernel[1],
                            stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                            dilation=self.dilation, groups=groups)

    def phase(self, r_h: int, r_w: int) -> Phase:
        return self.phases[r_h * self.stride[1] + r_w]

    def tap_phase_map(self) -> np.ndarray:
        """(kH, kW) array: the index (r_h*s_w + r_w) of the phase each tap feeds. Every tap feeds exactly one."""
        m = np.full(self.kernel, -1, dtype=np.int64)
        for i, ph in enumerate(self.phases):
            for kh, kw in ph.taps:
                m[kh, kw] = i
        return m

    def overlap_count(self, H: int, W: int) -> np.ndarray:
        """(Ho, Wo) int array: how many (input pixel, tap) pairs write each output pixel. Taps factor per
        axis, so the count is the outer product of the per-axis counts."""
        Ho, Wo = self.output_size(H, W)
        rows = _axis_overlap(H, Ho, self.kernel[0], self.stride[0], self.padding[0][0], self.dilation[0])
        cols = _axis_overlap(W, Wo, self.kernel[1], self.stride[1], self.padding[1][0], self.dilation[1])
        return np.outer(rows, cols)

    def phase_sums(self, weight: np.ndarray, groups: int = 1) -> np.ndarray:
        """(n_phases, C_out): each phase's response to a constant input of 1 (away from the borders): the sum
        of its taps over the input channels of the group. Equal rows mean no checkerboard for flat inputs."""
        w = check_weight(weight, self.kernel, groups)
        c_in, cog = w.shape[:2]
        out = np.zeros((len(self.phases), groups * cog))
        for i, ph in enumerate(self.phases):
            k = ph.small_kernel(w).astype(np.float64).reshape(groups, c_in // groups, cog, -1)
            out[i] = k.sum(axis=(1, 3)).reshape(-1)
        return out

    def run(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
            groups: int = 1) -> np.ndarray:
        """The transposed convolution computed as s_h*s_w stride-1 correlations, interleaved (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 4:
            raise UserError(f"x must have shape (N, C_in, H, W), got {x.shape}")
        w = check_weight(weight, self.kernel, groups).astype(np.float64)
        N, C_in, H, W = x.shape
        if C_in != w.shape[0]:
            raise UserError(f"x has {C_in} channels but weight has C_in={w.shape[0]}")
        Ho, Wo = self.output_size(H, W)
        C_out = groups * w.shape[1]
        y = np.zeros((N, C_out, Ho, Wo))
        for ph in self.phases:
            y[:, :, ph.rows.phase::self.stride[0], ph.cols.phase::self.stride[1]] = correlate_phase(
                self, ph, x, w, groups)
        if bias is not None:
            y += np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1)
        return y

    def describe(self, H: int, W: int, groups: int = 1) -> dict[str, Any]:
        """A JSON-able description: per phase its output slice, taps, small-kernel shape, offsets, dilation
        and the conv2d padding for an input of H x W."""
        Ho, Wo = self.output_size(H, W)
        phases = []
        for ph in self.phases:
            item: dict[str, Any] = {
                "phase": list(ph.index),
                "output_rows": f"{ph.rows.phase}::{self.stride[0]}",
                "output_cols": f"{ph.cols.phase}::{self.stride[1]}",
                "output_size": [ph.rows.output_length(Ho, self.stride[0]),
                                ph.cols.output_length(Wo, self.stride[1])],
                "n_taps": ph.n_taps,
                "taps": [list(t) for t in ph.taps],
                "row_taps": list(ph.rows.taps), "col_taps": list(ph.cols.taps),
                "kernel_size": list(ph.kernel_size),
                "input_offset": [ph.rows.offset, ph.cols.offset],
                "dilation": [ph.rows.dilation, ph.cols.dilation],
            }
            if ph.n_taps and all(item["output_size"]):
                item["conv2d_padding"] = [list(ph.rows.conv_padding(H, Ho, self.stride[0])),
                                          list(ph.cols.conv_padding(W, Wo, self.stride[1]))]
            phases.append(item)
        return {
            "kernel": list(self.kernel), "stride": list(self.stride),
            "padding": [list(self.padding[0]), list(self.padding[1])], "dilation": list(self.dilation),
            "output_padding": list(self.output_padding), "groups": groups,
            "input_size": [H, W], "output_size": [Ho, Wo],
            "how_to_run": (
                "for each phase: y[:, :, r_h::s_h, r_w::s_w] = conv2d(pad(x), K, stride=1, dilation=dilation, "
                "groups=groups) (+ bias), where pad adds conv2d_padding[0] = (top, bottom) rows and "
                "conv2d_padding[1] = (left, right) columns of zeros (a negative amount crops instead); "
                "equivalently output (m, l) of the phase reads x[m + input_offset[0] + a*dilation[0], "
                "l + input_offset[1] + b*dilation[1]] times K[:, :, a, b]. K is phase_<r_h>_<r_w>.npy in conv2d "
                "layout (C_out, C_in/groups, a, b) = the weight's taps row_taps x col_taps, flipped. A phase "
                "without taps outputs only the bias."),
            "phases": phases,
        }


def _axis_overlap(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    count = np.zeros(n_out, dtype=np.int64)
    for kk in range(k):
        for i in range(n_in):
            o = i * s + kk * d - p
            if 0 <= o < n_out:
                count[o] += 1
    return count


def _axis_phases(k: int, s: int, p_begin: int, d: int, n_out: int) -> list[AxisPhase]:
    """Explain's view of the geometry's phases, in output-phase order: taps descending (flipped, as a correlation
    reads them) and the input offset of the first one."""
    by_output = {ph.output_phase: ph for ph in stride_phases(k, s, d, p_begin, n_out)}
    out = []
    for r in range(s):
        ph = by_output[r]
        taps = tuple(reversed(ph.taps))
        offset = (r + p_begin - taps[0] * d) // s if taps else 0
        out.append(AxisPhase(phase=r, taps=taps, offset=offset, dilation=ph.input_step))
    return out


def phase_decomposition(kernel: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                        output_padding: Any = 0) -> Decomposition:
    """The stride-phase decomposition of a ConvTranspose2d layer. Arguments as torch takes them (int or pair;
    padding also ((top, bottom), (left, right))); invalid layers raise ValueError/TypeError naming the
    argument."""
    kH, kW = _pair_arg("kernel", kernel)
    # Validated by the problem model; the checks that depend on the input size are repeated when one is given.
    base = Problem.make(N=1, C_in=1, H=MAX_INPUT_SIZE, W=MAX_INPUT_SIZE, C_out=1, kH=kH, kW=kW, stride=stride,
                        padding=padding, output_padding=output_padding, dilation=dilation)
    (sh, sw), (dh, dw) = base.stride, base.dilation
    for name, v in (("stride", base.stride), ("dilation", base.dilation)):
        if max(v) > MAX_KERNEL:
            raise UserError(f"{name} must be at most {MAX_KERNEL} per axis for explain, got {v}")
    (pt, _), (pl, _) = base.padding
    Ho, Wo = base.output_size
    rows, cols = _axis_phases(kH, sh, pt, dh, Ho), _axis_phases(kW, sw, pl, dw, Wo)
    phases = tuple(Phase(r, c) for r in rows for c in cols)
    return Decomposition(kernel=(kH, kW), stride=base.stride, padding=base.padding, dilation=base.dilation,
                         output_padding=base.output_padding, phases=phases)


def _pair_arg(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        v = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(u, (int, np.integer)) and not isinstance(u, bool) for u in value)):
        v = (int(value[0]), int(value[1]))
    else:
        raise ArgumentTypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(v) < 1 or max(v) > MAX_KERNEL:
        raise UserError(f"{name} must be between 1 and {MAX_KERNEL} per axis, got {v}")
    return v


def check_weight(weight: Any, kernel: tuple[int, int], groups: int = 1) -> np.ndarray:
    """A real, finite weight of shape (C_in, C_out/groups, kH, kW), or (kH, kW) meaning one channel."""
    if not isinstance(weight, np.ndarray):
        raise ArgumentTypeError(f"weight must be a numpy.ndarray, got {type(weight).__name__}")
    if weight.dtype.kind not in "fiu" or weight.dtype.kind == "b":
        raise ArgumentTypeError(f"weight must hold real numbers, got dtype {weight.dtype}")
    if weight.ndim == 2:
        weight = weight[None, None]
    if weight.ndim != 4 or tuple(weight.shape[2:]) != tuple(kernel):
        raise UserError(f"weight must have shape (C_in, C_out/groups, {kernel[0]}, {kernel[1]}) or "
                         f"({kernel[0]}, {kernel[1]}), got {weight.shape}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise UserError(f"groups must be an int >= 1, got {groups!r}")
    if weight.shape[0] % groups or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise UserError(f"weight's C_in={weight.shape[0]} must be a positive multiple of groups={groups}")
    if not np.all(np.isfinite(weight)):
        raise UserError("weight holds NaN or infinite values")
    return weight


def _pad_or_crop(x: np.ndarray, axis: int, begin: int, end: int) -> np.ndarray:
    if begin < 0:
        x = np.take(x, range(-begin, x.shape[axis]), axis=axis)
        begin = 0
    if end < 0:
        x = np.take(x, range(x.shape[axis] + end), axis=axis)
        end = 0
    pad = [(0, 0)] * x.ndim
    pad[axis] = (begin, end)
    return np.pad(x, pad)


def correlate_phase(dec: Decomposition, ph: Phase, x: np.ndarray, weight: np.ndarray, groups: int = 1
                    ) -> np.ndarray:
    """One phase's output (N, C_out, M_h, M_w) as a plain stride-1 correlation of x with the phase's kernel."""
    N, C_in, H, W = x.shape
    Ho, Wo = dec.output_size(H, W)
    mh, mw = ph.rows.output_length(Ho, dec.stride[0]), ph.cols.output_length(Wo, dec.stride[1])
    cog = weight.shape[1]
    out = np.zeros((N, groups, cog, mh, mw))
    if ph.n_taps == 0 or mh == 0 or mw == 0:
        return out.reshape(N, groups * cog, mh, mw)
    xp = _pad_or_crop(x, 2, *ph.rows.conv_padding(H, Ho, dec.stride[0]))
    xp = _pad_or_crop(xp, 3, *ph.cols.conv_padding(W, Wo, dec.stride[1]))
    xg = xp.reshape(N, groups, C_in // groups, *xp.shape[2:])
    k = ph.small_kernel(weight).reshape(groups, C_in // groups, cog, *ph.kernel_size)
    (dh, dw) = ph.rows.dilation, ph.cols.dilation
    for a in range(ph.kernel_size[0]):
        for b in range(ph.kernel_size[1]):
            win = xg[..., a * dh:a * dh + mh, b * dw:b * dw + mw]
            out += np.einsum("ngchw,gco->ngohw", win, k[..., a, b])
    return out.reshape(N, groups * cog, mh, mw)


def export(dec: Decomposition, weight: np.ndarray, directory: str | os.PathLike[str], H: int, W: int,
           groups: int = 1) -> list[Path]:
    """Write phase_<r_h>_<r_w>.npy (conv2d layout) per phase with taps, phases.json and phases.txt. Returns
    the paths written."""
    w = check_weight(weight, dec.kernel, groups)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    desc = dec.describe(H, W, groups)
    written = []
    for item, ph in zip(desc["phases"], dec.phases):
        if ph.n_taps:
            name = f"phase_{ph.rows.phase}_{ph.cols.phase}.npy"
            np.save(d / name, ph.conv2d_kernel(w, groups), allow_pickle=False)
            item["file"] = name
            written.append(d / name)
        else:
            item["file"] = None
    desc["phase_sums"] = dec.phase_sums(w, groups).tolist()
    (d / "phases.json").write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    (d / "phases.txt").write_text(format_text(dec, w, H, W, groups) + "\n", encoding="utf-8")
    return [*written, d / "phases.json", d / "phases.txt"]


# ---- text --------------------------------------------------------------------------------------------------

def _overlap_lines(count: np.ndarray) -> list[str]:
    if max(count.shape) <= MAX_GRID:
        return _grid(count)
    values, freq = np.unique(count, return_counts=True)
    return [f"  {count.shape[0]}x{count.shape[1]} pixels; top-left {MAX_GRID // 2}x{MAX_GRID // 2} corner:",
            *_grid(count[:MAX_GRID // 2, :MAX_GRID // 2]),
            "  pixels per count: " + ", ".join(f"{v} taps: {n}" for v, n in zip(values.tolist(), freq.tolist()))]


def _grid(a: np.ndarray, fmt: str = "{:d}") -> list[str]:
    cells = [[fmt.format(v) for v in row] for row in a.tolist()]
    width = max((len(c) for row in cells for c in row), default=1)
    return ["  " + " ".join(c.rjust(width) for c in row) for row in cells]


def checkerboard_note(dec: Decomposition, sums: np.ndarray, constant_weight: bool = False) -> str:
    counts = [ph.n_taps for ph in dec.phases]
    lines = []
    if len(set(counts)) > 1:
        lines.append(f"Uneven tap counts per phase ({', '.join(map(str, counts))}): even a constant weight gives "
                     "the phases different gains, so a flat input comes out as a checkerboard (kernel size not a "
                     "multiple of the stride, for dilation 1).")
    else:
        lines.append(f"Every phase has {counts[0]} tap(s): a constant weight gives a flat output away from the "
                     "borders.")
    if len(dec.phases) > 1 and not constant_weight:
        spread = sums.max(axis=0) - sums.min(axis=0)
        c = int(np.argmax(spread))
        lines.append(f"With this weight the phase sums (the gains for a flat input) range over {sums[:, c].min():.4g}"
                     f" .. {sums[:, c].max():.4g} (output channel {c}): a kernel whose phases do not sum to the same "
                     "value makes a checkerboard even when the tap counts are equal, as learned 4x4 stride-2 "
                     "kernels often do.")
    return "\n".join(lines)


def format_text(dec: Decomposition, weight: np.ndarray, H: int, W: int, groups: int = 1,
                max_channels: int = 4) -> str:
    w = check_weight(weight, dec.kernel, groups)
    Ho, Wo = dec.output_size(H, W)
    (sh, sw), (kh, kw) = dec.stride, dec.kernel
    sums = dec.phase_sums(w, groups)
    out = [f"ConvTranspose2d kernel {kh}x{kw}, stride {sh}x{sw}, padding (top, bottom, left, right) "
           f"{dec.padding[0][0]},{dec.padding[0][1]},{dec.padding[1][0]},{dec.padding[1][1]}, dilation "
           f"{dec.dilation[0]}x{dec.dilation[1]}, output_padding {dec.output_padding[0]}x{dec.output_padding[1]}",
           f"input {H}x{W} -> output {Ho}x{Wo}; {len(dec.phases)} phase(s): output pixel (oh, ow) belongs to phase "
           f"(oh % {sh}, ow % {sw}), and each phase is one stride-1 convolution of the input.",
           ""]
    for i, ph in enumerate(dec.phases):
        rh, rw = ph.index
        mh, mw = ph.rows.output_length(Ho, sh), ph.cols.output_length(Wo, sw)
        head = f"phase ({rh},{rw}): output rows {rh}::{sh}, cols {rw}::{sw} ({mh}x{mw} pixels), {ph.n_taps} tap(s)"
        out.append(head)
        if not ph.n_taps:
            out.append("  no kernel tap reaches these pixels: they hold only the bias")
            continue
        out.append("  taps (kh,kw) in small-kernel order: " + " ".join(f"({a},{b})" for a, b in ph.taps))
        a, b = ph.kernel_size
        out.append(f"  small kernel {a}x{b} = w[:, :, {list(ph.rows.taps)}][:, :, :, {list(ph.cols.taps)}] "
                   f"(flipped), dilation {ph.rows.dilation}x{ph.cols.dilation}")
        line = (f"  output (m, l) reads input rows m{ph.rows.offset:+d}+a*{ph.rows.dilation}, "
                f"cols l{ph.cols.offset:+d}+b*{ph.cols.dilation}")
        if mh and mw:
            pr, pc = ph.rows.conv_padding(H, Ho, sh), ph.cols.conv_padding(W, Wo, sw)
            line += f"; conv2d padding rows {pr}, cols {pc} (negative = crop)"
        out.append(line)
        shown = ", ".join(f"{v:.4g}" for v in sums[i][:max_channels])
        more = f" ... ({sums.shape[1]} output channels)" if sums.shape[1] > max_channels else ""
        out.append(f"  weight sum (gain for a constant input): {shown}{more}")
    legend = ", ".join(f"{i}=({ph.rows.phase},{ph.cols.phase})" for i, ph in enumerate(dec.phases))
    out += ["", f"Phase fed by each tap (kh rows, kw columns; {legend}):",
            *_grid(dec.tap_phase_map()),
            "", f"Overlap count per output pixel (input {H}x{W}: how many input pixel x tap products write it):",
            *_overlap_lines(dec.overlap_count(H, W)), "",
            checkerboard_note(dec, sums, constant_weight=bool(np.all(w == w.flat[0])))]
    return "\n".join(out)


# ---- CLI ---------------------------------------------------------------------------------------------------


def load_weight(spec: str, kernel: tuple[int, int] | None, seed: int = 0) -> np.ndarray:
    """'random', 'ones' (need the kernel size), or an .npy file (read without pickle, size-limited)."""
    if spec in ("random", "ones"):
        if kernel is None:
            raise UserError("--kernel is required unless --weight names an .npy file")
        if spec == "ones":
            return np.ones((1, 1, *kernel))
        return np.random.default_rng(seed).normal(size=(1, 1, *kernel))
    path = Path(spec)
    if not path.is_file():
        raise MissingFileError(f"--weight: no such file {spec!r} (or use 'random' / 'ones')")
    if path.stat().st_size > MAX_WEIGHT_BYTES:
        raise UserError(f"--weight: {spec} is larger than {MAX_WEIGHT_BYTES >> 20} MiB")
    try:
        w = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"--weight: {spec} is not a readable .npy array ({exc})") from None
    if not isinstance(w, np.ndarray):
        raise UserError(f"--weight: {spec} holds several arrays; give one .npy array")
    if w.ndim not in (2, 4):
        raise UserError(f"--weight: {spec} has shape {w.shape}; expected (C_in, C_out/groups, KH, KW) or (KH, KW)")
    return w
