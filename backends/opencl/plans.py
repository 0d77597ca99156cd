"""Launch plans of the `opencl` backend: the geometry of each op (stride phases, padded layouts, weight re-layout
maps), its buffers, build defines and kernel launches. Imported only by the backend, after pyopencl loaded.

Every launch sequence is: re-lay inputs channels-last with a zero border (`pad_cl`), re-lay the weights into the
kernel's layout (`wlayout`), run the main kernel, reduce split partials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autotune.core.geometry import AxisPhase, canvas_size, problem_phases
from autotune.core.problem import Problem

INT32_MAX = 2**31 - 1


def ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def axis_padding(phases: list[AxisPhase], n_in: int) -> tuple[int, int]:
    """(zero rows before the input, padded length) so every row any phase reads lies in the padded buffer."""
    lo, hi = 0, n_in - 1
    for a in phases:
        if a.count and a.taps:
            base = a.input_offset(a.taps[0])
            lo = min(lo, a.q0 - base - (len(a.taps) - 1) * a.input_step)
            hi = max(hi, a.q0 + a.count - 1 - base)
    return -lo, hi - lo + 1


@dataclass
class Step:
    """One kernel launch: program key (which build), kernel name, global and local sizes, arguments (buffer names
    or scalars)."""

    program: str
    kernel: str
    global_size: tuple[int, ...]
    local_size: tuple[int, ...] | None
    args: tuple[Any, ...]


@dataclass
class Plan:
    """Everything a prepared op needs, before any OpenCL object exists: buffers (name -> (elements, dtype kind)),
    host-side constant arrays, build defines per program, and the launch steps."""

    op: str
    inputs: tuple[str, ...]
    output: str
    output_shape: tuple[int, ...]
    buffers: dict[str, int] = field(default_factory=dict)  # name -> element count (problem dtype)
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # name -> int32 array uploaded once
    programs: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> defines
    steps: list[Step] = field(default_factory=list)
    input_shapes: list[tuple[int, ...] | None] = field(default_factory=list)  # signature order; None: no bias

    def bytes_needed(self, itemsize: int) -> int:
        return sum(self.buffers.values()) * itemsize + sum(int(a.nbytes) for a in self.constants.values())


def _wg(n: int, lx: int) -> int:
    return ceil_to(max(n, 1), lx)


def _pad_step(plan: Plan, src: str, dst: str, p_n: int, kc: int, kcp: int, h: int, w: int, hp: int, wp: int,
              pt: int, pl: int, groups: int) -> None:
    rows = groups * p_n * hp
    plan.buffers[dst] = rows * wp * kcp
    plan.steps.append(Step("common", "pad_cl", (_wg(rows, 16),), (16,),
                           (src, dst, ("i", p_n), ("i", kc), ("i", kcp), ("i", h), ("i", w), ("i", hp), ("i", wp),
                            ("i", pt), ("i", pl), ("i", groups))))


def _wlayout_step(plan: Plan, taps: np.ndarray, groups: int, kc: int, m: int, mp: int,
                  strides: tuple[int, int, int]) -> None:
    """Wt[phase, g, j, kc, m] from w; `taps[phase, j]` is the flat tap kh*kW + kw (or -1), `strides` the source
    strides of (g, kc, m)."""
    nph, nt = taps.shape
    plan.constants["taps"] = np.ascontiguousarray(taps, dtype=np.int32).reshape(-1)
    plan.buffers["wt"] = nph * groups * nt * kc * mp
    plan.steps.append(Step("common", "wlayout", (mp, kc, nph * groups), None,
                           ("w", "taps", "wt", ("i", m), ("i", mp), ("i", kc), ("i", nt), ("i", groups),
                            ("l", strides[0]), ("l", strides[1]), ("l", strides[2]))))


def conv_plan(op: str, p: Problem, c: dict[str, Any], double: bool) -> Plan:
    """forward (phase or direct) and backward_input: the `conv` kernel."""
    G = p.groups
    Cig, Cog = p.C_in // G, p.C_out // G
    (sh, sw), (dh, dw) = p.stride, p.dilation
    (pt, _), (pl, _) = p.padding
    Ho, Wo = p.output_size
    VEC, MB, TH, TW = c["vec"], c["co_block"], c["tile_h"], c["tile_w"]
    along_w = c.get("vec_axis") == "w"  # vectors along output columns (forward phase only)
    MW = MB if along_w else VEC * MB
    if op == "forward":
        plan = Plan(op, ("x", "w", "b") if p.bias else ("x", "w"), "y", p.output_shape)
        KC, M, src, out_h, out_w = Cig, Cog, "x", Ho, Wo
        if c["algorithm"] == "phase":
            rows, cols = problem_phases(p)
            padt, HP = axis_padding(rows, p.H)
            padl, WP = axis_padding(cols, p.W)
            table, tap_h, tap_w = [], [], []
            for a in rows:
                for b in cols:
                    base_h = a.input_offset(a.taps[0]) if a.taps else 0
                    base_w = b.input_offset(b.taps[0]) if b.taps else 0
                    table.append([a.count, b.count, a.q0 - base_h + padt, b.q0 - base_w + padl,
                                  a.first_output, b.first_output, len(a.taps), len(b.taps)])
                    tap_h.append(list(a.taps))
                    tap_w.append(list(b.taps))
            RS, CS, RDH, RDW, OSH, OSW = 1, 1, -rows[0].input_step, -cols[0].input_step, sh, sw
            direct = 0
        else:  # direct gather over every tap, with the divisibility test
            padt, padl, HP, WP = 0, 0, p.H, p.W
            table = [[Ho, Wo, 0, 0, 0, 0, p.kH, p.kW]]
            tap_h, tap_w = [list(range(p.kH))], [list(range(p.kW))]
            RS, CS, RDH, RDW, OSH, OSW = 1, 1, 0, 0, 1, 1
            direct = 1
        # Wt[phase, g, jh, jw, kc, m] = w[g*Cig + kc, m, kh_j, kw_j]
        NTH = max(1, max(len(t) for t in tap_h))
        NTW = max(1, max(len(t) for t in tap_w))
        MP = ceil_to(M, MW)
        taps = np.full((len(table), NTH, NTW), -1, dtype=np.int64)
        for ph, (th, tw) in enumerate(zip(tap_h, tap_w)):
            for jh, kh in enumerate(th):
                for jw, kw in enumerate(tw):
                    taps[ph, jh, jw] = kh * p.kW + kw
        T = p.kH * p.kW
        strides = (Cig * Cog * T, Cog * T, T)  # w[g*Cig + kc, m, tap]
    else:  # backward_input: gx = conv2d(gy, w, stride, padding, dilation, groups): gather from the gy canvas
        plan = Plan(op, ("gy", "w"), "gx", p.input_shape)
        KC, M, src, out_h, out_w = Cog, Cig, "gy", p.H, p.W
        HP, WP = canvas_size(p)
        padt, padl = pt, pl
        table = [[p.H, p.W, 0, 0, 0, 0, p.kH, p.kW]]
        RS, CS, RDH, RDW, OSH, OSW = sh, sw, dh, dw, 1, 1
        direct = 0
        NTH, NTW = p.kH, p.kW
        MP = ceil_to(M, MW)
        taps = np.arange(p.kH * p.kW, dtype=np.int64).reshape(1, NTH, NTW)
        T = p.kH * p.kW
        strides = (Cig * Cog * T, T, Cog * T)  # w[g*Cig + m, kc, tap]
    src_h, src_w = (p.H, p.W) if op == "forward" else p.output_size
    if along_w:
        total = G * p.N * KC * HP * WP
        # vector loads of the last tiles run past a row's end into the next (lanes never stored): a tail keeps
        # them inside the buffer
        plan.buffers["xp"] = total + WP + 2 * TW * VEC
        n_rows = G * p.N * KC * HP
        plan.steps.append(Step("common", "pad_cf", (_wg(n_rows, 16),), (16,),
                               (src, "xp", ("i", p.N), ("i", KC), ("i", src_h), ("i", src_w), ("i", HP), ("i", WP),
                                ("i", padt), ("i", padl), ("i", G))))
    else:
        _pad_step(plan, src, "xp", p.N, KC, KC, src_h, src_w, HP, WP, padt, padl, G)
    _wlayout_step(plan, taps.reshape(len(table), NTH * NTW), G, KC, M, MP, strides)
    plan.constants["phases"] = np.asarray(table, dtype=np.int32).reshape(-1)
    plan.buffers[plan.output] = int(np.prod(plan.output_shape))
    defines = dict(CONV=1, DOUBLE=int(double), NB=p.N, G=G, KC=KC, KCP=KC, M=M, MP=MP, HP=HP, WP=WP, HO=out_h,
                   WO=out_w, RS=RS, CS=CS, RDH=RDH, RDW=RDW, OSH=OSH, OSW=OSW, NTH=NTH, NTW=NTW, TH=TH, TW=TW,
                   MB=MB, VEC=VEC, LOCAL_W=c["local"], KB=c.get("k_block", 0),
                   HAS_BIAS=int(op == "forward" and p.bias), DIRECT=direct,
                   SH=sh, SW=sw, DH=dh, DW=dw, PT=pt, PL=pl, H=p.H, W=p.W)
    if along_w:
        defines["CONVW"] = defines.pop("CONV")
    plan.programs["main"] = defines
    cols_per_item = TW * VEC if along_w else TW
    tiles = max(-(-r[0] // TH) * -(-r[1] // cols_per_item) for r in table) * p.N
    LX, LY = c["wg_x"], c["wg_y"]
    gsize = (_wg(tiles, LX), _wg(G * (MP // MW), LY), len(table))
    bias = "b" if (op == "forward" and p.bias) else plan.output  # unused argument when there is no bias
    plan.steps.append(Step("main", "conv_w" if along_w else "conv", gsize, (LX, LY, 1),
                           ("xp", "wt", bias, plan.output, "phases")))
    return plan


def conv_local_bytes(op: str, p: Problem, c: dict[str, Any], itemsize: int) -> int:
    """Local memory the `conv` kernel stages when local=1: every tap's weights for one block of channels."""
    G = p.groups
    KC = p.C_in // G if op == "forward" else p.C_out // G
    if op == "forward" and c["algorithm"] == "phase":
        taps = (-(-p.kH // p.stride[0])) * (-(-p.kW // p.stride[1]))
    else:
        taps = p.kH * p.kW
    return taps * KC * c["vec"] * c["co_block"] * itemsize


def wgrad_rows_per_split(p: Problem, split: int) -> int:
    return -(-(p.N * p.H) // split)


def wgrad_plan(p: Problem, c: dict[str, Any], double: bool) -> Plan:
    G = p.groups
    Cig, Cog = p.C_in // G, p.C_out // G
    VEC, MB, CT = c["vec"], c["co_block"], c["c_tile"]
    MW = VEC * MB
    ci_vec = c.get("vec_axis") == "ci"  # vectors along input channels: c_tile then tiles output channels
    CIP, COP = (ceil_to(Cig, MW), ceil_to(Cog, CT)) if ci_vec else (ceil_to(Cig, CT), ceil_to(Cog, MW))
    HP, WP = canvas_size(p)
    (pt, _), (pl, _) = p.padding
    Ho, Wo = p.output_size
    split = min(c["split"], p.N * p.H)
    rows = wgrad_rows_per_split(p, split)
    split = -(-(p.N * p.H) // rows)
    plan = Plan("backward_weight", ("gy", "x"), "gw", p.weight_shape)
    _pad_step(plan, "x", "xc", p.N, Cig, CIP, p.H, p.W, p.H, p.W, 0, 0, G)
    _pad_step(plan, "gy", "gyp", p.N, Cog, COP, Ho, Wo, HP, WP, pt, pl, G)
    taps = p.kH * p.kW
    plan.buffers["part"] = split * G * CIP * taps * COP
    plan.buffers["gw"] = int(np.prod(p.weight_shape))
    plan.programs["main"] = dict(WGRAD=1, DOUBLE=int(double), NB=p.N, G=G, CI=Cig, CIP=CIP, CO=Cog, COP=COP, H=p.H,
                                 W=p.W, HP=HP, WP=WP, KH=p.kH, KW=p.kW, SH=p.stride[0], SW=p.stride[1],
                                 DH=p.dilation[0], DW=p.dilation[1], CT=CT, MB=MB, VEC=VEC, SPLIT=split,
                                 ROWS_PER_SPLIT=rows, CI_VEC=int(ci_vec))
    LX, LY = c["wg_x"], c["wg_y"]
    if ci_vec:
        gsize = (_wg(taps * (CIP // MW), LX), _wg(G * (COP // CT), LY), split)
    else:
        gsize = (_wg(taps * (CIP // CT), LX), _wg(G * (COP // MW), LY), split)
    plan.steps.append(Step("main", "wgrad", gsize, (LX, LY, 1), ("xc", "gyp", "part")))
    total = int(np.prod(p.weight_shape))
    plan.steps.append(Step("main", "wgrad_reduce", (_wg(total, 64),), (64,), ("part", "gw")))
    return plan


def bgrad_plan(p: Problem, c: dict[str, Any], double: bool) -> Plan:
    Ho, Wo = p.output_size
    plane = Ho * Wo
    split = max(1, min(c["split"], p.N * plane // max(c["vec"], 1) or 1))
    plan = Plan("backward_bias", ("gy",), "gb", (p.C_out,))
    plan.buffers["gb"] = p.C_out
    plan.programs["main"] = dict(BGRAD=1, DOUBLE=int(double), NB=p.N, C=p.C_out, PLANE=plane, SPLIT=split,
                                 VEC=c["vec"])
    if c.get("one_launch"):  # one work-group per channel, the shares added in local memory: no second launch
        plan.steps.append(Step("main", "bgrad_one", (p.C_out * split,), (split,), ("gy", "gb")))
        return plan
    plan.buffers["part"] = p.C_out * split
    plan.steps.append(Step("main", "bgrad", (p.C_out, split), None, ("gy", "part")))
    plan.steps.append(Step("main", "bgrad_reduce", (p.C_out,), None, ("part", "gb")))
    return plan


def make_plan(op: str, p: Problem, c: dict[str, Any], double: bool) -> Plan:
    if op in ("forward", "backward_input"):
        return conv_plan(op, p, c, double)
    if op == "backward_weight":
        return wgrad_plan(p, c, double)
    return bgrad_plan(p, c, double)
