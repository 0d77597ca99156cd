"""The geometry of a transposed convolution, said once: the uncropped canvas, the window each kernel tap writes,
the output crop, and the stride-phase decomposition that the fast paths (numpy's phase GEMMs, OpenCL's phase
kernel) and `autotune explain` are built on.

Scatter view (the reference's): input pixel `i` and kernel tap `t` add onto canvas row `i*s + t*d`; output row `o`
is canvas row `o + pad_begin`. Canvas rows of one residue `r = row % s` (a *phase*) receive only the taps with
`t*d % s == r`, so each phase is an ordinary small convolution: canvas row `q*s + r` of the phase gets tap `t` from
input row `q - (t*d)//s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.core.problem import Problem


def canvas_size(p: Problem) -> tuple[int, int]:
    """Rows and columns of the uncropped canvas: every tap position, and every output position."""
    (pt, _), (pl, _) = p.padding
    Ho, Wo = p.output_size
    return (max((p.H - 1) * p.stride[0] + p.dilation[0] * (p.kH - 1) + 1, pt + Ho),
            max((p.W - 1) * p.stride[1] + p.dilation[1] * (p.kW - 1) + 1, pl + Wo))


def tap_window(p: Problem, kh: int, kw: int) -> tuple[slice, slice]:
    """The canvas rows and columns that tap (kh, kw) writes: input pixel (ih, iw) lands at
    (ih*s + kh*d, iw*s + kw*d)."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    return (slice(kh * dh, kh * dh + (p.H - 1) * sh + 1, sh), slice(kw * dw, kw * dw + (p.W - 1) * sw + 1, sw))


def output_window(p: Problem) -> tuple[slice, slice]:
    """The canvas rows and columns that are the output (the crop by the padding)."""
    (pt, _), (pl, _) = p.padding
    Ho, Wo = p.output_size
    return slice(pt, pt + Ho), slice(pl, pl + Wo)


@dataclass(frozen=True)
class AxisPhase:
    """Stride phase `r` along one axis: canvas rows `q*stride + r` for q in [q0, q0 + count) land in the output
    crop; `taps` (ascending) are the kernel taps that write them."""

    r: int
    taps: tuple[int, ...]
    q0: int
    count: int
    stride: int
    dilation: int
    pad_begin: int

    @property
    def first_output(self) -> int:
        """Output index of the phase's first row (q0)."""
        return self.q0 * self.stride + self.r - self.pad_begin

    @property
    def output_phase(self) -> int:
        """The residue `o % stride` of the output indices this phase writes."""
        return (self.r - self.pad_begin) % self.stride

    def input_offset(self, tap: int) -> int:
        """Phase row q reads input row `q - input_offset(tap)` for `tap`."""
        return (tap * self.dilation) // self.stride

    @property
    def tap_step(self) -> int:
        """Distance between consecutive taps of the phase."""
        return self.stride // math.gcd(self.stride, self.dilation)

    @property
    def input_step(self) -> int:
        """Distance between the input rows read by consecutive taps (the phase's own dilation)."""
        return self.dilation // math.gcd(self.stride, self.dilation)


def stride_phases(k: int, s: int, d: int, pad_begin: int, n_out: int) -> list[AxisPhase]:
    """The `s` phases of one axis (kernel size k, stride s, dilation d), in canvas-phase order r = 0 .. s-1."""
    out = []
    for r in range(s):
        taps = tuple(t for t in range(k) if (t * d) % s == r)
        q0 = max(0, -(-(pad_begin - r) // s))
        q1 = max(q0, (pad_begin + n_out - 1 - r) // s + 1)
        out.append(AxisPhase(r, taps, q0, q1 - q0, s, d, pad_begin))
    return out


def problem_phases(p: Problem) -> tuple[list[AxisPhase], list[AxisPhase]]:
    """The row and column phases of a problem."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    (pt, _), (pl, _) = p.padding
    Ho, Wo = p.output_size
    return stride_phases(p.kH, sh, dh, pt, Ho), stride_phases(p.kW, sw, dw, pl, Wo)
