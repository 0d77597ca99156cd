"""`autotune report`: one self-contained HTML page (plots embedded as base64 PNG, no network needed to view
it) and a Markdown summary on stdout, built from the results files.

Per device: the best GFLOP/s of every backend side by side with PyTorch's baseline, tuned against default
speed-up, each study's convergence, which parameters mattered, failed trials by reason, and the environment;
with several devices, a comparison across them; and the stride-phase picture of one layer (`autotune
explain`). Empty, partial or mixed-version results are reported as such ("no default-config trial ...")
instead of failing.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import io
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotune import explain
from autotune.core import results
from autotune.core.problem import OPS, Problem

HELP = "write an HTML report (plots embedded) of the tuned results and print a Markdown summary"
MIN_OPTUNA_TRIALS = 10   # below this many ok trials PED-ANOVA's top-quantile split is meaningless
LINES_PER_PLOT = 10      # convergence curves per figure: more is unreadable
MAX_TABLE_ROWS = 400     # per table in the HTML; the rest is counted, not shown
NOT_RUN = ""
SECTIONS = ("environment", "best", "speedup", "convergence", "importance", "failures")
SECTION_TITLES = {"environment": "Environment", "best": "Best GFLOP/s per backend",
                  "speedup": "Tuned vs default speed-up", "convergence": "Convergence",
                  "importance": "Which parameters mattered", "failures": "Failed trials by reason"}


# ---- document model ----------------------------------------------------------------------------------------

@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    png: bytes
    alt: str


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Any] = field(default_factory=list)   # str (a paragraph), Table, Image, Pre
    level: int = 3


@dataclass
class Pre:
    text: str


@dataclass
class Report:
    title: str
    sources: list[str]
    notes: list[str]
    sections: list[Section]
    devices: list[str]


# ---- helpers -----------------------------------------------------------------------------------------------

def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return NOT_RUN
    return f"{v:.{digits}f}"


def fmt_gflops(v: float | None) -> str:
    """Two decimals; three significant digits below 1 GFLOP/s (tiny problems, backward_bias)."""
    if v is None or not math.isfinite(v) or v >= 1:
        return _fmt(v, 2)
    return f"{v:.3g}"


def fmt_ms(seconds: float | None) -> str:
    return NOT_RUN if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e3:.3f}"


def _suite_names() -> dict[str, str]:
    """problem key -> name in the built-in suite (for readable tables); also the gradient problems' keys."""
    try:
        from autotune.problems import load_problems
        named = load_problems()
    except Exception:  # noqa: BLE001  (the suite is a convenience for labels only)
        return {}
    out: dict[str, str] = {}
    for n in named:
        for op in OPS:
            out.setdefault(n.problem.for_op(op).key, n.name)
    return out


def _op_order(op: str) -> int:
    return OPS.index(op) if op in OPS else len(OPS)


def _study_key(df: pd.DataFrame) -> pd.Series:
    """The `study` column, or backend/op/problem where a row has none."""
    fallback = df["backend"].astype(str) + "/" + df["op"].astype(str) + "/" + df["problem"].astype(str)
    if "study" not in df.columns:
        return fallback
    s = df["study"].astype(str).replace({"nan": "", "<NA>": "", "None": ""})
    return s.where(s.str.len() > 0, fallback)


def _is_default(df: pd.DataFrame) -> pd.Series:
    if "is_default" not in df.columns:
        return pd.Series(False, index=df.index)
    return pd.to_numeric(df["is_default"], errors="coerce").fillna(0).astype(int) == 1


def _distinct(values: Iterable[Any]) -> list[str]:
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        s = str(v).strip()
        if s and s not in out:
            out.append(s)
    return out


