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


# ---- the first screen and the per-device charts (issue 14: readable at a glance) --------------------------------
FONT = 10   # no label smaller than this


def winner_heatmap(problems: list[str], ops: list[str], winner: dict[tuple[str, str], str],
                   ratio: dict[tuple[str, str], float], title: str) -> bytes:
    """Layer x op grid: each cell names the winning backend and is coloured by its speed-up over torch
    (log2 scale, green faster, red slower, grey not compared)."""
    plt = _pyplot()
    import matplotlib.colors as mcolors
    grid = np.full((len(problems), len(ops)), np.nan)
    for i, p in enumerate(problems):
        for j, o in enumerate(ops):
            r = ratio.get((p, o))
            if r and r > 0:
                grid[i, j] = math.log2(r)
    fig, ax = plt.subplots(figsize=(1.9 * len(ops) + 2.6, 0.42 * len(problems) + 1.3))
    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("#dddddd")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=mcolors.TwoSlopeNorm(0, -2, 2), aspect="auto")
    for i, p in enumerate(problems):
        for j, o in enumerate(ops):
            name = winner.get((p, o))
            if name is None:
                continue
            r = ratio.get((p, o))
            ax.text(j, i, f"{name} {r:.2f}x" if r else name, ha="center", va="center", fontsize=FONT - 1)
    ax.set_xticks(range(len(ops)), ops, fontsize=FONT)
    ax.set_yticks(range(len(problems)), problems, fontsize=FONT)
    ax.xaxis.tick_top()
    bar = fig.colorbar(im, ax=ax, ticks=[-2, -1, 0, 1, 2], shrink=0.8)
    bar.ax.set_yticklabels(["0.25x", "0.5x", "1x", "2x", "4x"], fontsize=FONT)
    bar.set_label("speed-up over torch", fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1, pad=24)
    return _png(fig)


def winner_range_bars(labels: list[str], gflops: list[float], lo: list[float], hi: list[float],
                      colors: list[str], title: str, peak: float | None) -> bytes:
    """Horizontal bars of the winners' GFLOP/s with error bars from the repetition range (slowest..fastest)
    and the device's measured peak as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.27 * len(labels) + 1.2))
    y = np.arange(len(labels))
    g = np.array(gflops)
    err = np.vstack([np.maximum(g - np.array(lo), 0), np.maximum(np.array(hi) - g, 0)])
    palette = {c: f"C{i}" for i, c in enumerate(dict.fromkeys(colors))}
    ax.barh(y, g, xerr=err, color=[palette[c] for c in colors], capsize=2, error_kw={"elinewidth": 1})
    for c, col in palette.items():
        ax.barh([0], [0], color=col, label=c)
    if peak:
        ax.axvline(peak, color="k", linestyle="--", linewidth=1, label=f"measured peak {peak:.0f} GFLOP/s")
    ax.set_yticks(y, labels, fontsize=FONT - 1)
    ax.invert_yaxis()
    ax.set_xlabel("GFLOP/s of the winner (bar: median; whiskers: slowest..fastest repetition)", fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.set_title(title, fontsize=FONT + 1)
    ax.legend(fontsize=FONT - 1, loc="lower right")
    return _png(fig)


def speedup_grid(problems: list[str], columns: list[str], value: dict[tuple[str, str], float], title: str) -> bytes:
    """Problem x (backend, op) grid of the tuned config's speed-up over the default config, annotated."""
    plt = _pyplot()
    grid = np.full((len(problems), len(columns)), np.nan)
    for i, p in enumerate(problems):
        for j, c in enumerate(columns):
            if (p, c) in value:
                grid[i, j] = value[(p, c)]
    fig, ax = plt.subplots(figsize=(1.15 * len(columns) + 2.6, 0.38 * len(problems) + 1.6))
    cmap = plt.get_cmap("Greens").copy()
    cmap.set_bad("#eeeeee")
    finite = grid[np.isfinite(grid)]
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=1, vmax=max(2.0, float(finite.max()) if len(finite) else 2),
              aspect="auto")
    for i in range(len(problems)):
        for j in range(len(columns)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=FONT - 1)
    ax.set_xticks(range(len(columns)), columns, fontsize=FONT - 1, rotation=30, ha="left")
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(problems)), problems, fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1, pad=40)
    return _png(fig)


def convergence_wall(panels: dict[str, list[tuple[str, np.ndarray, np.ndarray]]], title: str) -> bytes:
    """One panel per op: best-so-far time / final best (linear, clipped at 3) against the seconds since the
    study's first trial, one line per study coloured by backend (the legend names backends, not studies)."""
    plt = _pyplot()
    ops = list(panels)
    cols = min(2, len(ops))
    rows = math.ceil(len(ops) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    backends_seen: dict[str, str] = {}
    for k, op in enumerate(ops):
        ax = axes[k // cols][k % cols]
        for backend, x, y in panels[op]:
            color = backends_seen.setdefault(backend, f"C{len(backends_seen)}")
            ax.step(x, np.minimum(y / y[-1], 3.0), where="post", color=color, alpha=0.7, linewidth=1.2)
        ax.set_title(op, fontsize=FONT)
        ax.set_ylim(0.95, 3.05)
        ax.set_yticks([1, 1.5, 2, 2.5, 3], ["1", "1.5", "2", "2.5", "3+"], fontsize=FONT)
        ax.tick_params(axis="x", labelsize=FONT)
        ax.grid(alpha=0.3)
        ax.set_xlabel("seconds since the study's first trial", fontsize=FONT)
        ax.set_ylabel("best so far / final best", fontsize=FONT)
    for k in range(len(ops), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles = [plt.Line2D([], [], color=c, label=b) for b, c in backends_seen.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=FONT)
    fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    return _png(fig)


def importance_panels(per_backend: dict[str, tuple[list[str], list[float], int]], method: str) -> bytes:
    """One horizontal bar chart per backend: mean importance of each parameter over its studies."""
    plt = _pyplot()
    names = list(per_backend)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 0.45 * max(len(v[0]) for v in
                                                                                    per_backend.values()) + 1.4),
                             squeeze=False)
    for ax, b in zip(axes[0], names):
        params, mean, n = per_backend[b]
        ax.barh(params, mean, color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=FONT)
        ax.set_title(f"{b} ({n} studies)", fontsize=FONT)
        ax.set_xlabel("mean importance", fontsize=FONT)
    fig.suptitle(f"Parameter importance: {method}", fontsize=FONT)
    fig.tight_layout()
    return _png(fig)
