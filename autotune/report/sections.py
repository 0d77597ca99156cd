"""The report's sections as document blocks: each turns the numbers of `analysis` into captioned tables,
paragraphs (including what is missing and why) and figures from `plots`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from autotune import explain
from autotune.core.problem import Problem
from autotune.report import analysis, plots
from autotune.report.model import NOT_RUN, SECTION_TITLES, Image, Pre, Section, Table
from autotune.report.text import distinct, fmt, fmt_gflops, fmt_ms, label, op_order, short, short_label

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
    if "threads" in df.columns and df["threads"].notna().any():
        t = df[df["threads"].notna()]
        sec.blocks.append("Threads and 1-minute load average recorded with the measurements: "
                          + "; ".join(f"{src}: threads {', '.join(distinct(part['threads']))}, load "
                                      f"{part['load_avg'].min():.2f}..{part['load_avg'].max():.2f}"
                                      for src, part in t.groupby("source")) + ".")
    return sec


def problem_keys(df: pd.DataFrame, names: dict[str, str]) -> Table:
    """The appendix: each short layer name and its full problem key (per op: gradients are keyed without bias)."""
    rows = sorted({(short_label(k, names), k) for k in distinct(df["problem"])})
    return Table(["layer", "problem key"], [list(r) for r in rows], "Short names used above and their full keys")


def _compact_config(config: str) -> str:
    try:
        c = json.loads(config)
    except (TypeError, ValueError):
        return config
    return " ".join(f"{k}={v}" for k, v in sorted(c.items())) if isinstance(c, dict) else config


def overview(df: pd.DataFrame, names: dict[str, str]) -> Section:
    """The first screen: who wins each layer and op and by how much over torch (heat-map), the winners with
    their configs, their fraction of the device's measured peak, and their GFLOP/s with the repetition range."""
    sec = Section("overview", SECTION_TITLES["overview"])
    dev = df["device"].iloc[0]
    won = analysis.winners(df)
    if not won:
        sec.blocks.append(f"No ok measurement on device {dev}: nothing won.")
        return sec
    peak = analysis.peak_gflops(df)
    ops = sorted({w.op for w in won}, key=op_order)
    order = list(dict.fromkeys(short_label(w.problem, names) for w in won))
    tips = {short_label(w.problem, names): w.problem for w in won}
    ratios = [w.vs_torch for w in won if w.vs_torch]
    counts = pd.Series([w.backend for w in won]).value_counts()
    head = (f"{len(won)} (layer, op) pairs measured; winners: "
            + ", ".join(f"{b} {n}" for b, n in counts.items()))
    if ratios:
        head += (f". Speed-up of the winner over torch: geometric mean {math.exp(np.mean(np.log(ratios))):.2f}x, "
                 f"range {min(ratios):.2f}x to {max(ratios):.2f}x over {len(ratios)} pairs")
    head += (f". Measured peak (BLAS sgemm): {peak:.1f} GFLOP/s." if peak else
             ". No measured peak for this device (run `autotune bench --record` on it: it times a BLAS sgemm), "
             "so no fraction of peak.")
    sec.blocks.append(head)
    if plots.available():
        winner = {(short_label(w.problem, names), w.op): w.backend for w in won}
        ratio = {(short_label(w.problem, names), w.op): w.vs_torch for w in won if w.vs_torch}
        sec.blocks.append(Image(plots.winner_heatmap(order, ops, winner, ratio,
                                                     f"{dev}: winning backend, coloured by speed-up over torch"),
                                "heat-map: winning backend per layer and op, coloured by speed-up over torch"))
    rows = []
    for w in sorted(won, key=lambda w: (order.index(short_label(w.problem, names)), op_order(w.op))):
        rows.append([short_label(w.problem, names), w.op, w.backend, _compact_config(w.config), fmt_ms(w.time_s),
                     f"{fmt_ms(w.time_min_s)}..{fmt_ms(w.time_max_s)}", str(w.measurements),
                     fmt_gflops(w.gflops), fmt(w.vs_torch) if w.vs_torch else NOT_RUN,
                     f"{100 * w.peak_fraction:.0f}%" if w.peak_fraction else NOT_RUN])
    sec.blocks.append(Table(["layer", "op", "winner", "config", "ms", "range ms", "n", "GFLOP/s", "x torch",
                             "of peak"], rows,
                            "Winner per layer and op: the config with the smallest median of its ok measurements "
                            "(as dispatch ranks them); range: fastest..slowest repetition; n: measurements; "
                            "x torch: PyTorch's median / the winner's (same machine, same threads); of peak: "
                            "GFLOP/s over the measured sgemm rate. Hover a layer for its full key.", tips,
                            always_open=True))
    if plots.available():
        labels = [f"{short_label(w.problem, names)} {w.op}" for w in won]
        lo = [w.gflops * w.time_s / w.time_max_s for w in won]
        hi = [w.gflops * w.time_s / w.time_min_s for w in won]
        sec.blocks.append(Image(plots.winner_range_bars(labels, [w.gflops for w in won], lo, hi,
                                                        [w.backend for w in won], f"{dev}: winners' GFLOP/s",
                                                        peak),
                                "winners' GFLOP/s with the repetition range as error bars"))
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
    if plots.available():
        value: dict[tuple[str, str], float] = {}
        for sp in analysis.speedups(df):
            if sp.ratio:
                value[(short_label(sp.problem, names), f"{sp.backend} {sp.op}")] = sp.ratio
        if value:
            probs = list(dict.fromkeys(k[0] for k in value))
            cols = sorted({k[1] for k in value}, key=lambda c: (c.split()[0], op_order(c.split()[1])))
            sec.blocks.append(Image(plots.speedup_grid(probs, cols, value,
                                                       "tuned config's speed-up over the backend's default"),
                                    "speed-up of the tuned config over the default, per layer, backend and op"))
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
    sec.blocks.append(Table(["study", "trials", "ok", "first ok ms", "best ms", "best at trial"], rows,
                            "Per study: the first ok trial's and the best median time"))
    if not plots.available():
        return sec
    panels: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for c in analysis.convergence(df):
        if c.best_s is None or c.seconds is None:
            continue
        panels.setdefault(c.op, []).append((c.backend, c.seconds, c.best_so_far))
    panels = {op: panels[op] for op in sorted(panels, key=op_order)}
    if panels:
        sec.blocks.insert(0, Image(plots.convergence_wall(panels, f"{device}: convergence against wall time"),
                                   f"convergence against wall time: {device}"))
    return sec


