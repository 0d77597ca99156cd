"""The report's sections as document blocks: each turns the numbers of `analysis` into captioned tables,
paragraphs (including what is missing and why) and figures from `plots`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from autotune import explain
from autotune.core.problem import Problem
from autotune.report import analysis, plots
from autotune.report.model import NOT_RUN, SECTION_TITLES, Image, Pre, Section, Table
from autotune.report.text import distinct, fmt, fmt_gflops, fmt_ms, label, op_order, short

LINES_PER_PLOT = 10   # convergence curves per figure: more is unreadable


def environment(df: pd.DataFrame) -> Section:
    sec = Section("environment", SECTION_TITLES["environment"])
    dev = df["device"].iloc[0]
    rows = [["device id", dev], ["device name", ", ".join(distinct(df["device_name"])) or "(not recorded)"],
            ["autotune versions", ", ".join(distinct(df.get("autotune_version", []))) or "(not recorded)"],
            ["rows", str(len(df))], ["ok rows", str(int((df["status"] == "ok").sum()))],
            ["first / last timestamp", f"{min(distinct(df['timestamp']), default='?')} / "
                                       f"{max(distinct(df['timestamp']), default='?')}"],
            ["files", ", ".join(distinct(df.get("source", [])))]]
    sec.blocks.append(Table(["property", "value"], rows))
    brow = []
    for backend, part in df.groupby("backend", sort=True):
        brow.append([str(backend), ", ".join(distinct(part.get("backend_version", []))) or "(not recorded)",
                     str(len(part)), str(int(part["status"].isin(["ok", "baseline"]).sum()))])
    sec.blocks.append(Table(["backend", "versions (library, driver)", "rows", "ok rows"], brow,
                            "Backends measured on this device"))
    return sec


def gflops_image(wide: pd.DataFrame, names: dict[str, str], title: str) -> Image | None:
    """Bar chart of a wide GFLOP/s frame (index (problem, op)); None without matplotlib or numbers."""
    if not plots.available() or wide.empty or wide.notna().sum().sum() == 0:
        return None
    w = wide.dropna(how="all")
    labels = [f"{short(label(p, names), 28)} {o}" for p, o in w.index]
    return Image(plots.gflops_bars(w, labels, title), f"bar chart: {title}")


def best(df: pd.DataFrame, names: dict[str, str]) -> Section:
    """Best GFLOP/s per backend and problem on one device, the fastest backend, its ratio to the baseline."""
    dev = df["device"].iloc[0]
    grid = analysis.best_grid(df, names)
    rows = []
    for (prob, op), vals in grid.wide.iterrows():
        cells = []
        best_b, best_v = "", -1.0
        for b in grid.tuned_backends:
            v = vals[b]
            if pd.notna(v):
                cells.append(fmt_gflops(float(v)))
                if v > best_v:
                    best_b, best_v = b, float(v)
            elif (prob, op, b) in grid.failed.index:
                cells.append(f"failed ({int(grid.failed[(prob, op, b)])})")
            else:
                cells.append(NOT_RUN)
        base_vals = [vals[c] for c in grid.baseline_columns]
        cells += [fmt_gflops(float(v)) if pd.notna(v) else NOT_RUN for v in base_vals]
        ratio = NOT_RUN
        if best_b and base_vals and pd.notna(base_vals[0]) and base_vals[0] > 0:
            ratio = f"{best_v / float(base_vals[0]):.2f}"
        rows.append([label(prob, names), op, *cells, best_b, ratio])
    if grid.baseline_columns:
        base0 = grid.baseline_columns[0]
        columns = ["problem", "op", *grid.tuned_backends, *grid.baseline_columns, "fastest",
                   f"best / {base0}"]
    else:
        columns = ["problem", "op", *grid.tuned_backends, "fastest"]
        rows = [r[:-1] for r in rows]
    table = Table(columns, rows,
                  "Best GFLOP/s of the ok trials (higher is better; 2*N*C_in*C_out/groups*H*W*kH*kW FLOPs "
                  "over the median time); 'failed (n)': every trial failed; empty: not measured")
    sec = Section("best", SECTION_TITLES["best"], [table])
    if not (df["status"] == "ok").any():
        sec.blocks.insert(0, f"No ok trial on device {dev}: every measurement failed or is a baseline.")
    if not (df["status"] == "baseline").any():
        sec.blocks.append(f"No PyTorch baseline rows (status 'baseline') for device {dev}: the comparison "
                          "with torch is missing (`autotune bench` times it side by side).")
    img = gflops_image(grid.wide, names, f"{dev}: best GFLOP/s")
    if img:
        sec.blocks.append(img)
    return sec


def speedup(df: pd.DataFrame, names: dict[str, str]) -> Section:
    sec = Section("speedup", SECTION_TITLES["speedup"])
    rows, missing, ratios = [], [], []
    for s in analysis.speedups(df):
        if s.default_s is not None:
            dtext, rtext = fmt_ms(s.default_s), f"{s.ratio:.2f}" if s.ratio else NOT_RUN
            if s.ratio:
                ratios.append(s.ratio)
        elif s.default_failed is not None:
            dtext, rtext = f"failed ({', '.join(s.default_failed)})", NOT_RUN
            missing.append(f"default config failed in study {s.study}: speed-up unknown")
        else:
            dtext, rtext = NOT_RUN, NOT_RUN
            missing.append(f"no default-config trial for study {s.study}, speed-up unknown")
        rows.append([s.study, s.backend, s.op, label(s.problem, names), str(s.trials), str(s.ok), dtext,
                     fmt_ms(s.best_s), rtext])
    if not rows:
        sec.blocks.append("No tuning trials on this device (only baselines), so no speed-up.")
        return sec
    sec.blocks.append(Table(["study", "backend", "op", "problem", "trials", "ok", "default ms", "best ms",
                             "speed-up"], rows,
                            "Speed-up = default config's median time / best ok trial's median time"))
    if ratios:
        sec.blocks.append(f"Speed-up over the default config: geometric mean "
                          f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}, max {max(ratios):.2f} "
                          f"over {len(ratios)} studies.")
    for m in missing:
        sec.blocks.append(m + ".")
    return sec


def convergence(df: pd.DataFrame, names: dict[str, str], device: str) -> Section:
    sec = Section("convergence", SECTION_TITLES["convergence"])
    curves: dict[tuple[str, str], list[tuple[str, np.ndarray, np.ndarray]]] = {}
    rows = []
    for c in analysis.convergence(df):
        if c.best_s is None:
            rows.append([c.study, str(c.trials), "0", NOT_RUN, NOT_RUN, NOT_RUN])
            continue
        rows.append([c.study, str(c.trials), str(c.ok), fmt_ms(c.first_s), fmt_ms(c.best_s), str(c.best_at)])
        curves.setdefault((c.backend, c.op), []).append((label(c.problem, names), c.trial_no, c.best_so_far))
    if not rows:
        sec.blocks.append("No tuning trials on this device.")
        return sec
    sec.blocks.append(Table(["study", "trials", "ok", "first ok ms", "best ms", "best at trial"], rows))
    if not plots.available():
        return sec
    for (backend, op), lines in sorted(curves.items(), key=lambda kv: (kv[0][0], op_order(kv[0][1]))):
        for start in range(0, len(lines), LINES_PER_PLOT):
            chunk = [(short(name, 30), x, y) for name, x, y in lines[start:start + LINES_PER_PLOT]]
            part = f" ({start // LINES_PER_PLOT + 1})" if len(lines) > LINES_PER_PLOT else ""
            title = f"{device}: {backend} {op}{part}"
            sec.blocks.append(Image(plots.convergence_chart(chunk, title), f"convergence: {title}"))
    return sec


def importance(df: pd.DataFrame, device: str) -> Section:
    sec = Section("importance", SECTION_TITLES["importance"])
    per_study, skipped = analysis.importances(df)
    if not per_study:
        sec.blocks.append("No study has two or more ok trials that differ in a parameter: importances "
                          "unknown.")
        return sec
    sec.blocks.append(f"Importance of each parameter for the median time, per study (sums to 1). Studies "
                      f"with at least {analysis.MIN_OPTUNA_TRIALS} ok trials use Optuna's importance "
                      f"evaluator (PED-ANOVA: which parameters set the best trials apart) on an in-memory "
                      f"study rebuilt from the rows; smaller ones the share of the variance of log(time) "
                      f"that each parameter's values explain.")
    for backend in sorted({s.backend for s in per_study}):
        items = [s for s in per_study if s.backend == backend]
        keys = sorted({k for s in items for k in s.importance})
        rows = [[s.study, s.op, s.method, *[fmt(s.importance.get(k), 3) for k in keys]] for s in items]
        sec.blocks.append(Table(["study", "op", "method", *keys], rows, f"backend {backend}"))
        if plots.available() and keys:
            mean = [float(np.mean([s.importance.get(k, 0.0) for s in items])) for k in keys]
            png = plots.importance_bars(keys, mean, len(items), f"{device}: {backend}")
            sec.blocks.append(Image(png, f"parameter importance: {device} {backend}"))
    if skipped:
        sec.blocks.append(f"{len(skipped)} study(ies) without two ok trials that differ in a parameter: "
                          + ", ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
    return sec


def failures(df: pd.DataFrame) -> Section:
    sec = Section("failures", SECTION_TITLES["failures"])
    groups, totals = analysis.failures(df)
    if not groups:
        sec.blocks.append("No failed trials.")
        return sec
    rows = [[g.backend, g.op, g.status, str(g.count),
             short(g.reason, 160) if g.reason else "(no reason recorded)"] for g in groups]
    failed = {k: v for k, v in totals.items() if k != "pruned"}
    pruned = (f". Pruned before running (a constraint of the space, or a repeat): {totals['pruned']}"
              if "pruned" in totals else "")
    sec.blocks.append("Failed trials: " + (", ".join(f"{s} {n}" for s, n in sorted(failed.items())) or "none")
                      + pruned + ".")
    sec.blocks.append(Table(["backend", "op", "status", "count", "example reason"], rows))
    return sec


def comparison(df: pd.DataFrame, names: dict[str, str], devices: list[str]) -> Section:
    sec = Section("comparison", "Comparison across devices", level=2)
    if len(devices) < 2:
        sec.blocks.append("Only one device has results: nothing to compare across devices.")
        return sec
    wide, lookup = analysis.best_per_device(df, names, devices)
    rows = []
    for prob, op in wide.index:
        cells = []
        for dev in devices:
            if (dev, prob, op) in lookup:
                g, b = lookup[(dev, prob, op)]
                cells.append(f"{fmt_gflops(g)} ({b})")
            else:
                cells.append(NOT_RUN)
        rows.append([label(prob, names), op, *cells])
    sec.blocks.append(Table(["problem", "op", *devices], rows,
                            "Best GFLOP/s on each device (backend that reached it); empty: no ok trial "
                            "there"))
    img = gflops_image(wide, names, "best GFLOP/s per device")
    if img:
        sec.blocks.append(img)
    return sec


def explain_layer(df: pd.DataFrame, layer: str | None, names: dict[str, str]) -> Section:
    """The stride-phase picture of one layer (`autotune explain`): text, overlap and tap maps."""
    name, p = analysis.choose_layer(df, layer, names)
    sec = Section("explain", f"What the layer does to each output pixel: {name}", level=2)
    dec = explain.phase_decomposition((p.kH, p.kW), p.stride, p.padding, p.dilation, p.output_padding)
    # An input of at most 8x8 keeps the overlap map legible; the layer's own size where 8x8 is not valid.
    H, W = min(p.H, 8), min(p.W, 8)
    try:
        dec.output_size(H, W)
        Problem.make(**{**p.as_args(), "H": H, "W": W})
    except ValueError:
        H, W = p.H, p.W
    ones = np.ones((p.kH, p.kW))
    sec.blocks.append(f"Layer {p.key}. The output splits into {len(dec.phases)} phases (output row % "
                      f"stride, column % stride); each phase is an ordinary stride-1 convolution with the "
                      f"taps shown. `autotune explain` prints this and exports the per-phase kernels. "
                      f"Overlap counts are for a {H}x{W} input.")
    if plots.available():
        sec.blocks.append(Image(plots.phase_maps(dec, H, W), f"overlap count and tap phases of {name}"))
        if len(dec.phases) <= 64:   # more small grids than a page can show
            sec.blocks.append(Image(plots.phase_tap_grids(dec, p.kH, p.kW), f"per-phase tap grids of {name}"))
    sec.blocks.append(Pre(explain.format_text(dec, ones, H, W)))
    return sec