def _png(fig: Any, tight: bool = True) -> bytes:
    """PNG bytes of `fig` (closed afterwards). `tight` trims to the drawn area (costs a second draw: used
    where labels are long and the layout is not known in advance)."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is missing (plots are then left out)."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _ticker() -> Any:
    import matplotlib.ticker
    return matplotlib.ticker


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


# ---- reading -----------------------------------------------------------------------------------------------

def load(directories: Sequence[str | Path], devices: Sequence[str] | None = None
         ) -> tuple[pd.DataFrame, list[str]]:
    """Rows usable by this version (schema checked) and notes about everything left out."""
    notes: list[str] = []
    errors: list[str] = []
    for d in directories:
        if not Path(d).exists():
            notes.append(f"results directory {d} does not exist")
        elif not Path(d).is_dir():
            notes.append(f"results directory {d} is not a directory")
    df = results.read_dirs(directories, errors=errors)
    if errors:
        notes.append(f"{len(errors)} row(s) or file(s) could not be used: " + "; ".join(errors[:10])
                     + (f"; and {len(errors) - 10} more" if len(errors) > 10 else ""))
    if len(df) and "schema" in df.columns:
        schema = pd.to_numeric(df["schema"], errors="coerce")
        other = schema.notna() & (schema != results.SCHEMA_VERSION)
        for s, n in schema[other].value_counts().sort_index().items():
            notes.append(f"{n} row(s) of schema {int(s)} ignored (this autotune reads schema "
                         f"{results.SCHEMA_VERSION})")
        if schema.isna().any():
            notes.append(f"{int(schema.isna().sum())} row(s) without a schema number, read as schema "
                         f"{results.SCHEMA_VERSION}")
        df = df.loc[~other].reset_index(drop=True)
    if devices:
        present = set(df["device"]) if len(df) else set()
        for dev in devices:
            if dev not in present:
                notes.append(f"no results for device {dev}")
        df = df[df["device"].isin(list(devices))].reset_index(drop=True)
    if len(df):
        df = df.copy()
        # GFLOP/s from the one FLOP convention (Problem.flops) and the measured median, whatever the writer put
        # in the gflops column (left out by some writers; untrusted like the rest of the file).
        timed = df["time_s"].notna() & (df["time_s"] > 0)
        if timed.any():
            flops = {}
            for key, op in set(zip(df.loc[timed, "problem"], df.loc[timed, "op"])):
                flops[(key, op)] = Problem.from_key(key).flops(op)
            df.loc[timed, "gflops"] = [flops[(k, op)] / t / 1e9 for k, op, t in
                                       zip(df.loc[timed, "problem"], df.loc[timed, "op"], df.loc[timed, "time_s"])]
        df.loc[~timed, "gflops"] = np.nan
        df["study_key"] = _study_key(df)
        df["is_default_row"] = _is_default(df)
        versions = _distinct(df.get("autotune_version", pd.Series(dtype=str)))
        if len(versions) > 1:
            notes.append(f"results written by several autotune versions ({', '.join(versions)}): compare with care")
    return df, notes


# ---- per-device sections -----------------------------------------------------------------------------------

def _label(key: str, names: dict[str, str]) -> str:
    return names.get(key, key)


def environment(df: pd.DataFrame) -> Section:
    sec = Section("environment", SECTION_TITLES["environment"])
    dev = df["device"].iloc[0]
    rows = [["device id", dev], ["device name", ", ".join(_distinct(df["device_name"])) or "(not recorded)"],
            ["autotune versions", ", ".join(_distinct(df.get("autotune_version", []))) or "(not recorded)"],
            ["rows", str(len(df))], ["ok rows", str(int((df["status"] == "ok").sum()))],
            ["first / last timestamp", f"{min(_distinct(df['timestamp']), default='?')} / "
                                       f"{max(_distinct(df['timestamp']), default='?')}"],
            ["files", ", ".join(_distinct(df.get("source", [])))]]
    sec.blocks.append(Table(["property", "value"], rows))
    brow = []
    for backend, part in df.groupby("backend", sort=True):
        brow.append([str(backend), ", ".join(_distinct(part.get("backend_version", []))) or "(not recorded)",
                     str(len(part)), str(int(part["status"].isin(["ok", "baseline"]).sum()))])
    sec.blocks.append(Table(["backend", "versions (library, driver)", "rows", "ok rows"], brow,
                            "Backends measured on this device"))
    return sec


def best_table(df: pd.DataFrame, names: dict[str, str]) -> tuple[Table, pd.DataFrame]:
    """(table, wide frame of best GFLOP/s: index (problem, op), one column per backend, baselines as
    '<backend> (baseline)')."""
    ok = df[df["status"] == "ok"]
    base = df[df["status"] == "baseline"]
    wide = ok.pivot_table(index=["problem", "op"], columns="backend", values="gflops", aggfunc="max")
    if len(base):
        bw = base.pivot_table(index=["problem", "op"], columns="backend", values="gflops", aggfunc="max")
        bw.columns = [f"{c} (baseline)" for c in bw.columns]
        wide = wide.join(bw, how="outer") if len(wide) else bw
    keys = sorted({(p, o) for p, o in zip(df["problem"], df["op"])},
                  key=lambda k: (_label(k[0], names), _op_order(k[1])))
    tuned_backends = sorted(set(df.loc[df["status"] != "baseline", "backend"]))
    base_cols = sorted(c for c in wide.columns if str(c).endswith("(baseline)"))
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(keys, names=["problem", "op"]),
                        columns=[*tuned_backends, *base_cols])
    failed = df[~df["status"].isin(["ok", "baseline"])].groupby(["problem", "op", "backend"]).size()
    rows = []
    for (prob, op), vals in wide.iterrows():
        cells = []
        best_b, best_v = "", -1.0
        for b in tuned_backends:
            v = vals[b]
            if pd.notna(v):
                cells.append(fmt_gflops(float(v)))
                if v > best_v:
                    best_b, best_v = b, float(v)
            elif (prob, op, b) in failed.index:
                cells.append(f"failed ({int(failed[(prob, op, b)])})")
            else:
                cells.append(NOT_RUN)
        base_vals = [vals[c] for c in base_cols]
        cells += [fmt_gflops(float(v)) if pd.notna(v) else NOT_RUN for v in base_vals]
        ratio = NOT_RUN
        if best_b and base_vals and pd.notna(base_vals[0]) and base_vals[0] > 0:
            ratio = f"{best_v / float(base_vals[0]):.2f}"
        rows.append([_label(prob, names), op, *cells, best_b, ratio])
    if base_cols:
        columns = ["problem", "op", *tuned_backends, *base_cols, "fastest", f"best / {base_cols[0]}"]
    else:
        columns = ["problem", "op", *tuned_backends, "fastest"]
        rows = [r[:-1] for r in rows]
    return Table(columns, rows,
                 "Best GFLOP/s of the ok trials (higher is better; 2*N*C_in*C_out/groups*H*W*kH*kW FLOPs over the "
                 "median time); 'failed (n)': every trial failed; empty: not measured"), wide


def best_plot(wide: pd.DataFrame, names: dict[str, str], title: str) -> Image | None:
    plt = _pyplot()
    if plt is None or wide.empty or wide.notna().sum().sum() == 0:
        return None
    w = wide.dropna(how="all")
    labels = [f"{_short(_label(p, names), 28)} {o}" for p, o in w.index]
    n, m = len(w), len(w.columns)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.28 * n * max(1, min(m, 4)) / 2))
    height = 0.8 / max(m, 1)
    y = np.arange(n)
    for i, c in enumerate(w.columns):
        ax.barh(y + i * height, w[c].fillna(0).to_numpy(), height=height, label=str(c))
    values = w.to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) and values.max() / values.min() > 30:   # small and large layers in one chart
        ax.set_xscale("log")
    ax.set_yticks(y + height * (m - 1) / 2, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("GFLOP/s (best ok trial)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return Image(_png(fig), f"bar chart: {title}")


def speedup(df: pd.DataFrame, names: dict[str, str]) -> tuple[Section, list[float]]:
    sec = Section("speedup", SECTION_TITLES["speedup"])
    tuned = df[df["status"] != "baseline"]
    rows, missing, ratios = [], [], []
    for study, part in sorted(tuned.groupby("study_key"), key=lambda kv: str(kv[0])):
        ok = part[part["status"] == "ok"]
        default = part[part["is_default_row"]]
        default_ok = default[default["status"] == "ok"]
        best = float(ok["time_s"].min()) if len(ok) else None
        if len(default_ok):
            d = float(default_ok["time_s"].min())
            ratio = d / best if best else None
            dtext, rtext = fmt_ms(d), f"{ratio:.2f}" if ratio else NOT_RUN
            if ratio:
                ratios.append(ratio)
        elif len(default):
            dtext, rtext = f"failed ({', '.join(_distinct(default['status']))})", NOT_RUN
            missing.append(f"default config failed in study {study}: speed-up unknown")
        else:
            dtext, rtext = NOT_RUN, NOT_RUN
            missing.append(f"no default-config trial for study {study}, speed-up unknown")
        first = part.iloc[0]
        rows.append([str(study), str(first["backend"]), str(first["op"]), _label(str(first["problem"]), names),
                     str(len(part)), str(len(ok)), dtext, fmt_ms(best), rtext])
    if not rows:
        sec.blocks.append("No tuning trials on this device (only baselines), so no speed-up.")
        return sec, ratios
    sec.blocks.append(Table(["study", "backend", "op", "problem", "trials", "ok", "default ms", "best ms",
                             "speed-up"], rows,
                            "Speed-up = default config's median time / best ok trial's median time"))
    if ratios:
        sec.blocks.append(f"Speed-up over the default config: geometric mean "
                          f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}, max {max(ratios):.2f} "
                          f"over {len(ratios)} studies.")
    for m in missing:
        sec.blocks.append(m + ".")
    return sec, ratios


def _trial_order(part: pd.DataFrame) -> pd.DataFrame:
    part = part.copy()
    trial = pd.to_numeric(part["trial"], errors="coerce") if "trial" in part.columns else None
    if trial is None or trial.isna().any():
        part["trial_no"] = np.arange(len(part))   # file order: rows are appended as trials finish
    else:
        part["trial_no"] = trial.astype(int).to_numpy()
    return part.sort_values("trial_no", kind="stable")


def convergence(df: pd.DataFrame, names: dict[str, str], device: str) -> Section:
    sec = Section("convergence", SECTION_TITLES["convergence"])
    tuned = df[df["status"] != "baseline"]
    curves: dict[tuple[str, str], list[tuple[str, np.ndarray, np.ndarray]]] = {}
    rows = []
    for study, part in sorted(tuned.groupby("study_key"), key=lambda kv: str(kv[0])):
        part = _trial_order(part)
        ok = part[part["status"] == "ok"]
        if ok.empty:
            rows.append([str(study), str(len(part)), "0", NOT_RUN, NOT_RUN, NOT_RUN])
            continue
        best_so_far = ok["time_s"].cummin().to_numpy()
        at = int(ok["trial_no"].iloc[int(np.argmin(ok["time_s"].to_numpy()))])
        rows.append([str(study), str(len(part)), str(len(ok)), fmt_ms(float(ok["time_s"].iloc[0])),
                     fmt_ms(float(best_so_far[-1])), str(at)])
        first = part.iloc[0]
        curves.setdefault((str(first["backend"]), str(first["op"])), []).append(
            (_label(str(first["problem"]), names), ok["trial_no"].to_numpy(), best_so_far))
    if not rows:
        sec.blocks.append("No tuning trials on this device.")
        return sec
    sec.blocks.append(Table(["study", "trials", "ok", "first ok ms", "best ms", "best at trial"], rows))
    plt = _pyplot()
    if plt is None:
        return sec
    for (backend, op), lines in sorted(curves.items(), key=lambda kv: (kv[0][0], _op_order(kv[0][1]))):
        for start in range(0, len(lines), LINES_PER_PLOT):
            chunk = lines[start:start + LINES_PER_PLOT]
            fig, ax = plt.subplots(figsize=(7, 3.2))
            # Normalized by each study's final best, so problems of very different sizes share one axis and
            # every curve ends at 1; the table above has the absolute times.
            for label, x, y in chunk:
                ax.step(x, y / y[-1], where="post", marker=".", label=_short(label, 30))
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(_ticker().LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
            ax.yaxis.set_major_formatter(_ticker().FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(_ticker().NullFormatter())
            ax.set_xlabel("trial number")
            ax.set_ylabel("best-so-far time / final best")
            part = f" ({start // LINES_PER_PLOT + 1})" if len(lines) > LINES_PER_PLOT else ""
            title = f"{device}: {backend} {op}{part}"
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6, loc="upper right")
            sec.blocks.append(Image(_png(fig), f"convergence: {title}"))
    return sec


def _configs(part: pd.DataFrame) -> list[dict[str, Any] | None]:
    import json
    out = []
    for text in part["config"]:
        try:
            c = json.loads(text) if isinstance(text, str) and text else {}
        except ValueError:
            c = None
        out.append(c if isinstance(c, dict) else None)
    return out


def _hashable(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def variance_importance(params: list[dict[str, Any]], times: Sequence[float]) -> dict[str, float]:
    """Share of the variance of log(time) explained by each parameter's value groups (between-group sum of
    squares over total), normalized to sum to 1; parameters with one value get 0."""
    y = np.log(np.asarray(times, dtype=float))
    total = float(((y - y.mean()) ** 2).sum())
    keys = sorted({k for p in params for k in p})
    raw: dict[str, float] = {}
    for k in keys:
        groups: dict[str, list[float]] = {}
        for p, v in zip(params, y):
            groups.setdefault(repr(p.get(k)), []).append(float(v))
        raw[k] = 0.0 if len(groups) < 2 or total <= 0 else \
            sum(len(g) * (np.mean(g) - y.mean()) ** 2 for g in groups.values()) / total
    s = sum(raw.values())
    return {k: (v / s if s > 0 else 0.0) for k, v in raw.items()}


def optuna_importance(params: list[dict[str, Any]], times: Sequence[float],
                      failed: list[dict[str, Any]] = ()) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances of an in-memory study rebuilt from the rows (failed trials as FAIL)."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices: dict[str, list[Any]] = {}
    for p in [*params, *failed]:
        for k, v in p.items():
            if v not in choices.setdefault(k, []):
                choices[k].append(v)
    dists = {k: CategoricalDistribution(sorted(v, key=repr)) for k, v in choices.items()}
    study = optuna.create_study(direction="minimize")
    study.add_trials([create_trial(params=p, distributions={k: dists[k] for k in p}, value=float(t))
                      for p, t in zip(params, times)]
                     + [create_trial(params=p, distributions={k: dists[k] for k in p}, state=TrialState.FAIL)
                        for p in failed])
    evaluator_cls = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    evaluator = evaluator_cls() if evaluator_cls is not None else None
    imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    name = type(evaluator).__name__ if evaluator is not None else "optuna default evaluator"
    return {k: float(v) for k, v in imp.items()}, f"optuna {name.replace('ImportanceEvaluator', '')}"


def importances(df: pd.DataFrame, names: dict[str, str], device: str) -> Section:
    sec = Section("importance", SECTION_TITLES["importance"])
    tuned = df[df["status"] != "baseline"]
    per_study = []
    skipped = []
    for study, part in sorted(tuned.groupby("study_key"), key=lambda kv: str(kv[0])):
        cfgs = _configs(part)
        ok_mask = (part["status"] == "ok").to_numpy()
        params = [c for c, ok in zip(cfgs, ok_mask) if ok and c is not None and all(map(_hashable, c.values()))]
        times = [float(t) for c, ok, t in zip(cfgs, ok_mask, part["time_s"])
                 if ok and c is not None and all(map(_hashable, c.values()))]
        failed = [c for c, ok in zip(cfgs, ok_mask) if not ok and c and all(map(_hashable, c.values()))]
        varying = [k for k in sorted({k for p in params for k in p}) if len({repr(p.get(k)) for p in params}) > 1]
        if len(params) < 2 or not varying:
            skipped.append(str(study))
            continue
        if len(params) >= MIN_OPTUNA_TRIALS:
            try:
                imp, method = optuna_importance(params, times, failed)
            except Exception as exc:  # noqa: BLE001  (a report never fails on Optuna's internals)
                imp, method = variance_importance(params, times), f"variance of log time (optuna failed: {exc})"
        else:
            imp, method = variance_importance(params, times), \
                f"variance of log time ({len(params)} ok trials < {MIN_OPTUNA_TRIALS})"
        first = part.iloc[0]
        per_study.append((str(study), str(first["backend"]), str(first["op"]), method, imp))
    if not per_study:
        sec.blocks.append("No study has two or more ok trials that differ in a parameter: importances unknown.")
        return sec
    sec.blocks.append(f"Importance of each parameter for the median time, per study (sums to 1). Studies with at "
                      f"least {MIN_OPTUNA_TRIALS} ok trials use Optuna's importance evaluator (PED-ANOVA: which "
                      f"parameters set the best trials apart) on an in-memory study rebuilt from the rows; smaller "
                      f"ones the share of the variance of log(time) that each parameter's values explain.")
    for backend in sorted({s[1] for s in per_study}):
        items = [s for s in per_study if s[1] == backend]
        keys = sorted({k for s in items for k in s[4]})
        rows = [[s[0], s[2], s[3], *[_fmt(s[4].get(k), 3) for k in keys]] for s in items]
        sec.blocks.append(Table(["study", "op", "method", *keys], rows, f"backend {backend}"))
        plt = _pyplot()
        if plt is not None and keys:
            mean = [float(np.mean([s[4].get(k, 0.0) for s in items])) for k in keys]
            fig, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(keys)))
            ax.barh(keys, mean, color="tab:blue")
            ax.invert_yaxis()
            ax.set_xlabel(f"mean importance over {len(items)} studies")
            ax.set_title(f"{device}: {backend}", fontsize=9)
            sec.blocks.append(Image(_png(fig), f"parameter importance: {device} {backend}"))
    if skipped:
        sec.blocks.append(f"{len(skipped)} study(ies) without two ok trials that differ in a parameter: "
                          + ", ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
    return sec


def failures(df: pd.DataFrame) -> tuple[Section, int]:
    sec = Section("failures", SECTION_TITLES["failures"])
    bad = df[~df["status"].isin(["ok", "baseline"])]
    if bad.empty:
        sec.blocks.append("No failed trials.")
        return sec, 0
    rows = []
    for (backend, op, status), part in bad.groupby(["backend", "op", "status"], sort=True):
        reasons = _distinct(part["reason"]) if "reason" in part.columns else []
        rows.append([str(backend), str(op), str(status), str(len(part)),
                     _short(reasons[0], 160) if reasons else "(no reason recorded)"])
    totals = bad["status"].value_counts()
    failed = {k: v for k, v in totals.items() if k != "pruned"}
    sec.blocks.append("Failed trials: " + (", ".join(f"{s} {n}" for s, n in sorted(failed.items())) or "none")
                      + (f". Pruned before running (a constraint of the space, or a repeat): {totals['pruned']}"
                         if "pruned" in totals else "") + ".")
    sec.blocks.append(Table(["backend", "op", "status", "count", "example reason"], rows))
    return sec, len(bad)


def comparison(df: pd.DataFrame, names: dict[str, str], devices: list[str]) -> Section:
    sec = Section("comparison", "Comparison across devices", level=2)
    if len(devices) < 2:
        sec.blocks.append("Only one device has results: nothing to compare across devices.")
        return sec
    ok = df[(df["status"] == "ok") & df["gflops"].notna()]
    keys = sorted({(p, o) for p, o in zip(df["problem"], df["op"])},
                  key=lambda k: (_label(k[0], names), _op_order(k[1])))
    rows = []
    wide = pd.DataFrame(index=pd.MultiIndex.from_tuples(keys, names=["problem", "op"]), columns=devices,
                        dtype=float)
    best = ok.loc[ok.groupby(["device", "problem", "op"])["gflops"].idxmax()] if len(ok) else ok
    lookup = {(r.device, r.problem, r.op): (float(r.gflops), str(r.backend)) for r in best.itertuples()}
    for prob, op in keys:
        cells = []
        for dev in devices:
            if (dev, prob, op) in lookup:
                g, b = lookup[(dev, prob, op)]
                wide.loc[(prob, op), dev] = g
                cells.append(f"{fmt_gflops(g)} ({b})")
            else:
                cells.append(NOT_RUN)
        rows.append([_label(prob, names), op, *cells])
    sec.blocks.append(Table(["problem", "op", *devices], rows,
                            "Best GFLOP/s on each device (backend that reached it); empty: no ok trial there"))
    img = best_plot(wide, names, "best GFLOP/s per device")
    if img:
        sec.blocks.append(img)
    return sec


# ---- the explain picture -----------------------------------------------------------------------------------

def choose_layer(df: pd.DataFrame, layer: str | None, names: dict[str, str]) -> tuple[str, Problem]:
    """--layer (a suite name or a problem key), else the most measured problem with a stride > 1, else the
    suite's first strided layer, else kernel 4, stride 2, padding 1."""
    if layer:
        by_name = {v: k for k, v in names.items()}
        key = by_name.get(layer, layer)
        try:
            return _label(key, names), Problem.from_key(key)
        except ValueError:
            raise ValueError(f"--layer {layer!r} is neither a problem of the built-in suite nor a problem key") \
                from None
    if len(df):
        for key in df["problem"].value_counts().index:
            p = Problem.from_key(key)
            if max(p.stride) > 1:
                return _label(key, names), p
    for key, name in names.items():
        p = Problem.from_key(key)
        if max(p.stride) > 1:
            return name, p
    return "example", Problem.make(N=1, C_in=1, H=6, W=6, C_out=1, kH=4, kW=4, stride=2, padding=1)


