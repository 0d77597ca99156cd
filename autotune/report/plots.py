"""The report's figures, as PNG bytes. matplotlib is optional (the `report` extra) and slow to import, so it
is imported on first use, never when `autotune.report` is imported; without it `available()` is False and
the report leaves its plots out."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:   # for the annotations only
    from autotune.explain import Decomposition


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed), or None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def available() -> bool:
    return _pyplot() is not None


def _ticker() -> Any:
    import matplotlib.ticker
    return matplotlib.ticker


def _png(fig: Any, tight: bool = True) -> bytes:
    """PNG bytes of `fig` (closed afterwards). `tight` trims to the drawn area (costs a second draw: used
    where labels are long and the layout is not known in advance)."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def gflops_bars(wide: pd.DataFrame, labels: list[str], title: str) -> bytes:
    """Horizontal bars: one group per row of `wide` (labelled by `labels`), one bar per column."""
    plt = _pyplot()
    n, m = len(wide), len(wide.columns)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.28 * n * max(1, min(m, 4)) / 2))
    height = 0.8 / max(m, 1)
    y = np.arange(n)
    for i, c in enumerate(wide.columns):
        ax.barh(y + i * height, wide[c].fillna(0).to_numpy(), height=height, label=str(c))
    values = wide.to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > 30:   # small and large layers in one chart
        ax.set_xscale("log")
    ax.set_yticks(y + height * (m - 1) / 2, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("GFLOP/s (best ok trial)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def convergence_chart(lines: list[tuple[str, np.ndarray, np.ndarray]], title: str) -> bytes:
    """Best-so-far time against trial number, one step line per (label, trial numbers, best-so-far times)."""
    plt = _pyplot()
    ticker = _ticker()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    # Normalized by each study's final best, so problems of very different sizes share one axis and every
    # curve ends at 1; the table beside the chart has the absolute times.
    for label, x, y in lines:
        ax.step(x, y / y[-1], where="post", marker=".", label=label)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("trial number")
    ax.set_ylabel("best-so-far time / final best")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="upper right")
    return _png(fig)


def importance_bars(params: list[str], mean: list[float], n_studies: int, title: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(params)))
    ax.barh(params, mean, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(f"mean importance over {n_studies} studies")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def phase_maps(dec: Decomposition, H: int, W: int) -> bytes:
    """Side by side: how many input pixels write each output pixel (for an HxW input), and which output phase
    each kernel tap feeds."""
    plt = _pyplot()
    overlap = dec.overlap_count(H, W)
    taps = dec.tap_phase_map()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    im = axes[0].imshow(overlap, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=axes[0], fraction=0.046, label="writes per output pixel")
    axes[0].set_title(f"overlap count per output pixel ({H}x{W} input)", fontsize=9)
    axes[0].set_xlabel("ow")
    axes[0].set_ylabel("oh")
    if overlap.size <= 256:   # numbers in the cells only while they stay legible
        mid = (overlap.min() + overlap.max()) / 2
        for (i, j), v in np.ndenumerate(overlap):
            axes[0].text(j, i, str(v), ha="center", va="center", fontsize=6,
                         color="black" if v > mid else "white")
    axes[1].imshow(taps, cmap="tab20", interpolation="nearest", vmin=0, vmax=19)
    if taps.size <= 256:
        for (i, j), v in np.ndenumerate(taps):
            ph = dec.phases[v]
            axes[1].text(j, i, f"{ph.rows.phase},{ph.cols.phase}", ha="center", va="center", fontsize=7)
    axes[1].set_title("kernel taps, labelled with the output phase (r_h, r_w) they feed", fontsize=9)
    axes[1].set_xlabel("kw")
    axes[1].set_ylabel("kh")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.yaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def phase_tap_grids(dec: Decomposition, kH: int, kW: int) -> bytes:
    """One small kH x kW grid per output phase, its taps in grey."""
    plt = _pyplot()
    cols = min(len(dec.phases), 8)
    nrows = math.ceil(len(dec.phases) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(1.4 * cols, 1.6 * nrows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, ph in zip(axes.flat, dec.phases):
        grid = np.zeros((kH, kW))
        for kh, kw in ph.taps:
            grid[kh, kw] = 1
        ax.axis("on")
        ax.imshow(grid, cmap="Greys", vmin=0, vmax=1.4, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"({ph.rows.phase},{ph.cols.phase}): {ph.n_taps} taps", fontsize=7)
    fig.suptitle("kernel taps (grey) used by each output phase", fontsize=9)
    return _png(fig)
