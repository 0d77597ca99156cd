"""Triton kernels for the four ops. Imported only when a kernel is prepared (importing it imports triton); the
launcher, `launch_plan` (which kernel, which constexprs) and `_build` (check, stage, allocate, launch, convert), is
in `backends/triton/__init__.py`.

Every kernel computes one (BLOCK_M x BLOCK_N) tile of its op's output viewed as a GEMM, reducing over BLOCK_K at a
time (the mapping per op is in `backends/triton/__init__.py`). Shapes, stride, padding, dilation and groups are
`tl.constexpr`: a prepared kernel serves one problem, so the compiler folds the index arithmetic and the tap loops.

Conventions shared by every kernel:
- `USE_DOT`: reduce a tile with `tl.dot` (tensor cores) instead of a broadcast multiply and sum (CUDA-core FMAs). The
  launcher sets it only when all three blocks are >= 16 (NVIDIA's smallest dot; AMD takes any) and the dtype is not
  float64, so a config that runs in the interpreter also compiles on a GPU.
- `ACC`: the accumulator dtype: float32 for float32/float16/bfloat16 inputs, float64 for float64.
- `CHUNK` (weight and bias gradients): pixels reduced per program; program axis `split` picks the chunk and its
  partial sums go to slice `split` of the output (SPLIT, ...), which the launcher adds.
- `IDX`: the dtype of every index vector and program id: tl.int64 when a tensor could reach 2**31 elements,
  else tl.int32 (cheaper on a GPU).
- An index that is divided by the stride is first clamped to >= 0 (masked lanes read nothing), so C's truncating
  `//` and `%` and the interpreter's agree.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

# ---- forward: direct gather and stride-phase decomposition -------------------------------------------------


@triton.jit
def _multiply_accumulate(a, b, acc, USE_DOT: tl.constexpr, ACC: tl.constexpr):
    """acc + a @ b: `tl.dot` where the blocks allow it (IEEE, not tf32: float32 stays float32), else exact
    multiply-adds in the accumulator's dtype."""
    if USE_DOT:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc += tl.sum(a.to(ACC)[:, :, None] * b.to(ACC)[None, :, :], axis=1)
    return acc