def explain_section(df: pd.DataFrame, layer: str | None, names: dict[str, str]) -> Section:
    name, p = choose_layer(df, layer, names)
    sec = Section("explain", f"What the layer does to each output pixel: {name}", level=2)
    dec = explain.phase_decomposition((p.kH, p.kW), p.stride, p.padding, p.dilation, p.output_padding)
    H, W = min(p.H, 8), min(p.W, 8)
    try:
        dec.output_size(H, W)
        Problem.make(**{**p.as_args(), "H": H, "W": W})
    except ValueError:
        H, W = p.H, p.W
    ones = np.ones((p.kH, p.kW))
    sec.blocks.append(f"Layer {p.key}. The output splits into {len(dec.phases)} phases (output row % stride, "
                      f"column % stride); each phase is an ordinary stride-1 convolution with the taps shown. "
                      f"`autotune explain` prints this and exports the per-phase kernels. Overlap counts are "
                      f"for a {H}x{W} input.")
    plt = _pyplot()
    if plt is not None:
        overlap = dec.overlap_count(H, W)
        taps = dec.tap_phase_map()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
        im = axes[0].imshow(overlap, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=axes[0], fraction=0.046, label="writes per output pixel")
        axes[0].set_title(f"overlap count per output pixel ({H}x{W} input)", fontsize=9)
        axes[0].set_xlabel("ow")
        axes[0].set_ylabel("oh")
        if overlap.size <= 256:
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
        sec.blocks.append(Image(_png(fig), f"overlap count and tap phases of {name}"))
        if len(dec.phases) <= 64:
            cols = min(len(dec.phases), 8)
            nrows = math.ceil(len(dec.phases) / cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(1.4 * cols, 1.6 * nrows + 0.4), squeeze=False,
                                     layout="constrained")
            for ax in axes.flat:
                ax.axis("off")
            for ax, ph in zip(axes.flat, dec.phases):
                grid = np.zeros((p.kH, p.kW))
                for kh, kw in ph.taps:
                    grid[kh, kw] = 1
                ax.axis("on")
                ax.imshow(grid, cmap="Greys", vmin=0, vmax=1.4, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"({ph.rows.phase},{ph.cols.phase}): {ph.n_taps} taps", fontsize=7)
            fig.suptitle("kernel taps (grey) used by each output phase", fontsize=9)
            sec.blocks.append(Image(_png(fig), f"per-phase tap grids of {name}"))
    sec.blocks.append(Pre(explain.format_text(dec, ones, H, W)))
    return sec


