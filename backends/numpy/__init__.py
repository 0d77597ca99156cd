"""The `numpy` backend: BLAS GEMMs plus strided NumPy copies, tunable like every other backend.

Algorithms (the `algorithm` parameter):
- forward `col2im`: one GEMM `w^T @ x` gives every tap's contribution (Caffe's way), then each tap's slab is added
  onto a strided window of the output (the adds are memory-bound, the GEMM wastes no multiply);
- forward `phase`: sub-pixel decomposition: output pixels of one stride phase (oh % s, ow % s) are fed by a fixed
  subset of taps, so each phase is a dense GEMM against those taps' weights, written once into a strided view of
  the output: no scatter-adds, no zero multiplies. `runs=copied`: one GEMM per phase of an im2col of the input;
  `runs=in_place`: x is padded once so that each tap's input for a whole phase is a contiguous run of it, read by
  BLAS where it lies and accumulated into the phase's result (BLAS's beta = 1, `blas.py`: NumPy's own BLAS through
  ctypes, where it can be found), `chunk` GEMM columns at a time;
- backward_input / backward_weight `im2col`: one GEMM against all taps stacked; `per_tap`: one GEMM per tap,
  accumulated (less memory);
- backward_input / backward_weight `phase`: gy is split once into its stride phases (stride_h * stride_w strided
  copies, each pixel read once), each phase image padded to a common row width; then every tap's window is a
  contiguous run of one phase image, shifted by the tap's offset (the extra columns of the padded rows are computed
  and dropped). backward_weight feeds each run to its GEMM as it lies (no copy). backward_input works through
  `chunk` GEMM columns at a time, with `runs`: `copied` stacks every tap's run (plain memcpy) for one GEMM per
  chunk; `in_place` hands each run to BLAS where it lies and accumulates the taps into the output: no copy of the
  runs, the taps' data read from cache instead of written and read as a taps-times larger operand. The other
  algorithms gather every tap's window with stride-s reads.
- the runs read in place are stacked by shift where every phase has one tap at every shift (the kernel a multiple
  of the stride: k4 s2, k16 s8): the phases' runs at one shift are one strided operand (backward, phases*Cog deep)
  or one strided result (forward, phases*Cog rows), so one GEMM per shift replaces one per tap;
- every op `blocks`, where each canvas pixel has at most one tap (`dilation*(k-1) < stride` on both axes, e.g.
  U-Net's k2 s2): the canvas, cut into stride x stride blocks, is a plain reshape of one GEMM's output (forward)
  or input (backward): the forward writes each block once (no scatter-adds, no zero canvas when the blocks tile
  the output), the backward ops read gy's blocks as the GEMM's columns (one gather, no canvas of windows).
`batch_block` splits the batch so the temporaries stay in cache (0 = the whole batch at once).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from autotune.core.devices import cpu_device_id, cpu_device_name, cpu_features
from autotune.core.geometry import canvas_size, output_window, problem_phases, tap_window
from autotune.core.problem import Problem
from backends.base import Backend, Config, Device, Kernel, Space
from backends.numpy import blas, parallel

BATCH_BLOCKS = (0, 1, 2, 4, 8, 16)
# backward_input `phase`: GEMM columns per chunk (0: not the phase algorithm, which alone reads it)
CHUNKS = (0, 1024, 4096, 16384, 65536)
# the defaults: copied runs in cache-sized stacks; runs read in place in long passes (fewer BLAS calls; 65536 beat
# 16384 by 1-10% on the suite's phase layers, EPYC)
DEFAULT_CHUNK = {"copied": 4096, "in_place": 65536}
RUNS = ("copied", "in_place")
# Temporaries above this are pruned as "out of resources" before anything runs.
WORKSPACE_LIMIT_BYTES = 2 << 30
# Default configs keep temporaries about this small: beyond it, batch blocks ran faster on the suite (cache).
DEFAULT_WORKSPACE_BYTES = 8 << 20


def default_workspace_bytes() -> int:
    """The default's temporaries budget on this CPU: a quarter of its last-level cache (L3, else L2 times the
    cores), between 4 and 32 MiB; DEFAULT_WORKSPACE_BYTES where the OS does not say (8 MiB was measured best on
    the suite on a 2-core Xeon; the 32 MiB-L3 EPYC gets the same)."""
    f = cpu_features()
    llc = int(f["l3_bytes"]) or int(f["l2_bytes"]) * int(f["cores"])
    return min(max(llc // 4, 4 << 20), 32 << 20) if llc else DEFAULT_WORKSPACE_BYTES
_SUPPORTED = ("float32", "float64")
# Part of version(): raised when a change makes existing configs run at another speed, so that dispatch ranks the
# configs measured since before those measured with the older kernels (2: copies shared among threads).
KERNELS_REVISION = 2


class NumpyBackend(Backend):

    def available(self) -> tuple[bool, str]:
        return True, ""

    @functools.lru_cache(maxsize=1)  # noqa: B019 - one backend object per process
    def devices(self) -> list[Device]:
        return [Device(id=cpu_device_id(), name=cpu_device_name(), kind="cpu",
                       info={"numpy": np.__version__})]

    def version(self) -> str:
        return f"numpy {np.__version__}, kernels r{KERNELS_REVISION}, direct BLAS: {blas.describe()}"

    def supports(self, problem: Problem, device: Device) -> str | None:
        if problem.dtype not in _SUPPORTED:
            return f"numpy backend computes {' and '.join(_SUPPORTED)} only, not {problem.dtype}"
        return None

    # ---- space ----------------------------------------------------------------------------------------------------
    def space(self, op: str, problem: Problem, device: Device) -> Space:
        if op == "backward_bias":
            return Space({"algorithm": ("sum", "gemv")})
        algorithms: tuple[str, ...] = ("phase", "col2im") if op == "forward" else ("im2col", "per_tap", "phase")
        if one_tap_per_pixel(problem):
            algorithms += ("blocks",)
        itemsize = np.dtype(problem.dtype).itemsize

        def batch_block_useful(c: Config) -> str | None:
            if c["batch_block"] >= problem.N:
                return f"batch_block={c['batch_block']} >= N={problem.N} repeats batch_block=0"
            return None

        def fits(c: Config) -> str | None:
            need = _workspace_elements(op, problem, c) * itemsize
            if need > WORKSPACE_LIMIT_BYTES:
                return f"out of resources: workspace {need / 2**30:.1f} GiB > {WORKSPACE_LIMIT_BYTES / 2**30:.0f} GiB"
            return None

        if op == "backward_weight":
            return Space({"algorithm": algorithms, "batch_block": BATCH_BLOCKS}, [batch_block_useful, fits])

        def runs_and_chunk(c: Config) -> str | None:
            if c["algorithm"] != "phase" and c["runs"] != "copied":
                return "runs applies to the phase algorithm alone (copied elsewhere)"
            if c["runs"] == "in_place" and blas.reason():
                return f"runs=in_place calls NumPy's BLAS directly, not found here: {blas.reason()}"
            if _uses_chunk(op, c) != (c["chunk"] != 0):
                where = "the phase algorithm" if op == "backward_input" else "the phase algorithm with runs=in_place"
                return f"chunk applies to {where} alone (0 elsewhere, a column count there)"
            smaller = [k for k in CHUNKS if 0 < k < c["chunk"]]
            if smaller and smaller[-1] >= _gemm_columns(op, problem, _block_size(problem, c)):
                return f"chunk={c['chunk']} repeats chunk={smaller[-1]}: the GEMM has fewer columns"
            return None

        # A config recorded before `chunk` and `runs` existed copied its runs (or ran another algorithm: chunk 0);
        # a forward phase config recorded before them built its im2col (runs=copied, chunk 0).
        return Space({"algorithm": algorithms, "batch_block": BATCH_BLOCKS, "chunk": CHUNKS, "runs": RUNS},
                     [batch_block_useful, runs_and_chunk, fits], added={"chunk": 0, "runs": "copied"})

    def default_config(self, op: str, problem: Problem, device: Device) -> Config:
        if op == "backward_bias":
            # A GEMV over each image's pixels beat the strided `sum` on all 16 problems measured here (1.6-4.9x).
            return {"algorithm": "gemv"}
        space = self.space(op, problem, device)
        # Measured on the suite (2-core Xeon, 2026-11): col2im wins when its GEMM output (C_out*k*k rows) is the
        # smaller temporary, i.e. C_in > C_out; otherwise the phase GEMMs do. Backward (2-core EPYC, 2026-11): the
        # phase runs on images of 32x32 and more with 16+ output channels per group (1.1-1.6x the stacked GEMM on
        # superres_x2, decoder_s1_3x3, fullconv_3x7, fcn_score_up8); the stacked GEMM over batch blocks on small
        # images (dcgan_g1-g3: 1.2-1.4x the phase) and few channels (dcgan_rgb's 3: the phase GEMMs are 3 wide).
        # Runs read in place (direct BLAS), EPYC 2026-11: the forward phase 1.2-2.2x the copying algorithms of
        # the time wherever 16+ channels per group meet 8x8+ images (dcgan_g3, superres_x2, decoder_s1_3x3,
        # fullconv_3x5/3x7, dilated_up, fcn_score_up8, unet_up_deep: 1.2x the blocks; dcgan_g2 since went to
        # col2im with the batch innermost, 1.1x, after tuning); the backward_input phase 1.1-1.4x its copied runs;
        # no gain with 3 channels (dcgan_rgb), depthwise, or 4x4 images (dcgan_g1).
        Cig, Cog = problem.C_in // problem.groups, problem.C_out // problem.groups
        in_place = blas.reason() is None and (op == "backward_input" or (
            min(Cig, Cog) >= 16 and problem.H * problem.W >= 64))
        if op == "forward" and in_place:
            first = "phase"
        elif one_tap_per_pixel(problem):
            first = "blocks"
        elif op == "forward":
            first = "col2im" if problem.C_in > problem.C_out else "phase"
        elif problem.H * problem.W >= 1024 and problem.C_out // problem.groups >= 16:
            first = "phase"
        else:
            first = "im2col"
        itemsize = np.dtype(problem.dtype).itemsize
        # The largest batch block whose temporaries stay within this CPU's budget (whole batch first). Runs read in
        # place work through cache-sized passes whatever the block: the whole batch ran fastest (dcgan_g2 forward
        # 84 against 58 GFLOP/s in blocks of 4, dcgan_g3 94 against 82, backward_input 97 against 75).
        budget = default_workspace_bytes()
        for algorithm in (first, *space.params["algorithm"]):
            fitting = [c for c in (_point(op, problem, space, algorithm, b, in_place) for b in (0, 16, 8, 4, 2, 1))
                       if space.violation(c) is None]
            for c in fitting:
                if c.get("runs") == "in_place" or _workspace_elements(op, problem, c) * itemsize <= budget:
                    return c
            if fitting:
                return fitting[-1]
        return _point(op, problem, space, first, 1, in_place)

    # ---- kernels --------------------------------------------------------------------------------------------------
    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        return _prepare(op, problem, tuple(sorted(config.items())))


def _point(op: str, p: Problem, space: Space, algorithm: str, batch_block: int, in_place: bool) -> Config:
    """A config of `space` with these values, the phase's runs read in place if asked, and its default chunk where
    it has one (no larger than the GEMM's columns need)."""
    c: Config = {"algorithm": algorithm, "batch_block": batch_block}
    if "chunk" in space.params:
        c.update(runs="in_place" if in_place and algorithm == "phase" else "copied", chunk=0)
        if _uses_chunk(op, c):
            columns = _gemm_columns(op, p, _block_size(p, c))
            c["chunk"] = min([DEFAULT_CHUNK[c["runs"]]] + [k for k in CHUNKS if k >= columns])
    return c


def _uses_chunk(op: str, c: Config) -> bool:
    """Whether (op, config) does its GEMMs in passes of `chunk` columns."""
    return c["algorithm"] == "phase" and (op == "backward_input" or c["runs"] == "in_place")


def _gemm_columns(op: str, p: Problem, n: int) -> int:
    """GEMM columns of the phase algorithm's passes over a batch block of n images (the longest run)."""
    if op == "forward":
        layout = _forward_layout(p)
        return (n - 1) * layout.Hx * layout.Wx + layout.rows * layout.Wx
    return _phase_layout(p, n).L


def one_tap_per_pixel(p: Problem) -> bool:
    """Whether each canvas pixel receives at most one tap: the taps of one input pixel fit in its stride block."""
    return all(d * (k - 1) < s for k, s, d in zip((p.kH, p.kW), p.stride, p.dilation))


def _block_rows(p: Problem) -> tuple[int, int]:
    """Input rows and columns of the blocked canvas: H*s rows cover every tap, more where the output (with its
    output_padding) reaches beyond them."""
    (pt, _), (pl, _) = p.padding
    Ho, Wo = p.output_size
    return max(p.H, -(-(pt + Ho) // p.stride[0])), max(p.W, -(-(pl + Wo) // p.stride[1]))


def _blocks_tile_output(p: Problem) -> bool:
    """Whether the blocks are exactly the output: stride == kernel, no dilation gaps, no crop, no extension."""
    return (p.stride == (p.kH, p.kW) and p.dilation == (1, 1) and p.padding == ((0, 0), (0, 0))
            and p.output_padding == (0, 0))


def _workspace_elements(op: str, p: Problem, c: Config) -> int:
    """Elements of the largest temporary of (op, config): sizes the out-of-resources constraint."""
    n = _block_size(p, c)
    taps = p.kH * p.kW
    Hc, Wc = canvas_size(p)
    if op != "forward" and c["algorithm"] == "phase":
        layout = _phase_layout(p, n)
        image = n * layout.Hp * layout.Wp
        phases = p.C_out * len(layout.phases) * image
        padded = p.C_in * image  # gx's padded rows (input) or x in padded rows (weight)
        copied = op == "backward_input" and c.get("runs") == "copied"
        cols = p.C_out * taps * min(c.get("chunk", 0), layout.L) if copied else 0
        return phases + padded + cols
    if op == "forward" and c["algorithm"] == "phase" and c.get("runs") == "in_place":
        runs = _forward_layout(p)
        return n * runs.Hx * runs.Wx * (p.C_in + p.C_out * len(runs.phases))  # x padded, every phase's output
    if c["algorithm"] == "blocks":
        Hb, Wb = _block_rows(p)
        canvas = 0 if _blocks_tile_output(p) else n * p.C_out * Hb * p.stride[0] * Wb * p.stride[1]
        return canvas + n * p.C_out * taps * p.H * p.W
    if op == "forward":
        if c["algorithm"] == "col2im":
            return n * p.C_out * taps * p.H * p.W + n * p.C_out * Hc * Wc
        # phase: the largest phase im2col is at most ceil(k/s) taps per axis over the phase's output rows
        th, tw = -(-p.kH // p.stride[0]), -(-p.kW // p.stride[1])
        qh, qw = -(-p.output_size[0] // p.stride[0]), -(-p.output_size[1] // p.stride[1])
        return n * p.C_in * th * tw * qh * qw
    if op in ("backward_input", "backward_weight"):
        canvas = n * p.C_out * Hc * Wc
        cols = n * p.C_out * taps * p.H * p.W if c["algorithm"] == "im2col" else n * p.C_out * p.H * p.W
        return canvas + cols
    return 0


def _block_size(p: Problem, c: Config) -> int:
    """Images per batch block."""
    return p.N if c["batch_block"] == 0 else min(c["batch_block"], p.N)


def _batch_blocks(N: int, block: int) -> list[slice]:
    if block <= 0 or block >= N:
        return [slice(0, N)]
    return [slice(i, min(i + block, N)) for i in range(0, N, block)]


@functools.lru_cache(maxsize=256)
def _prepare(op: str, p: Problem, config_items: tuple) -> Kernel:
    c = dict(config_items)
    dt = np.dtype(p.dtype)
    if op == "backward_bias":
        if c["algorithm"] == "gemv":
            pixels = p.output_size[0] * p.output_size[1]
            ones = np.ones(pixels, dt)

            def bias_grad(gy: np.ndarray) -> np.ndarray:
                # one GEMV over every (image, channel) row: one multi-threaded BLAS call, not one per image
                # (2.1x faster than per-image GEMVs on dcgan_g3's 64 images here, and faster than torch's sum)
                g = np.ascontiguousarray(gy, dtype=dt).reshape(p.N * p.C_out, pixels)
                sums = g @ ones
                return sums if p.N == 1 else sums.reshape(p.N, p.C_out).sum(axis=0, dtype=dt)
            return bias_grad
        return lambda gy: np.asarray(gy, dtype=dt).sum(axis=(0, 2, 3), dtype=dt)
    blocks = _batch_blocks(p.N, c["batch_block"])
    bodies: dict[tuple[str, str], Callable[..., None]] = {
        ("forward", "phase"): (functools.partial(_forward_runs, chunk=c.get("chunk", 0))
                               if c.get("runs") == "in_place" else _forward_phase),
        ("forward", "col2im"): _forward_col2im,
        ("backward_input", "im2col"): _backward_input, ("backward_input", "per_tap"): _backward_input,
        ("backward_weight", "im2col"): _backward_weight, ("backward_weight", "per_tap"): _backward_weight,
        ("forward", "blocks"): _forward_blocks, ("backward_input", "blocks"): _backward_input_blocks,
        ("backward_weight", "blocks"): _backward_weight_blocks,
        ("backward_input", "phase"): functools.partial(_backward_input_phase, chunk=c.get("chunk", 0),
                                                       in_place=c.get("runs") == "in_place"),
        ("backward_weight", "phase"): _backward_weight_phase}
    body = bodies[(op, c["algorithm"])]
    stacked = c["algorithm"] == "im2col"

    if op == "forward":
        def forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
            x, w = np.asarray(x, dt), np.asarray(w, dt)
            y = np.empty(p.output_shape, dt)
            for b in blocks:
                body(p, x[b], w, y[b])
            if bias is not None:
                y += np.asarray(bias, dt)[None, :, None, None]
            return y
        return forward
    if op == "backward_input":
        def grad_input(gy: np.ndarray, w: np.ndarray) -> np.ndarray:
            gy, w = np.asarray(gy, dt), np.asarray(w, dt)
            gx = np.empty(p.input_shape, dt)
            for b in blocks:
                body(p, gy[b], w, gx[b], stacked)
            return gx
        return grad_input

    def grad_weight(gy: np.ndarray, x: np.ndarray) -> np.ndarray:
        gy, x = np.asarray(gy, dt), np.asarray(x, dt)
        G = p.groups
        gw = np.zeros((G, p.C_in // G, p.C_out // G, p.kH, p.kW), dt)
        for b in blocks:
            body(p, gy[b], x[b], gw, stacked)
        return gw.reshape(p.weight_shape)
    return grad_weight


def _channels_first(a: np.ndarray, G: int) -> np.ndarray:
    """(n, G*C, h, w) -> (G, C, n, h, w), contiguous: puts channels on the GEMM's reduction axis."""
    n, C, h, w = a.shape
    return parallel.contiguous(a.reshape(n, G, C // G, h, w).transpose(1, 2, 0, 3, 4))


def _forward_phase(p: Problem, x: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
    G, n = p.groups, x.shape[0]
    Cig, Cog = p.C_in // G, p.C_out // G
    sh, sw = p.stride
    xc = _channels_first(x, G)  # (G, Cig, n, H, W)
    wg = w.reshape(G, Cig, Cog, p.kH, p.kW)
    yg = y.reshape(n, G, Cog, *p.output_size)
    phases_h, phases_w = problem_phases(p)
    for ph in phases_h:
        taps_h, q0h, q1h = list(ph.taps), ph.q0, ph.q0 + ph.count
        for pw in phases_w:
            taps_w, q0w, q1w = list(pw.taps), pw.q0, pw.q0 + pw.count
            if q1h <= q0h or q1w <= q0w:
                continue
            # Output rows of this phase: canvas row q*s + r  ->  output row q*s + r - pad_top.
            out = yg[:, :, :, ph.first_output::sh, pw.first_output::sw][..., :q1h - q0h, :q1w - q0w]
            if not taps_h or not taps_w:
                out[...] = 0
                continue
            Qh, Qw = q1h - q0h, q1w - q0w
            # im2col: tap (th, tw) reads input row q - th*dh//sh; rows outside the input read zeros.
            cols = np.zeros((G, len(taps_h), len(taps_w), Cig, n, Qh, Qw), x.dtype)
            fills = []
            for i, th in enumerate(taps_h):
                oh = ph.input_offset(th)
                ih0, ih1 = max(q0h - oh, 0), min(q1h - oh, p.H)
                if ih1 <= ih0:
                    continue
                for j, tw in enumerate(taps_w):
                    ow = pw.input_offset(tw)
                    iw0, iw1 = max(q0w - ow, 0), min(q1w - ow, p.W)
                    if iw1 <= iw0:
                        continue
                    fills.append((cols[:, i, j, :, :, ih0 + oh - q0h:ih1 + oh - q0h, iw0 + ow - q0w:iw1 + ow - q0w],
                                  xc[:, :, :, ih0:ih1, iw0:iw1]))
            parallel.copy(fills)
            wk = wg[:, :, :, taps_h][..., taps_w]  # (G, Cig, Cog, th, tw)
            # (G, th, tw, Cig, Cog), handed to BLAS transposed: a copy with Cig innermost is a slow transpose
            wk = np.ascontiguousarray(wk.transpose(0, 3, 4, 1, 2)).reshape(G, -1, Cog).transpose(0, 2, 1)
            res = wk @ cols.reshape(G, -1, n * Qh * Qw)  # (G, Cog, n*Qh*Qw)
            parallel.assign(out, res.reshape(G, Cog, n, Qh, Qw).transpose(2, 0, 1, 3, 4))


def _batch_last(p: Problem, n: int) -> bool:
    """Whether col2im lays a batch block out with its images innermost: where the images are narrower than a
    quarter of the block (dcgan_g1's 64 of 4x4), the taps' strided adds then run along the batch, not along rows of
    a few pixels (EPYC: dcgan_g1 92 -> 125, dcgan_g2 88 -> 100 GFLOP/s; with rows of 16 for 64 images, dcgan_g3,
    the row-major layout was as fast or faster; the backward im2col's gathers gained nothing from it)."""
    return n > 4 * p.W


def _columns_view(a: np.ndarray, G: int, batch_last: bool) -> np.ndarray:
    """(n, G*C, h, w) as (G, C, A, h, w, B), a view: A = n, B = 1 (row-major) or A = 1, B = n (batch innermost),
    the GEMMs' column order either way."""
    n, C, h, w = a.shape
    v = a.reshape(n, G, C // G, h, w)
    return v.transpose(1, 2, 3, 4, 0)[:, :, None] if batch_last else v.transpose(1, 2, 0, 3, 4)[..., None]


def _forward_col2im(p: Problem, x: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
    G, n = p.groups, x.shape[0]
    Cig, Cog = p.C_in // G, p.C_out // G
    last = _batch_last(p, n)
    A, B = (1, n) if last else (n, 1)
    xc = parallel.contiguous(_columns_view(x, G, last)).reshape(G, Cig, -1)
    wt = w.reshape(G, Cig, Cog * p.kH * p.kW).transpose(0, 2, 1)  # BLAS reads the transpose where it lies
    cols = (wt @ xc).reshape(G * Cog, p.kH, p.kW, A, p.H, p.W, B)
    canvas = np.zeros((G * Cog, A, *canvas_size(p), B), x.dtype)
    windows = [tap_window(p, kh, kw) for kh in range(p.kH) for kw in range(p.kW)]

    def add_taps(c0: int, c1: int) -> None:  # the taps overlap in the canvas: threads split the channels
        for t, (rows, cs) in enumerate(windows):
            canvas[c0:c1, :, rows, cs] += cols[c0:c1, t // p.kW, t % p.kW]
    share = -(-G * Cog // parallel.threads())
    parallel.run([functools.partial(add_taps, c0, c0 + share) for c0 in range(0, G * Cog, share)], cols.nbytes)
    rows, cs = output_window(p)
    parallel.assign(_columns_view(y, G, last), canvas.reshape(G, Cog, *canvas.shape[1:])[:, :, :, rows, cs])


def _gy_canvas(p: Problem, gy: np.ndarray) -> np.ndarray:
    """gy placed in the zero canvas, channels first: (G, Cog, n, Hc, Wc)."""
    G, n = p.groups, gy.shape[0]
    canvas = np.zeros((G, p.C_out // G, n, *canvas_size(p)), gy.dtype)
    rows, cols = output_window(p)
    parallel.assign(canvas[..., rows, cols], gy.reshape(n, G, p.C_out // G, *p.output_size).transpose(1, 2, 0, 3, 4))
    return canvas


def _gy_columns(p: Problem, canvas: np.ndarray) -> np.ndarray:
    """Every tap's window of the gy canvas stacked: (G, kH*kW*Cog, n*H*W)."""
    G, Cog, n = canvas.shape[:3]
    cols = np.empty((G, p.kH, p.kW, Cog, n, p.H, p.W), canvas.dtype)
    windows = [(kh, kw, *tap_window(p, kh, kw)) for kh in range(p.kH) for kw in range(p.kW)]
    parallel.copy([(cols[:, kh, kw], canvas[..., rows, cs]) for kh, kw, rows, cs in windows])
    return cols.reshape(G, -1, n * p.H * p.W)


def _backward_input(p: Problem, gy: np.ndarray, w: np.ndarray, gx: np.ndarray, stacked: bool) -> None:
    G, n = p.groups, gy.shape[0]
    Cig, Cog = p.C_in // G, p.C_out // G
    canvas = _gy_canvas(p, gy)
    wg = w.reshape(G, Cig, Cog, p.kH, p.kW)
    if stacked:
        wk = np.ascontiguousarray(wg.transpose(0, 1, 3, 4, 2)).reshape(G, Cig, -1)  # (G, Cig, taps*Cog)
        res = wk @ _gy_columns(p, canvas)
    else:
        res = np.zeros((G, Cig, n * p.H * p.W), gy.dtype)
        for kh in range(p.kH):
            for kw in range(p.kW):
                rows, cs = tap_window(p, kh, kw)
                res += wg[..., kh, kw] @ np.ascontiguousarray(canvas[..., rows, cs]).reshape(G, Cog, -1)
    parallel.assign(gx.reshape(n, G, Cig, p.H, p.W), res.reshape(G, Cig, n, p.H, p.W).transpose(2, 0, 1, 3, 4))


def _backward_weight(p: Problem, gy: np.ndarray, x: np.ndarray, gw: np.ndarray, stacked: bool) -> None:
    G = p.groups
    Cig, Cog = p.C_in // G, p.C_out // G
    canvas = _gy_canvas(p, gy)
    xc = _channels_first(x, G).reshape(G, Cig, -1)  # (G, Cig, n*H*W)
    if stacked:
        cols = _gy_columns(p, canvas)  # (G, taps*Cog, nHW)
        res = xc @ cols.transpose(0, 2, 1)  # (G, Cig, taps*Cog)
        gw += res.reshape(G, Cig, p.kH, p.kW, Cog).transpose(0, 1, 4, 2, 3)
        return
    for kh in range(p.kH):
        for kw in range(p.kW):
            rows, cs = tap_window(p, kh, kw)
            tap = np.ascontiguousarray(canvas[..., rows, cs]).reshape(G, Cog, -1)
            gw[..., kh, kw] += xc @ tap.transpose(0, 2, 1)



# ---- forward `phase` with runs in place: x padded once, each tap of an output phase a shifted run of it -------------
_Lines = tuple[int, int, int]  # the output rows (or columns) of a phase: first, count, step


class _ForwardPhase(NamedTuple):
    rows: _Lines
    cols: _Lines
    skip: tuple[int, int]  # rows and columns computed for other phases before this phase's first output
    taps: tuple[tuple[int, int, int], ...]  # (kh, kw, where the tap's run starts in a padded image)


class _ForwardLayout(NamedTuple):
    phases: tuple[_ForwardPhase, ...]  # output phases some tap writes
    empty: tuple[tuple[_Lines, _Lines], ...]  # output phases no tap writes (zeros: stride > kernel)
    top: int  # zero rows above and columns left of x in its padded image
    left: int
    Hx: int  # rows and columns of a padded image
    Wx: int
    rows: int  # rows of every phase's result: the union of the phases' row ranges
    # per shift (run start, each phase's tap (kh, kw) there, in phase order) where every phase has one tap at every
    # shift (k a multiple of s): the phases' results at one shift are then one GEMM of phases*Cog rows
    shifts: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]


def _axis_offsets(live: list) -> tuple[int, ...] | None:
    """The input offsets every live phase of an axis has, one tap each; None where the phases differ."""
    offsets = [tuple(sorted(ph.input_offset(t) for t in ph.taps)) for ph in live]
    same = offsets and all(o == offsets[0] for o in offsets) and len(set(offsets[0])) == len(offsets[0])
    return offsets[0] if same else None


@functools.lru_cache(maxsize=256)
def _forward_layout(p: Problem) -> _ForwardLayout:
    """Output phase row q reads input row q - offset(tap): x is padded with zeros so that every row and column any
    tap reads exists, and every phase computes the same range of q (the union of theirs; the extra rows are
    dropped), so a tap's reads are one run of the padded images starting at that range's first row and column
    shifted by the tap's offsets; taps of different phases with equal offsets read the same run (GEMM columns past
    a row's width are computed and dropped; the runs end inside the buffer thanks to one spare row)."""
    phases_h, phases_w = problem_phases(p)
    live_h = [ph for ph in phases_h if ph.taps and ph.count]
    live_w = [pw for pw in phases_w if pw.taps and pw.count]
    if not (live_h and live_w):  # no tap lands in the output: all zeros
        live_h = live_w = []
    q0h, q1h = min([ph.q0 for ph in live_h], default=0), max([ph.q0 + ph.count for ph in live_h], default=0)
    q0w, q1w = min([pw.q0 for pw in live_w], default=0), max([pw.q0 + pw.count for pw in live_w], default=0)
    offsets_h = [ph.input_offset(t) for ph in live_h for t in ph.taps]
    offsets_w = [pw.input_offset(t) for pw in live_w for t in pw.taps]
    top, left = max([0] + [o - q0h for o in offsets_h]), max([0] + [o - q0w for o in offsets_w])
    Hx = max(p.H + top, q1h - min(offsets_h, default=0) + top) + 1
    Wx = max(p.W + left, q1w - min(offsets_w, default=0) + left)

    def start(offset_h: int, offset_w: int) -> int:
        return (q0h - offset_h + top) * Wx + q0w - offset_w + left

    phases: list[_ForwardPhase] = []
    empty: list[tuple[_Lines, _Lines]] = []
    for ph in phases_h:
        for pw in phases_w:
            if not (ph.count and pw.count):
                continue
            rows: _Lines = (ph.first_output, ph.count, ph.stride)
            cols: _Lines = (pw.first_output, pw.count, pw.stride)
            if ph not in live_h or pw not in live_w:
                empty.append((rows, cols))
                continue
            taps = tuple((th, tw, start(ph.input_offset(th), pw.input_offset(tw))) for th in ph.taps for tw in pw.taps)
            phases.append(_ForwardPhase(rows, cols, (ph.q0 - q0h, pw.q0 - q0w), taps))
    shifts: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] = ()
    common_h, common_w = _axis_offsets(live_h), _axis_offsets(live_w)
    if len(phases) > 1 and common_h is not None and common_w is not None:
        tap_h = [{ph.input_offset(t): t for t in ph.taps} for ph in live_h]
        tap_w = [{pw.input_offset(t): t for t in pw.taps} for pw in live_w]
        shifts = tuple((start(oh, ow), tuple((th[oh], tw[ow]) for th in tap_h for tw in tap_w))
                       for oh in common_h for ow in common_w)
    return _ForwardLayout(tuple(phases), tuple(empty), top, left, Hx, Wx, q1h - q0h, shifts)


def _forward_runs(p: Problem, x: np.ndarray, w: np.ndarray, y: np.ndarray, chunk: int) -> None:
    G, n = p.groups, x.shape[0]
    Cig, Cog = p.C_in // G, p.C_out // G
    lay = _forward_layout(p)
    Hx, Wx, P = lay.Hx, lay.Wx, len(lay.phases)
    if not P:  # no tap lands in the output
        y[...] = 0
        return
    xp = np.zeros((G, Cig, n, Hx, Wx), x.dtype)
    parallel.assign(xp[..., lay.top:lay.top + p.H, lay.left:lay.left + p.W],
                    x.reshape(n, G, Cig, p.H, p.W).transpose(1, 2, 0, 3, 4))
    xp = xp.reshape(G, Cig, n * Hx * Wx)
    w5 = w.reshape(G, Cig, Cog, p.kH, p.kW)
    res = np.empty((G, Cog * P, n * Hx * Wx), x.dtype)  # rows (output channel, phase): a shift's phases stack
    L = (n - 1) * Hx * Wx + lay.rows * Wx
    # The weights keep each input channel's row together when reordered (none at all where the phases are the taps
    # in order, stride == kernel) and go to BLAS transposed: a copy with Cig innermost took 7 of the 10 ms of a
    # 1024 -> 512 channel 8x8 layer.
    if lay.shifts:
        kh = [[t[0] for t in taps] for _, taps in lay.shifts]
        kw = [[t[1] for t in taps] for _, taps in lay.shifts]
        if len(kh) == 1 and [h * p.kW + v for h, v in zip(kh[0], kw[0])] == list(range(p.kH * p.kW)):
            ws = w5.reshape(G, 1, Cig, Cog * P)  # one shift, its phases the taps in order
        else:  # (G, Cig, Cog, shifts, phases) -> (G, shifts, Cig, Cog * phases)
            ws = np.ascontiguousarray(w5[:, :, :, kh, kw].transpose(0, 3, 1, 2, 4)).reshape(G, len(kh), Cig, -1)
        gemms = [[(ws[g, i].T, start, res[g], float(i > 0)) for i, (start, _) in enumerate(lay.shifts)]
                 for g in range(G)]
    else:
        wt = np.ascontiguousarray(w5.transpose(0, 3, 4, 1, 2))  # (G, kH, kW, Cig, Cog)
        rows = res.reshape(G, Cog, P, -1)
        gemms = [[(wt[g, th, tw].T, start, rows[g, :, index], float(t > 0)) for index, phase in
                  enumerate(lay.phases) for t, (th, tw, start) in enumerate(phase.taps)] for g in range(G)]
    for g in range(G):
        for c0 in range(0, L, chunk):
            m = min(chunk, L - c0)
            for weights, start, out, beta in gemms[g]:  # beta 0: the first GEMM into its output
                blas.gemm(weights, xp[g, :, start + c0:start + c0 + m], out[:, c0:c0 + m], beta=beta)
    yv = y.reshape(n, G, Cog, *p.output_size)
    r = res.reshape(G, Cog, P, n, Hx, Wx)

    def merge(g: int, n0: int, n1: int, c0: int, c1: int) -> None:
        block = yv[n0:n1, g, c0:c1]
        for (h0, hc, hstep), (w0, wc, wstep) in lay.empty:
            block[..., h0::hstep, w0::wstep][..., :hc, :wc] = 0
        for index, phase in enumerate(lay.phases):
            (h0, hc, hstep), (w0, wc, wstep), (i0, j0) = phase.rows, phase.cols, phase.skip
            block[..., h0::hstep, w0::wstep][..., :hc, :wc] = \
                r[g, c0:c1, index, n0:n1, i0:i0 + hc, j0:j0 + wc].transpose(1, 0, 2, 3)
    parallel.run([functools.partial(merge, g, *block) for g in range(G)
                  for block in _plane_blocks(n, Cog, y[0, 0].nbytes)], y.nbytes)


# ---- backward `phase`: gy in stride phases, each tap's window a shifted contiguous run --------------------------
class _PhaseLayout(NamedTuple):
    taps: tuple[tuple[int, int, int], ...]  # per tap (kh, kw), weight order: (phase, row shift, column shift)
    phases: tuple[tuple[int, int], ...]  # the (row, column) stride phases some tap reads, in phase-index order
    Hp: int  # rows and columns of a padded phase image
    Wp: int
    L: int  # GEMM columns covering the batch block: n*Hp*Wp less the last image's spare rows
    # the GEMM operands: (run offset, first and stop phase, the taps, in phase order). Where every phase has one
    # tap at every shift (k a multiple of s: k4 s2, k16 s8), one run per shift over all phases (phases*Cog rows,
    # stacked phase-major); else one run per tap, in its phase.
    runs: tuple[tuple[int, int, int, tuple[int, ...]], ...]


@functools.lru_cache(maxsize=256)
def _phase_layout(p: Problem, n: int) -> _PhaseLayout:
    """Input pixel (h, w) meets tap (kh, kw) at canvas row h*s + kh*d: phase (kh*d) % s, row h + (kh*d) // s (the
    same along columns). Phases no tap reads (stride > kernel) are left out."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    raw = [((kh * dh) % sh, (kw * dw) % sw, (kh * dh) // sh, (kw * dw) // sw)
           for kh in range(p.kH) for kw in range(p.kW)]
    phases = tuple(sorted({(a, b) for a, b, _, _ in raw}))
    taps = tuple((phases.index((a, b)), di, dj) for a, b, di, dj in raw)
    di, dj = max(t[1] for t in taps), max(t[2] for t in taps)
    # one spare row when the runs shift right: the last run then ends dj columns into the row below
    Hp, Wp = p.H + di + (1 if dj else 0), p.W + dj
    by_shift: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for t, (phase, a, b) in enumerate(taps):
        by_shift.setdefault((a, b), []).append((phase, t))
    P = len(phases)
    if P > 1 and all(sorted(ph for ph, _ in group) == list(range(P)) for group in by_shift.values()):
        runs = tuple((a * Wp + b, 0, P, tuple(t for _, t in sorted(group)))
                     for (a, b), group in sorted(by_shift.items()))
    else:
        runs = tuple((a * Wp + b, phase, phase + 1, (t,)) for t, (phase, a, b) in enumerate(taps))
    return _PhaseLayout(taps, phases, Hp, Wp, (n - 1) * Hp * Wp + p.H * Wp, runs)


# gy is split into its phases (and the forward's phases merged into y) one cache-sized block of planes at a time, so
# that the block is read (written) from memory once and from cache by every phase's strided copy (superres_x2's 16 MB
# gy: 8.6 -> 4 ms on the EPYC).
SPLIT_BLOCK_BYTES = 256 << 10


def _plane_blocks(n: int, C: int, plane_bytes: int) -> list[tuple[int, int, int, int]]:
    """(n0, n1, c0, c1): blocks of an (n, C) stack of planes of about SPLIT_BLOCK_BYTES, whole images where they
    fit, else channels of one image."""
    per_image = max(1, SPLIT_BLOCK_BYTES // max(1, C * plane_bytes))
    channels = C if per_image > 1 or C * plane_bytes <= SPLIT_BLOCK_BYTES else \
        max(1, SPLIT_BLOCK_BYTES // max(1, plane_bytes))
    return [(n0, min(n0 + per_image, n), c0, min(c0 + channels, C))
            for n0 in range(0, n, per_image) for c0 in range(0, C, channels)]


def _gy_phases(p: Problem, gy: np.ndarray, layout: _PhaseLayout) -> np.ndarray:
    """gy split into the stride phases the taps read, zero-padded: (G, phases, Cog, n*Hp*Wp); phase (a, b) holds
    canvas pixels (i*sh + a, j*sw + b) at (i, j). Canvas pixels no tap reaches (beyond Hp, Wp) are left out."""
    G, n = p.groups, gy.shape[0]
    Cog = p.C_out // G
    sh, sw = p.stride
    Ho, Wo = p.output_size
    Hp, Wp = layout.Hp, layout.Wp
    rows, cols = output_window(p)
    out = np.empty((G, len(layout.phases), Cog, n, Hp, Wp), gy.dtype)
    copies = []  # (phase index, first output row and column, rows and columns, where they land)
    for index, (a, b) in enumerate(layout.phases):
        oh, ow = (a - rows.start) % sh, (b - cols.start) % sw  # the first output row and column in the phase
        i0, j0 = (oh + rows.start) // sh, (ow + cols.start) // sw
        hh = max(0, min(len(range(oh, Ho, sh)), Hp - i0))
        ww = max(0, min(len(range(ow, Wo, sw)), Wp - j0))
        phase = out[:, index]  # (G, Cog, n, Hp, Wp)
        if not (hh and ww):
            phase[...] = 0
            continue
        # zeros only around what the copy writes
        phase[..., :i0, :] = 0
        phase[..., i0 + hh:, :] = 0
        phase[..., i0:i0 + hh, :j0] = 0
        phase[..., i0:i0 + hh, j0 + ww:] = 0
        copies.append((index, oh, ow, hh, ww, i0, j0))
    g = gy.reshape(n, G, Cog, Ho, Wo)

    def split(group: int, n0: int, n1: int, c0: int, c1: int) -> None:
        src = g[n0:n1, group, c0:c1].transpose(1, 0, 2, 3)
        dst = out[group, :, c0:c1, n0:n1]
        for index, oh, ow, hh, ww, i0, j0 in copies:
            dst[index, ..., i0:i0 + hh, j0:j0 + ww] = src[..., oh::sh, ow::sw][..., :hh, :ww]
    parallel.run([functools.partial(split, group, *block) for group in range(G)
                  for block in _plane_blocks(n, Cog, Ho * Wo * gy.itemsize)], gy.nbytes)
    return out.reshape(G, len(layout.phases), Cog, n * Hp * Wp)


def _backward_input_phase(p: Problem, gy: np.ndarray, w: np.ndarray, gx: np.ndarray, stacked: bool,
                          chunk: int, in_place: bool) -> None:
    G, n = p.groups, gy.shape[0]
    Cig, Cog = p.C_in // G, p.C_out // G
    layout = _phase_layout(p, n)
    taps, Hp, Wp, L = layout.taps, layout.Hp, layout.Wp, layout.L
    phases = _gy_phases(p, gy, layout)
    res = np.empty((G, Cig, n * Hp * Wp), gy.dtype)
    if in_place:
        runs = layout.runs
        # (G, runs, Cig, taps of the run * Cog): the run's taps in phase order, as its operand stacks them
        wt = np.ascontiguousarray(w.reshape(G, Cig, Cog, len(taps))[..., [list(r[3]) for r in runs]].transpose(
            0, 3, 1, 4, 2)).reshape(G, len(runs), Cig, -1)
        for g in range(G):
            for c0 in range(0, L, chunk):
                m = min(chunk, L - c0)
                out = res[g, :, c0:c0 + m]
                for r, (offset, first, stop, _) in enumerate(runs):
                    operand = phases[g, first:stop, :, offset + c0:offset + c0 + m].reshape(-1, m)
                    blas.gemm(wt[g, r], operand, out, beta=1.0 if r else 0.0)
    else:
        wk = np.ascontiguousarray(w.reshape(G, Cig, Cog, len(taps)).transpose(0, 1, 3, 2)).reshape(G, Cig, -1)
        cols = np.empty((G, len(taps), Cog, min(chunk, L)), gy.dtype)
        for c0 in range(0, L, chunk):
            m = min(chunk, L - c0)
            block = cols[..., :m]
            parallel.copy([(block[:, t], phases[:, phase, :, di * Wp + dj + c0:di * Wp + dj + c0 + m])
                           for t, (phase, di, dj) in enumerate(taps)])
            np.matmul(wk, block.reshape(G, -1, m), out=res[..., c0:c0 + m])
    parallel.assign(gx.reshape(n, G, Cig, p.H, p.W),
                    res.reshape(G, Cig, n, Hp, Wp)[..., :p.H, :p.W].transpose(2, 0, 1, 3, 4))


def _backward_weight_phase(p: Problem, gy: np.ndarray, x: np.ndarray, gw: np.ndarray, stacked: bool) -> None:
    G, n = p.groups, gy.shape[0]
    Cig = p.C_in // G
    layout = _phase_layout(p, n)
    taps, Hp, Wp, L = layout.taps, layout.Hp, layout.Wp, layout.L
    phases = _gy_phases(p, gy, layout)
    xp = np.zeros((G, Cig, n, Hp, Wp), x.dtype)  # x in the padded rows; zeros where the runs overhang
    parallel.assign(xp[..., :p.H, :p.W], x.reshape(n, G, Cig, p.H, p.W).transpose(1, 2, 0, 3, 4))
    xp = xp.reshape(G, Cig, -1)[..., :L]
    g = gw.reshape(G, Cig, -1, len(taps))
    Cog = g.shape[2]
    # The runs as they lie (rows a phase image apart, columns contiguous): BLAS reads them without a copy, one GEMM
    # per run gives its taps (phases*Cog wide where the layout stacks the phases of a shift).
    for offset, first, stop, group in layout.runs:
        res = xp @ phases[:, first:stop, :, offset:offset + L].reshape(G, -1, L).transpose(0, 2, 1)
        g[..., list(group)] += res.reshape(G, Cig, len(group), Cog).transpose(0, 1, 3, 2)


# ---- one tap per canvas pixel: the canvas in stride blocks is one GEMM's operand ---------------------------------
def _forward_blocks(p: Problem, x: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
    G, n = p.groups, x.shape[0]
    Cig, Cog = p.C_in // G, p.C_out // G
    (sh, sw), (dh, dw) = p.stride, p.dilation
    xc = _channels_first(x, G).reshape(G, Cig, -1)  # (G, Cig, n*H*W)
    wt = w.reshape(G, Cig, Cog * p.kH * p.kW).transpose(0, 2, 1)  # BLAS reads the transpose where it lies
    res = (wt @ xc).reshape(G, Cog, p.kH, p.kW, n, p.H, p.W)
    if _blocks_tile_output(p):  # the output is the blocks: one transposing copy
        parallel.assign(y.reshape(n, G, Cog, p.H, p.kH, p.W, p.kW), res.transpose(4, 0, 1, 5, 2, 6, 3))
        return
    Hb, Wb = _block_rows(p)
    canvas = np.zeros((n, G, Cog, Hb, sh, Wb, sw), x.dtype)
    parallel.assign(canvas[:, :, :, :p.H, 0:dh * p.kH:dh, :p.W, 0:dw * p.kW:dw], res.transpose(4, 0, 1, 5, 2, 6, 3))
    rows, cols = output_window(p)
    parallel.assign(y.reshape(n, G, Cog, *p.output_size), canvas.reshape(n, G, Cog, Hb * sh, Wb * sw)[..., rows, cols])


def _gy_blocks(p: Problem, gy: np.ndarray) -> np.ndarray:
    """gy's canvas in stride blocks, the taps' pixels only: (G, Cog*kH*kW, n*H*W), the backward GEMMs' operand."""
    G, n = p.groups, gy.shape[0]
    Cog = p.C_out // G
    (sh, sw), (dh, dw) = p.stride, p.dilation
    if _blocks_tile_output(p):
        blocks = gy.reshape(n, G, Cog, p.H, p.kH, p.W, p.kW)
    else:
        Hb, Wb = _block_rows(p)
        canvas = np.zeros((n, G, Cog, Hb * sh, Wb * sw), gy.dtype)
        rows, cols = output_window(p)
        parallel.assign(canvas[..., rows, cols], gy.reshape(n, G, Cog, *p.output_size))
        blocks = canvas.reshape(n, G, Cog, Hb, sh, Wb, sw)[:, :, :, :p.H, 0:dh * p.kH:dh, :p.W, 0:dw * p.kW:dw]
    # (n, G, Cog, H, kH, W, kW) -> (G, Cog, kH, kW, n, H, W)
    return parallel.contiguous(blocks.transpose(1, 2, 4, 6, 0, 3, 5)).reshape(G, Cog * p.kH * p.kW, -1)


def _backward_input_blocks(p: Problem, gy: np.ndarray, w: np.ndarray, gx: np.ndarray, stacked: bool) -> None:
    G, n = p.groups, gy.shape[0]
    Cig = p.C_in // G
    res = w.reshape(G, Cig, -1) @ _gy_blocks(p, gy)  # (G, Cig, Cog*kH*kW) @ (G, Cog*kH*kW, nHW)
    parallel.assign(gx.reshape(n, G, Cig, p.H, p.W), res.reshape(G, Cig, n, p.H, p.W).transpose(2, 0, 1, 3, 4))


def _backward_weight_blocks(p: Problem, gy: np.ndarray, x: np.ndarray, gw: np.ndarray, stacked: bool) -> None:
    G = p.groups
    Cig = p.C_in // G
    xc = _channels_first(x, G).reshape(G, Cig, -1)  # (G, Cig, n*H*W)
    gw += (xc @ _gy_blocks(p, gy).transpose(0, 2, 1)).reshape(gw.shape)


BACKEND = NumpyBackend
