"""Triton kernels for the four ops. Imported only when a kernel is prepared (importing it imports triton); the
launcher, `launch_plan` (which kernel, which constexprs) and `_build` (check, stage, allocate, launch, convert), is
in `backends/triton/__init__.py`.

Every kernel computes one (BLOCK_M x BLOCK_N) tile of its op's output viewed as a GEMM, reducing over BLOCK_K at a
time (the mapping per op is in `backends/triton/__init__.py`). Shapes, stride, padding, dilation and groups are
`tl.constexpr`: a prepared kernel serves one problem, so the compiler folds the index arithmetic.

Memory layout, chosen so that every tile a kernel loads is contiguous along one of its axes and that contiguity is
provable (Triton then issues 64/128-bit loads, and the asynchronous copies that let `num_stages` pipeline):
- The operand gathered per tap is staged channels-last by the launcher (forward: x as [N, H, W, C_in];
  backward_input and backward_weight: gy as [N, Ho, Wo, C_out]): a tap moves a tile by whole pixels, so its
  channels stay contiguous and aligned whatever the tap's offset (in NCHW an odd tap offset breaks alignment).
- The weight is packed once per call (forward: [G, kH*kW, C_in/G, C_out/G], contiguous along output channels;
  backward_input: [G, kH*kW, C_out/G, C_in/G], contiguous along input channels).
- For `direct` and `phase` the staged channel runs (CIGP, COGP) are padded with zeros to 16 bytes, so a layer with
  an odd channel count (3, 17, 21) keeps aligned, vectorized loads; masks then test the padded count (constant per
  vector) and only the stores test the real one. `gemm` keeps exact counts (padding would multiply zeros).
- backward_weight reads x in place (NCHW): its reduction runs along pixels, which NCHW keeps contiguous.
- Index math: per-lane pixel bases plus a contiguous `tl.arange` lane offset; range masks (`0 <= i < H`) instead
  of clamps; one flattened loop over (tap, channel chunk) so the software pipeline never restarts per tap.

Conventions shared by every kernel:
- `USE_DOT`: reduce a tile with `tl.dot` (tensor cores) instead of a broadcast multiply and sum (CUDA-core FMAs). The
  launcher sets it only when all three blocks are >= 16 (NVIDIA's smallest dot; AMD takes any) and the dtype is not
  float64, so a config that runs in the interpreter also compiles on a GPU.
- `PREC` (float32 dots): 0 `ieee` (exact float32 FMAs), 1 `tf32x3` (three tf32 products, about float32 accuracy),
  2 `tf32` (one product, 10-bit mantissa). `EMULATE`: the interpreter's dot ignores the precision, so there the
  operands are rounded to tf32 (and split for tf32x3) in the kernel, giving the GPU's error for the tuner's check.
- `ACC`: the accumulator dtype: float32 for float32/float16/bfloat16 inputs, float64 for float64.
- `SPLIT` (weight and bias gradients): program axis `split` reduces one share of the pixels and adds its partial sums
  to the output with atomics (no per-split temporary).
- `IDX`: the dtype of every index vector and program id: tl.int64 when a tensor could reach 2**31 elements,
  else tl.int32 (cheaper on a GPU).
- Indices divided by the stride are only used under a mask that requires them >= 0 and divisible, where C's
  truncating `//` and the interpreter's flooring one agree.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.jit import JITFunction


@triton.jit
def _tf32(x):
    """x rounded to tf32 (10 mantissa bits, to nearest even), as the tensor cores read float32 operands."""
    bits = x.to(tl.int32, bitcast=True)
    rounded = (bits + (((bits >> 13) & 1) + 0xFFF)) & -8192
    return rounded.to(tl.float32, bitcast=True)


@triton.jit
def _multiply_accumulate(a, b, acc, USE_DOT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                         EMULATE: tl.constexpr):
    """acc + a @ b: `tl.dot` where the blocks allow it (at precision PREC for float32), else exact multiply-adds in
    the accumulator's dtype."""
    if USE_DOT:
        if PREC == 0:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        elif EMULATE:
            a_hi = _tf32(a)
            b_hi = _tf32(b)
            if PREC == 1:
                acc = tl.dot(_tf32(a - a_hi), b_hi, acc, input_precision="ieee")
                acc = tl.dot(a_hi, _tf32(b - b_hi), acc, input_precision="ieee")
            acc = tl.dot(a_hi, b_hi, acc, input_precision="ieee")
        elif PREC == 1:
            acc = tl.dot(a, b, acc, input_precision="tf32x3")
        else:
            acc = tl.dot(a, b, acc, input_precision="tf32")
    else:
        acc += tl.sum(a.to(ACC)[:, :, None] * b.to(ACC)[None, :, :], axis=1)
    return acc