# ---- assembling --------------------------------------------------------------------------------------------

def build(directories: Sequence[str | Path], devices: Sequence[str] | None = None, layer: str | None = None
          ) -> Report:
    df, notes = load(directories, devices)
    names = _suite_names()
    sections: list[Section] = []
    found = sorted(set(df["device"])) if len(df) else []
    if not found:
        notes.append("no results found in " + ", ".join(str(d) for d in directories)
                     + ": run `autotune tune` (or `autotune bench`) first; nothing to tabulate")
    for dev in found:
        part = df[df["device"] == dev]
        name = ", ".join(_distinct(part["device_name"])) or dev
        top = Section(f"device-{dev}", f"Device {dev} ({name})", level=2)
        sections.append(top)
        env = environment(part)
        table, wide = best_table(part, names)
        best = Section("best", SECTION_TITLES["best"], [table])
        if not (part["status"] == "ok").any():
            best.blocks.insert(0, f"No ok trial on device {dev}: every measurement failed or is a baseline.")
        if not (part["status"] == "baseline").any():
            best.blocks.append(f"No PyTorch baseline rows (status 'baseline') for device {dev}: the comparison with "
                               "torch is missing (`autotune bench` times it side by side).")
        img = best_plot(wide, names, f"{dev}: best GFLOP/s")
        if img:
            best.blocks.append(img)
        sp, _ = speedup(part, names)
        conv = convergence(part, names, dev)
        imp = importances(part, names, dev)
        fail, _ = failures(part)
        for s in (env, best, sp, conv, imp, fail):
            s.id = f"{s.id}-{dev}"
            sections.append(s)
    sections.append(comparison(df, names, found) if found else
                    Section("comparison", "Comparison across devices", ["No results: nothing to compare."], 2))
    try:
        sections.append(explain_section(df, layer, names))
    except ValueError as exc:
        if layer:
            raise
        notes.append(f"explain picture left out: {exc}")
    if _pyplot() is None:
        notes.append("matplotlib is not installed: plots left out (pip install convt-autotune[report])")
    return Report("Transposed-convolution autotuning report", [str(d) for d in directories], notes, sections,
                  found)