def importance(df: pd.DataFrame, device: str) -> Section:
    sec = Section("importance", SECTION_TITLES["importance"])
    per_study, skipped = analysis.importances(df)
    if not per_study:
        sec.blocks.append("No study has two or more ok trials that differ in a parameter: importances "
                          "unknown.")
        return sec
    sec.blocks.append(f"Importance of each parameter for the median time, per study (sums to 1), by one method "
                      f"for every study: the {analysis.IMPORTANCE_METHOD}.")
    charts: dict[str, tuple[list[str], list[float], int]] = {}
    for backend in sorted({s.backend for s in per_study}):
        items = [s for s in per_study if s.backend == backend]
        keys = sorted({k for s in items for k in s.importance})
        mean = [float(np.mean([s.importance.get(k, 0.0) for s in items])) for k in keys]
        rows = [[k, fmt(m, 3), str(sum(1 for s in items if k in s.importance))] for k, m in zip(keys, mean)]
        sec.blocks.append(Table(["parameter", "mean importance", "studies"], rows, f"backend {backend}"))
        if keys:
            charts[backend] = (keys, mean, len(items))
    if plots.available() and charts:
        sec.blocks.insert(1, Image(plots.importance_panels(charts, analysis.IMPORTANCE_METHOD),
                                   f"parameter importance: {device}"))
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