@triton.jit
def forward_tap_kernel(x_ptr, w_ptr, b_ptr, y_ptr,
                       N: tl.constexpr, C_IN: tl.constexpr, H: tl.constexpr, W: tl.constexpr, C_OUT: tl.constexpr,
                       HO: tl.constexpr, WO: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                       SH: tl.constexpr, SW: tl.constexpr, PT: tl.constexpr, PL: tl.constexpr,
                       DH: tl.constexpr, DW: tl.constexpr, G: tl.constexpr, HAS_BIAS: tl.constexpr,
                       PHASE: tl.constexpr, USE_DOT: tl.constexpr, IDX: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y tile: BLOCK_M output pixels (n, oh, ow) x BLOCK_N output channels of one group; reduction: for each tap,
    the group's input channels in BLOCK_K chunks.

    PHASE=False (direct gather): pixels in raster order; each (pixel, tap) tests `(oh + pt - kh*d) % s == 0`.
    PHASE=True (stride-phase decomposition): program axis 2 picks one phase (rh, rw) of the canvas; its pixels are
    the output pixels with (oh + pt) % sh == rh, and only the taps with (kh*dh) % sh == rh feed them, so the other
    taps are skipped whole instead of being masked lane by lane."""
    CIG: tl.constexpr = C_IN // G
    COG: tl.constexpr = C_OUT // G
    TAPS: tl.constexpr = KH * KW
    pid_m = tl.program_id(0).to(IDX)
    pid_n = tl.program_id(1).to(IDX)
    n_blocks: tl.constexpr = (COG + BLOCK_N - 1) // BLOCK_N
    g = pid_n // n_blocks
    co = (pid_n % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    co_ok = co < COG
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(IDX)
    if PHASE:
        pid_r = tl.program_id(2)
        rh = pid_r // SW
        rw = pid_r % SW
        QH: tl.constexpr = (HO + SH - 1) // SH
        QW: tl.constexpr = (WO + SW - 1) // SW
        oh0 = ((rh - PT) % SH + SH) % SH  # first output row of this phase
        ow0 = ((rw - PL) % SW + SW) % SW
        n = m // (QH * QW)
        q = m % (QH * QW)
        oh = oh0 + (q // QW) * SH
        ow = ow0 + (q % QW) * SW
    else:
        rh = 0
        rw = 0
        n = m // (HO * WO)
        oh = (m // WO) % HO
        ow = m % WO
    m_ok = (n < N) & (oh < HO) & (ow < WO)
    x_pix = n * (C_IN * H * W)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for kh in range(KH):
        if PHASE:
            tap_h = (kh * DH) % SH == rh  # the phase's taps only: whole taps skipped, no lane masked
        else:
            tap_h = True
        if tap_h:
            th = oh + PT - kh * DH
            ok_h = th >= 0
            th = tl.where(ok_h, th, 0)
            if not PHASE:
                ok_h = ok_h & (th % SH == 0)
            ih = th // SH
            ok_h = ok_h & (ih < H)
            for kw in range(KW):
                if PHASE:
                    tap_w = (kw * DW) % SW == rw
                else:
                    tap_w = True
                if tap_w:
                    tw = ow + PL - kw * DW
                    ok_w = tw >= 0
                    tw = tl.where(ok_w, tw, 0)
                    if not PHASE:
                        ok_w = ok_w & (tw % SW == 0)
                    iw = tw // SW
                    ok = m_ok & ok_h & ok_w & (iw < W)
                    x_row = x_pix + ih * W + iw
                    for c0 in range(0, CIG, BLOCK_K):
                        ci = g * CIG + c0 + tl.arange(0, BLOCK_K).to(IDX)
                        ci_ok = (c0 + tl.arange(0, BLOCK_K).to(IDX)) < CIG
                        a = tl.load(x_ptr + (x_row[:, None] + ci[None, :] * (H * W)),
                                    mask=ok[:, None] & ci_ok[None, :], other=0.0)
                        b = tl.load(w_ptr + ((ci[:, None] * COG + co[None, :]) * TAPS + (kh * KW + kw)),
                                    mask=ci_ok[:, None] & co_ok[None, :], other=0.0)
                        acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + g * COG + co, mask=co_ok, other=0.0).to(ACC)[None, :]
    y_off = (n * (C_OUT * HO * WO) + oh * WO + ow)[:, None] + ((g * COG + co) * (HO * WO))[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & co_ok[None, :])


# ---- forward: implicit GEMM --------------------------------------------------------------------------------


@triton.jit
def forward_gemm_kernel(x_ptr, w_ptr, b_ptr, y_ptr,
                        N: tl.constexpr, C_IN: tl.constexpr, H: tl.constexpr, W: tl.constexpr, C_OUT: tl.constexpr,
                        HO: tl.constexpr, WO: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                        SH: tl.constexpr, SW: tl.constexpr, PT: tl.constexpr, PL: tl.constexpr,
                        DH: tl.constexpr, DW: tl.constexpr, G: tl.constexpr, HAS_BIAS: tl.constexpr,
                        USE_DOT: tl.constexpr, IDX: tl.constexpr, ACC: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Implicit GEMM: y[(n, oh, ow), co] = sum_k A[(n, oh, ow), k] * B[k, co] with k = (ci, kh, kw) flattened,
    A gathered from x on the fly (zero where the tap does not land on an input pixel), B = w read in place."""
    CIG: tl.constexpr = C_IN // G
    COG: tl.constexpr = C_OUT // G
    TAPS: tl.constexpr = KH * KW
    K_TOTAL: tl.constexpr = CIG * TAPS
    pid_m = tl.program_id(0).to(IDX)
    pid_n = tl.program_id(1).to(IDX)
    n_blocks: tl.constexpr = (COG + BLOCK_N - 1) // BLOCK_N
    g = pid_n // n_blocks
    co = (pid_n % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    co_ok = co < COG
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(IDX)
    n = m // (HO * WO)
    oh = (m // WO) % HO
    ow = m % WO
    m_ok = n < N
    x_pix = n * (C_IN * H * W)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, K_TOTAL, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K).to(IDX)
        k_ok = k < K_TOTAL
        ci = g * CIG + k // TAPS
        t = k % TAPS
        kh = t // KW
        kw = t % KW
        th = oh[:, None] + PT - (kh * DH)[None, :]
        tw = ow[:, None] + PL - (kw * DW)[None, :]
        ok = (th >= 0) & (tw >= 0)
        th = tl.where(ok, th, 0)
        tw = tl.where(ok, tw, 0)
        ok = ok & (th % SH == 0) & (tw % SW == 0)
        ih = th // SH
        iw = tw // SW
        ok = ok & (ih < H) & (iw < W) & m_ok[:, None] & k_ok[None, :]
        a = tl.load(x_ptr + (x_pix[:, None] + (ci * (H * W))[None, :] + ih * W + iw), mask=ok, other=0.0)
        b = tl.load(w_ptr + ((ci * COG * TAPS + t)[:, None] + (co * TAPS)[None, :]),
                    mask=k_ok[:, None] & co_ok[None, :], other=0.0)
        acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + g * COG + co, mask=co_ok, other=0.0).to(ACC)[None, :]
    y_off = (n * (C_OUT * HO * WO) + oh * WO + ow)[:, None] + ((g * COG + co) * (HO * WO))[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & co_ok[None, :])


# ---- backward_input: a strided convolution of gy, direct or implicit GEMM ----------------------------------


@triton.jit
def backward_input_kernel(gy_ptr, w_ptr, gx_ptr,
                          N: tl.constexpr, C_IN: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                          C_OUT: tl.constexpr, HO: tl.constexpr, WO: tl.constexpr, KH: tl.constexpr,
                          KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PT: tl.constexpr,
                          PL: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, G: tl.constexpr,
                          GEMM: tl.constexpr, USE_DOT: tl.constexpr, IDX: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """gx tile: BLOCK_M input pixels (n, ih, iw) x BLOCK_N input channels of one group.
    gx[n, ci, ih, iw] = sum_{co, kh, kw} gy[n, co, ih*s - p + kh*d, iw*s - p + kw*d] * w[ci, co, kh, kw].
    GEMM=False: loop over taps, then output channels in BLOCK_K chunks; GEMM=True: k = (co, kh, kw) flattened."""
    CIG: tl.constexpr = C_IN // G
    COG: tl.constexpr = C_OUT // G
    TAPS: tl.constexpr = KH * KW
    pid_m = tl.program_id(0).to(IDX)
    pid_n = tl.program_id(1).to(IDX)
    n_blocks: tl.constexpr = (CIG + BLOCK_N - 1) // BLOCK_N
    g = pid_n // n_blocks
    ci = (pid_n % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    ci_ok = ci < CIG
    ci = g * CIG + ci
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(IDX)
    n = m // (H * W)
    ih = (m // W) % H
    iw = m % W
    m_ok = n < N
    gy_pix = n * (C_OUT * HO * WO)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if GEMM:
        K_TOTAL: tl.constexpr = COG * TAPS
        for k0 in range(0, K_TOTAL, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K).to(IDX)
            k_ok = k < K_TOTAL
            co = g * COG + k // TAPS
            t = k % TAPS
            oh = ih[:, None] * SH - PT + ((t // KW) * DH)[None, :]
            ow = iw[:, None] * SW - PL + ((t % KW) * DW)[None, :]
            ok = (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO) & m_ok[:, None] & k_ok[None, :]
            a = tl.load(gy_ptr + (gy_pix[:, None] + (co * (HO * WO))[None, :] + oh * WO + ow), mask=ok, other=0.0)
            b = tl.load(w_ptr + ((ci * COG * TAPS)[None, :] + ((co - g * COG) * TAPS + t)[:, None]),
                        mask=k_ok[:, None] & ci_ok[None, :], other=0.0)
            acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC)
    else:
        for kh in range(KH):
            oh = ih * SH - PT + kh * DH
            ok_h = (oh >= 0) & (oh < HO)
            for kw in range(KW):
                ow = iw * SW - PL + kw * DW
                ok = m_ok & ok_h & (ow >= 0) & (ow < WO)
                gy_row = gy_pix + oh * WO + ow
                for c0 in range(0, COG, BLOCK_K):
                    cor = c0 + tl.arange(0, BLOCK_K).to(IDX)
                    co_ok = cor < COG
                    a = tl.load(gy_ptr + (gy_row[:, None] + ((g * COG + cor) * (HO * WO))[None, :]),
                                mask=ok[:, None] & co_ok[None, :], other=0.0)
                    b = tl.load(w_ptr + ((ci * COG)[None, :] + cor[:, None]) * TAPS + (kh * KW + kw),
                                mask=co_ok[:, None] & ci_ok[None, :], other=0.0)
                    acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC)
    gx_off = (n * (C_IN * H * W) + ih * W + iw)[:, None] + (ci * (H * W))[None, :]
    tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=m_ok[:, None] & ci_ok[None, :])


# ---- backward_weight: a correlation of x with gy over batch and pixels -------------------------------------


@triton.jit
def backward_weight_kernel(gy_ptr, x_ptr, gw_ptr,
                           N: tl.constexpr, C_IN: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                           C_OUT: tl.constexpr, HO: tl.constexpr, WO: tl.constexpr, KH: tl.constexpr,
                           KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PT: tl.constexpr,
                           PL: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, G: tl.constexpr,
                           GEMM: tl.constexpr, USE_DOT: tl.constexpr, IDX: tl.constexpr, ACC: tl.constexpr,
                           CHUNK: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """gw tile: BLOCK_M input channels of one group x BLOCK_N columns; reduction over the N*H*W input pixels.
    GEMM=False (direct): program axis 2 is (split, tap); columns are output channels.
    GEMM=True (implicit GEMM): program axis 2 is the split; columns are (co, kh, kw) flattened, so one tile covers
    several taps and the store is contiguous.
    Split-K: the pixels are cut into SPLIT chunks of CHUNK (a multiple of BLOCK_K), each program reduces one and
    stores its partial sums in slice `split` of gw (SPLIT, C_in, C_out/groups, kH, kW); the launcher adds the
    slices. It gives a GPU enough programs when the weight gradient has few tiles and a long reduction."""
    CIG: tl.constexpr = C_IN // G
    COG: tl.constexpr = C_OUT // G
    TAPS: tl.constexpr = KH * KW
    P_TOTAL: tl.constexpr = N * H * W
    pid_m = tl.program_id(0).to(IDX)
    pid_n = tl.program_id(1).to(IDX)
    m_blocks: tl.constexpr = (CIG + BLOCK_M - 1) // BLOCK_M
    g = pid_m // m_blocks
    cim = (pid_m % m_blocks) * BLOCK_M + tl.arange(0, BLOCK_M).to(IDX)
    ci_ok = cim < CIG
    ci = g * CIG + cim
    j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    if GEMM:
        j_ok = j < COG * TAPS
        co = g * COG + j // TAPS
        t = j % TAPS
    else:
        j_ok = j < COG
        co = g * COG + j
        t = tl.program_id(2).to(IDX) % TAPS + tl.zeros((BLOCK_N,), dtype=IDX)
    if GEMM:
        split = tl.program_id(2).to(IDX)
    else:
        split = tl.program_id(2).to(IDX) // TAPS
    dh = (t // KW) * DH - PT
    dw = (t % KW) * DW - PL
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for p0 in range(0, CHUNK, BLOCK_K):
        p = split * CHUNK + p0 + tl.arange(0, BLOCK_K).to(IDX)
        p_ok = p < P_TOTAL
        n = p // (H * W)
        ih = (p // W) % H
        iw = p % W
        a = tl.load(x_ptr + ((ci * (H * W))[:, None] + (n * (C_IN * H * W) + ih * W + iw)[None, :]),
                    mask=ci_ok[:, None] & p_ok[None, :], other=0.0)
        oh = ih[:, None] * SH + dh[None, :]
        ow = iw[:, None] * SW + dw[None, :]
        ok = (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO) & p_ok[:, None] & j_ok[None, :]
        b = tl.load(gy_ptr + ((n * (C_OUT * HO * WO))[:, None] + (co * (HO * WO))[None, :] + oh * WO + ow),
                    mask=ok, other=0.0)
        acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC)
    gw_off = split * (C_IN * COG * TAPS) + (ci * (COG * TAPS))[:, None] + ((co - g * COG) * TAPS + t)[None, :]
    tl.store(gw_ptr + gw_off, acc.to(gw_ptr.dtype.element_ty), mask=ci_ok[:, None] & j_ok[None, :])


# ---- backward_bias: a reduction over batch and output pixels -----------------------------------------------


@triton.jit
def backward_bias_kernel(gy_ptr, gb_ptr, N: tl.constexpr, C_OUT: tl.constexpr, HWO: tl.constexpr,
                         IDX: tl.constexpr, ACC: tl.constexpr, CHUNK: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """gb[c] = sum over n and output pixels of gy[n, c]: BLOCK_N channels per program, BLOCK_K of the N*HWO
    (n, pixel) pairs at a time; program axis 1 is the split (one CHUNK of the pairs, partial sums stored in slice
    `split` of gb (SPLIT, C_out), added by the launcher)."""
    P_TOTAL: tl.constexpr = N * HWO
    split = tl.program_id(1).to(IDX)
    c = tl.program_id(0).to(IDX) * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    c_ok = c < C_OUT
    acc = tl.zeros((BLOCK_N,), dtype=ACC)
    for p0 in range(0, CHUNK, BLOCK_K):
        p = split * CHUNK + p0 + tl.arange(0, BLOCK_K).to(IDX)
        n = p // HWO
        v = tl.load(gy_ptr + ((c * HWO)[:, None] + (n * (C_OUT * HWO) + p % HWO)[None, :]),
                    mask=c_ok[:, None] & (p < P_TOTAL)[None, :], other=0.0)
        acc += tl.sum(v.to(ACC), axis=1)
    tl.store(gb_ptr + split * C_OUT + c, acc.to(gb_ptr.dtype.element_ty), mask=c_ok)


# Triton fixes interpreted-or-compiled when a kernel is defined (TRITON_INTERPRET at import): remembered here so the
# backend can refuse to run kernels of the other mode.
INTERPRETED = not isinstance(forward_tap_kernel, JITFunction)