# ---- rendering ---------------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.2em .5em;
text-align:left}th{background:#f2f2f2}td.num{text-align:right}caption{caption-side:top;text-align:left;
color:#555;font-size:.9em}img{max-width:100%;display:block;margin:.5em 0}pre{background:#f7f7f7;padding:.7em;
overflow-x:auto;font-size:.8em}.notes li{color:#8a4b00}section.device{border-top:2px solid #888;margin-top:2em}
nav a{margin-right:1em}"""


def _is_num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def table_html(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{html.escape(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns) + "</tr></thead><tbody>")
    for row in t.rows[:MAX_TABLE_ROWS]:
        out.append("<tr>" + "".join(f"<td class=\"num\">{html.escape(c)}</td>" if _is_num(c) else
                                    f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    if len(t.rows) > MAX_TABLE_ROWS:
        out.append(f"<p>... and {len(t.rows) - MAX_TABLE_ROWS} more rows not shown.</p>")
    return "\n".join(out)


def _block_html(b: Any) -> str:
    if isinstance(b, Table):
        return table_html(b)
    if isinstance(b, Image):
        data = base64.b64encode(b.png).decode("ascii")
        return f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
    if isinstance(b, Pre):
        return f"<pre>{html.escape(b.text)}</pre>"
    return f"<p>{html.escape(str(b))}</p>"


def render_html(r: Report) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(r.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(r.title)}</h1>",
           f"<p>Generated {now} from {html.escape(', '.join(r.sources))}. Devices: "
           f"{html.escape(', '.join(r.devices) or 'none')}.</p>"]
    nav = [f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in r.sections if s.level == 2]
    out.append("<nav>" + " ".join(nav) + "</nav>")
    out.append('<section id="notes"><h2>Notes</h2>')
    if r.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in r.notes) + "</ul>")
    else:
        out.append("<p>Nothing missing: every row was read.</p>")
    out.append("</section>")
    open_device = False
    for s in r.sections:
        if s.level == 2:
            if open_device:
                out.append("</section>")
                open_device = False
            cls = ' class="device"' if s.id.startswith("device-") else ""
            out.append(f'<section id="{html.escape(s.id)}"{cls}><h2>{html.escape(s.title)}</h2>')
            out += [_block_html(b) for b in s.blocks]
            if s.id.startswith("device-"):
                open_device = True
            else:
                out.append("</section>")
        else:
            out.append(f'<section id="{html.escape(s.id)}"><h3>{html.escape(s.title)}</h3>')
            out += [_block_html(b) for b in s.blocks]
            out.append("</section>")
    if open_device:
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def table_markdown(t: Table, max_rows: int = 60) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ") or " "
    numeric = [bool(t.rows) and all(_is_num(r[i]) or r[i] == NOT_RUN for r in t.rows) for i in range(len(t.columns))]
    lines = ["| " + " | ".join(cell(c) for c in t.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows[:max_rows]]
    if len(t.rows) > max_rows:
        lines.append(f"\n... {len(t.rows) - max_rows} more rows in the HTML report")
    return "\n".join(lines)


def render_markdown(r: Report, html_path: str | None = None) -> str:
    out = [f"# {r.title}", "", f"Results: {', '.join(r.sources)}; devices: {', '.join(r.devices) or 'none'}", ""]
    if r.notes:
        out += ["## Notes", "", *[f"- {n}" for n in r.notes], ""]
    # The summary keeps the headline tables; convergence and importance detail stay in the HTML.
    keep = ("environment", "best", "speedup", "failures")
    for s in r.sections:
        if s.level == 2:
            if s.id == "explain":
                continue
            out += [f"## {s.title}", ""]
        elif not s.id.startswith(keep):
            continue
        else:
            out += [f"### {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                if s.id.startswith("speedup"):
                    continue   # one row per study: too long for a terminal; the HTML has it
                out += [table_markdown(b), ""]
            elif isinstance(b, str):
                out += [b, ""]
    if html_path:
        out.append(f"HTML report with plots: {html_path}")
    return "\n".join(out).rstrip() + "\n"


# ---- CLI ---------------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", metavar="DIR", action="append",
                        help="results directory (repeatable; default: $AUTOTUNE_RESULTS or the per-user one, then "
                             "the shipped results/)")
    parser.add_argument("-o", "--output", metavar="FILE", default="report.html",
                        help="HTML file to write (default report.html)")
    parser.add_argument("--device", action="append", metavar="ID", help="only these device ids (repeatable)")
    parser.add_argument("--layer", metavar="NAME|KEY",
                        help="layer drawn in the explain section: a built-in suite name or a problem key")


def run(args: argparse.Namespace) -> int:
    if args.results:
        dirs: list[Path] = [Path(d) for d in args.results]
    else:
        dirs = list(dict.fromkeys([results.results_dir(None), results.shipped_results_dir()]))
    out = Path(args.output)
    if out.is_dir():
        raise IsADirectoryError(f"-o {out} is a directory; give a file name")
    report = build(dirs, args.device, args.layer)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    sys.stdout.write(render_markdown(report, str(out)))
    return 0