# ---- forward: direct gather, stride-phase decomposition, implicit GEMM ----------------------------------------


@triton.jit
def forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr,
                   N: tl.constexpr, C_IN: tl.constexpr, H: tl.constexpr, W: tl.constexpr, C_OUT: tl.constexpr,
                   HO: tl.constexpr, WO: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                   SH: tl.constexpr, SW: tl.constexpr, PT: tl.constexpr, PL: tl.constexpr,
                   DH: tl.constexpr, DW: tl.constexpr, G: tl.constexpr, HAS_BIAS: tl.constexpr,
                   MODE: tl.constexpr, PSH: tl.constexpr, PSW: tl.constexpr, MAXH: tl.constexpr,
                   MAXW: tl.constexpr, W_TMA: tl.constexpr, CIGP: tl.constexpr, COGP: tl.constexpr,
                   USE_DOT: tl.constexpr, PREC: tl.constexpr,
                   EMULATE: tl.constexpr, IDX: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y tile: BLOCK_M output pixels x BLOCK_N output channels of one group. x is channels-last [N, H, W, C_in]; w is
    packed [G, taps, C_in/G, C_out/G]; y is NCHW.

    MODE 0 (direct): pixels in raster order; reduction over (tap, channel chunk); each lane tests
    `(oh + pt - kh*d) % s == 0`.
    MODE 1 (phase): program axis 2 picks one phase (rh, rw); its pixels are the output pixels with
    (oh + pt) % sh == rh, and only the phase's taps run, so no lane is masked for divisibility: along h they are
    kh = fh + j*PSH (PSH = sh / gcd(dh, sh), fh the first with (kh*dh) % sh == rh), at most MAXH of them; the
    same along w.
    MODE 2 (gemm): the reduction is one axis k = (tap, channel), BLOCK_K wide across taps (for few channels).
    W_TMA (modes 0 and 1): the weight tile comes through a tensor descriptor (TMA on Hopper) over the packed weight
    seen as [G*taps, C_in/G, C_out/G], whose out-of-bounds zero fill replaces the channel masks."""
    COG: tl.constexpr = C_OUT // G
    TAPS: tl.constexpr = KH * KW
    pid_m = tl.program_id(0).to(IDX)
    pid_n = tl.program_id(1).to(IDX)
    n_blocks: tl.constexpr = (COG + BLOCK_N - 1) // BLOCK_N
    g = pid_n // n_blocks
    co = (pid_n % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    co_ok = co < COG
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(IDX)
    if MODE == 1:
        pid_r = tl.program_id(2)
        rh = pid_r // SW
        rw = pid_r % SW
        QH: tl.constexpr = (HO + SH - 1) // SH
        QW: tl.constexpr = (WO + SW - 1) // SW
        oh0 = ((rh - PT) % SH + SH) % SH  # first output row of this phase
        ow0 = ((rw - PL) % SW + SW) % SW
        n = m // (QH * QW)
        q = m % (QH * QW)
        qa = q // QW  # position in the phase's grid
        qb = q % QW
        oh = oh0 + qa * SH
        ow = ow0 + qb * SW
        fh = PSH  # first tap of the phase along each axis (PSH, PSW: none)
        fw = PSW
        for i in tl.static_range(PSH):
            fh = tl.where((((PSH - 1 - i) * DH) % SH) == rh, PSH - 1 - i, fh)
        for i in tl.static_range(PSW):
            fw = tl.where((((PSW - 1 - i) * DW) % SW) == rw, PSW - 1 - i, fw)
        count_h = tl.where(fh < PSH, (KH - fh + PSH - 1) // PSH, 0)
        count_w = tl.where(fw < PSW, (KW - fw + PSW - 1) // PSW, 0)
        y_pix = oh * WO + ow
    else:
        n = m // (HO * WO)
        y_pix = m % (HO * WO)
        oh = y_pix // WO
        ow = y_pix % WO
    m_ok = (n < N) & (oh < HO) & (ow < WO)
    x_img = n * (H * W)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if MODE == 2:
        K_TOTAL: tl.constexpr = TAPS * CIGP
        for k0 in range(0, K_TOTAL, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K).to(IDX)
            k_ok = k < K_TOTAL
            t = k // CIGP
            ci = k % CIGP
            th = oh[:, None] + PT - ((t // KW) * DH)[None, :]
            tw = ow[:, None] + PL - ((t % KW) * DW)[None, :]
            ok = (th >= 0) & (tw >= 0) & (th % SH == 0) & (tw % SW == 0)
            ih = th // SH
            iw = tw // SW
            ok = ok & (ih < H) & (iw < W) & m_ok[:, None] & k_ok[None, :]
            a = tl.load(x_ptr + ((x_img[:, None] + ih * W + iw) * (G * CIGP) + g * CIGP + ci[None, :]), mask=ok,
                        other=0.0)
            b = tl.load(w_ptr + ((g * (TAPS * CIGP) + k)[:, None] * COGP + co[None, :]),
                        mask=k_ok[:, None] & (co < COGP)[None, :], other=0.0)
            acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC, PREC, EMULATE)
    else:
        K_CHUNKS: tl.constexpr = (CIGP + BLOCK_K - 1) // BLOCK_K
        if W_TMA:
            w_desc = tl.make_tensor_descriptor(w_ptr, shape=[G * TAPS, CIGP, COGP], strides=[CIGP * COGP, COGP, 1],
                                               block_shape=[1, BLOCK_K, BLOCK_N])
            co0 = ((pid_n % n_blocks) * BLOCK_N).to(tl.int32)
        if MODE == 1:
            STEPS: tl.constexpr = MAXH * MAXW * K_CHUNKS
        else:
            STEPS: tl.constexpr = TAPS * K_CHUNKS  # type: ignore[no-redef]
        for step in range(STEPS):
            j = step // K_CHUNKS
            ci = (step % K_CHUNKS) * BLOCK_K + tl.arange(0, BLOCK_K).to(IDX)
            ci_ok = ci < CIGP  # padded channels are zeros: a mask constant per vector keeps the loads wide
            if MODE == 1:
                jh = j // MAXW
                jw = j % MAXW
                kh = fh + jh * PSH
                kw = fw + jw * PSW
                t = tl.where((jh < count_h) & (jw < count_w), kh * KW + kw, 0).to(IDX)
                # per-tap scalar bases plus the phase grid's lane offsets (qa, qb): no per-lane division; the
                # divisions are exact for the phase's taps (others are masked by `live`)
                ih = qa + (oh0 + PT - kh * DH) // SH
                iw = qb + (ow0 + PL - kw * DW) // SW
                lanes = tl.zeros_like(qa)  # the tap test per lane (the interpreter rejects a scalar term in a mask)
                live = ((jh + lanes) < count_h) & ((jw + lanes) < count_w)
                ok = m_ok & live & (ih >= 0) & (iw >= 0)
            else:
                t = j
                th = oh + (PT - (t // KW) * DH)
                tw = ow + (PL - (t % KW) * DW)
                ok = m_ok & (th >= 0) & (tw >= 0) & (th % SH == 0) & (tw % SW == 0)
                ih = th // SH
                iw = tw // SW
            ok = ok & (ih < H) & (iw < W)
            a = tl.load(x_ptr + (((x_img + ih * W + iw) * (G * CIGP) + g * CIGP)[:, None] + ci[None, :]),
                        mask=ok[:, None] & ci_ok[None, :], other=0.0)
            if W_TMA:
                b = w_desc.load([tl.cast(g * TAPS + t, tl.int32), tl.cast((step % K_CHUNKS) * BLOCK_K, tl.int32), co0])
                b = b.reshape(BLOCK_K, BLOCK_N)
            else:
                b = tl.load(w_ptr + (((g * TAPS + t) * CIGP + ci) * COGP)[:, None] + co[None, :],
                            mask=ci_ok[:, None] & (co < COGP)[None, :], other=0.0)
            acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC, PREC, EMULATE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + g * COG + co, mask=co_ok, other=0.0).to(ACC)[None, :]
    y_off = (n * (C_OUT * HO * WO) + y_pix)[:, None] + ((g * COG + co) * (HO * WO))[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & co_ok[None, :])


# ---- backward_input: a strided convolution of gy -------------------------------------------------------------


@triton.jit
def backward_input_kernel(gy_ptr, w_ptr, gx_ptr,
                          N: tl.constexpr, C_IN: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                          C_OUT: tl.constexpr, HO: tl.constexpr, WO: tl.constexpr, KH: tl.constexpr,
                          KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PT: tl.constexpr,
                          PL: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, G: tl.constexpr,
                          GEMM: tl.constexpr, CIGP: tl.constexpr, COGP: tl.constexpr, USE_DOT: tl.constexpr,
                          PREC: tl.constexpr, EMULATE: tl.constexpr, IDX: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """gx tile: BLOCK_M input pixels (n, ih, iw) x BLOCK_N input channels of one group.
    gx[n, ci, ih, iw] = sum_{co, kh, kw} gy[n, co, ih*s - p + kh*d, iw*s - p + kw*d] * w[ci, co, kh, kw].
    gy is channels-last [N, Ho, Wo, C_out], w packed [G, taps, C_out/G, C_in/G], gx NCHW.
    GEMM=False: one flattened loop over (tap, output-channel chunk); GEMM=True: k = (tap, co) as one axis."""
    CIG: tl.constexpr = C_IN // G
    TAPS: tl.constexpr = KH * KW
    pid_m = tl.program_id(0).to(IDX)
    pid_n = tl.program_id(1).to(IDX)
    n_blocks: tl.constexpr = (CIG + BLOCK_N - 1) // BLOCK_N
    g = pid_n // n_blocks
    ci = (pid_n % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    ci_ok = ci < CIG
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(IDX)
    n = m // (H * W)
    pix = m % (H * W)
    ih = pix // W
    iw = pix % W
    m_ok = n < N
    gy_img = n * (HO * WO)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if GEMM:
        K_TOTAL: tl.constexpr = TAPS * COGP
        for k0 in range(0, K_TOTAL, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K).to(IDX)
            k_ok = k < K_TOTAL
            t = k // COGP
            co = k % COGP
            oh = ih[:, None] * SH + ((t // KW) * DH - PT)[None, :]
            ow = iw[:, None] * SW + ((t % KW) * DW - PL)[None, :]
            ok = (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO) & m_ok[:, None] & k_ok[None, :]
            a = tl.load(gy_ptr + ((gy_img[:, None] + oh * WO + ow) * (G * COGP) + g * COGP + co[None, :]),
                        mask=ok, other=0.0)
            b = tl.load(w_ptr + ((g * (TAPS * COGP) + k)[:, None] * CIGP + ci[None, :]),
                        mask=k_ok[:, None] & (ci < CIGP)[None, :], other=0.0)
            acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC, PREC, EMULATE)
    else:
        K_CHUNKS: tl.constexpr = (COGP + BLOCK_K - 1) // BLOCK_K
        for step in range(TAPS * K_CHUNKS):
            t = step // K_CHUNKS
            co = (step % K_CHUNKS) * BLOCK_K + tl.arange(0, BLOCK_K).to(IDX)
            co_ok = co < COGP  # padded channels are zeros
            oh = ih * SH + ((t // KW) * DH - PT)
            ow = iw * SW + ((t % KW) * DW - PL)
            ok = m_ok & (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO)
            a = tl.load(gy_ptr + (((gy_img + oh * WO + ow) * (G * COGP) + g * COGP)[:, None] + co[None, :]),
                        mask=ok[:, None] & co_ok[None, :], other=0.0)
            b = tl.load(w_ptr + (((g * TAPS + t) * COGP + co) * CIGP)[:, None] + ci[None, :],
                        mask=co_ok[:, None] & (ci < CIGP)[None, :], other=0.0)
            acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC, PREC, EMULATE)
    gx_off = (n * (C_IN * H * W) + pix)[:, None] + ((g * CIG + ci) * (H * W))[None, :]
    tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=m_ok[:, None] & ci_ok[None, :])


# ---- backward_weight: a correlation of x with gy over batch and pixels -------------------------------------


@triton.jit
def backward_weight_kernel(gy_ptr, x_ptr, gw_ptr,
                           N: tl.constexpr, C_IN: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                           C_OUT: tl.constexpr, HO: tl.constexpr, WO: tl.constexpr, KH: tl.constexpr,
                           KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PT: tl.constexpr,
                           PL: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, G: tl.constexpr,
                           GEMM: tl.constexpr, CIGP: tl.constexpr, COGP: tl.constexpr, USE_DOT: tl.constexpr,
                           PREC: tl.constexpr, EMULATE: tl.constexpr, IDX: tl.constexpr, ACC: tl.constexpr,
                           SPLIT: tl.constexpr, SPLIT_STEPS: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """gw tile: BLOCK_M input channels of one group x BLOCK_N columns; reduction over the N*H*W input pixels, as
    (image, pixel chunk) steps so that a chunk of x stays contiguous (x NCHW read in place; gy channels-last).
    GEMM=False (direct): program axis 2 is (split, tap); columns are output channels.
    GEMM=True: program axis 2 is the split; columns are (tap, co) flattened, so one tile covers several taps.
    Split-K: each split reduces SPLIT_STEPS steps and adds its partial sums to gw with atomics (gw zeroed, in the
    accumulator's dtype), so there is no per-split temporary."""
    CIG: tl.constexpr = C_IN // G
    COG: tl.constexpr = C_OUT // G
    TAPS: tl.constexpr = KH * KW
    HW: tl.constexpr = H * W
    PIX_CHUNKS: tl.constexpr = (HW + BLOCK_K - 1) // BLOCK_K
    pid_m = tl.program_id(0).to(IDX)
    pid_n = tl.program_id(1).to(IDX)
    m_blocks: tl.constexpr = (CIG + BLOCK_M - 1) // BLOCK_M
    g = pid_m // m_blocks
    cim = (pid_m % m_blocks) * BLOCK_M + tl.arange(0, BLOCK_M).to(IDX)
    ci_ok = cim < CIG
    j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    if GEMM:
        j_ok = j < COG * TAPS
        t = j // COG
        co = j % COG
        split = tl.program_id(2).to(IDX)
        dh = (t // KW) * DH - PT
        dw = (t % KW) * DW - PL
    else:
        j_ok = j < COG
        co = j
        tap = tl.program_id(2).to(IDX) % TAPS
        split = tl.program_id(2).to(IDX) // TAPS
        dh = (tap // KW) * DH - PT
        dw = (tap % KW) * DW - PL
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for s in range(SPLIT_STEPS):
        step = split * SPLIT_STEPS + s
        n = step // PIX_CHUNKS
        p = (step % PIX_CHUNKS) * BLOCK_K + tl.arange(0, BLOCK_K).to(IDX)
        p_ok = (p < HW) & (n + tl.zeros_like(p) < N)  # (a scalar mask term trips the interpreter)
        a = tl.load(x_ptr + ((n * C_IN + g * CIG + cim) * HW)[:, None] + p[None, :],
                    mask=ci_ok[:, None] & p_ok[None, :], other=0.0)
        ih = p // W
        iw = p % W
        if GEMM:
            oh = ih[:, None] * SH + dh[None, :]
            ow = iw[:, None] * SW + dw[None, :]
            ok = (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO) & p_ok[:, None] & j_ok[None, :]
            b = tl.load(gy_ptr + (((n * HO + oh) * WO + ow) * (G * COGP) + g * COGP + co[None, :]), mask=ok,
                        other=0.0)
        else:
            oh = ih * SH + dh
            ow = iw * SW + dw
            ok = (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO) & p_ok
            b = tl.load(gy_ptr + ((((n * HO + oh) * WO + ow) * (G * COGP) + g * COGP)[:, None] + co[None, :]),
                        mask=ok[:, None] & (co < COGP)[None, :], other=0.0)  # padded channels are zeros
        acc = _multiply_accumulate(a, b, acc, USE_DOT, ACC, PREC, EMULATE)
    if GEMM:
        col = co * TAPS + t
    else:
        col = co * TAPS + tap
    gw_off = ((g * CIG + cim) * (COG * TAPS))[:, None] + col[None, :]
    mask = ci_ok[:, None] & j_ok[None, :]
    if SPLIT > 1:
        tl.atomic_add(gw_ptr + gw_off, acc.to(gw_ptr.dtype.element_ty), mask=mask, sem="relaxed")
    else:
        tl.store(gw_ptr + gw_off, acc.to(gw_ptr.dtype.element_ty), mask=mask)


# ---- backward_bias: a reduction over batch and output pixels -----------------------------------------------


@triton.jit
def backward_bias_kernel(gy_ptr, gb_ptr, N: tl.constexpr, C_OUT: tl.constexpr, HWO: tl.constexpr,
                         IDX: tl.constexpr, ACC: tl.constexpr, SPLIT: tl.constexpr, SPLIT_STEPS: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """gb[c] = sum over n and output pixels of gy[n, c]: BLOCK_N channels per program, BLOCK_K contiguous pixels of
    one image at a time ((image, pixel chunk) steps); program axis 1 is the split, whose partial sums are added to gb
    with atomics (gb zeroed, in the accumulator's dtype)."""
    PIX_CHUNKS: tl.constexpr = (HWO + BLOCK_K - 1) // BLOCK_K
    split = tl.program_id(1).to(IDX)
    c = tl.program_id(0).to(IDX) * BLOCK_N + tl.arange(0, BLOCK_N).to(IDX)
    c_ok = c < C_OUT
    acc = tl.zeros((BLOCK_N,), dtype=ACC)
    for s in range(SPLIT_STEPS):
        step = split * SPLIT_STEPS + s
        n = step // PIX_CHUNKS
        p = (step % PIX_CHUNKS) * BLOCK_K + tl.arange(0, BLOCK_K).to(IDX)
        v = tl.load(gy_ptr + ((n * C_OUT + c) * HWO)[:, None] + p[None, :],
                    mask=c_ok[:, None] & ((p < HWO) & (n + tl.zeros_like(p) < N))[None, :], other=0.0)
        acc += tl.sum(v.to(ACC), axis=1)
    if SPLIT > 1:
        tl.atomic_add(gb_ptr + c, acc.to(gb_ptr.dtype.element_ty), mask=c_ok, sem="relaxed")
    else:
        tl.store(gb_ptr + c, acc.to(gb_ptr.dtype.element_ty), mask=c_ok)


@triton.jit
def empty_kernel(flag_ptr):
    """Does nothing unless flag is set: the floor of a launch, timed by `TritonBackend.launch_overhead`."""
    if tl.load(flag_ptr) != 0:
        tl.store(flag_ptr, 0)


# Triton fixes interpreted-or-compiled when a kernel is defined (TRITON_INTERPRET at import): remembered here so the
# backend can refuse to run kernels of the other mode.
INTERPRETED = not isinstance(forward_kernel, JITFunction)
