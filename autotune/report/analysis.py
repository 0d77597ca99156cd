"""The numbers behind the report, computed from the rows `load` returns: best GFLOP/s per backend, tuned
against default speed-ups, convergence, parameter importances, failures, the best per device, and which layer
to draw.
Plain data out (frames, dataclasses, floats); turning them into text and tables is `sections`' job."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from autotune.core.errors import UserError
from autotune.core.problem import Problem
from autotune.report.text import distinct, label, op_order

IMPORTANCE_METHOD = "share of the variance of log(time) explained by the parameter's values"
MIN_OPTUNA_TRIALS = 10   # below this many ok trials PED-ANOVA's top-quantile split is meaningless


def _studies(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The tuning studies (baselines left out), in study order."""
    tuned = df[df["status"] != "baseline"]
    return sorted(((str(k), part) for k, part in tuned.groupby("study_key")), key=lambda kv: kv[0])


def problem_keys(df: pd.DataFrame, names: dict[str, str]) -> list[tuple[str, str]]:
    """Every (problem, op) of the rows, in table order: by label, then op."""
    return sorted({(p, o) for p, o in zip(df["problem"], df["op"])},
                  key=lambda k: (label(k[0], names), op_order(k[1])))


# ---- best GFLOP/s per backend ------------------------------------------------------------------------------

@dataclass
class BestGrid:
    wide: pd.DataFrame    # index (problem, op); columns: tuned backends, then "<backend> (baseline)"
    tuned_backends: list[str]
    baseline_columns: list[str]
    failed: pd.Series     # failed-row counts by (problem, op, backend)


def best_grid(df: pd.DataFrame, names: dict[str, str]) -> BestGrid:
    """The best ok GFLOP/s of every backend on every problem of one device, baselines beside them."""
    ok = df[df["status"] == "ok"]
    base = df[df["status"] == "baseline"]
    wide = ok.pivot_table(index=["problem", "op"], columns="backend", values="gflops", aggfunc="max")
    if len(base):
        bw = base.pivot_table(index=["problem", "op"], columns="backend", values="gflops", aggfunc="max")
        bw.columns = [f"{c} (baseline)" for c in bw.columns]
        wide = wide.join(bw, how="outer") if len(wide) else bw
    tuned_backends = sorted(set(df.loc[df["status"] != "baseline", "backend"]))
    base_cols = sorted(c for c in wide.columns if str(c).endswith("(baseline)"))
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(problem_keys(df, names), names=["problem", "op"]),
                        columns=[*tuned_backends, *base_cols])
    failed = df[~df["status"].isin(["ok", "baseline"])].groupby(["problem", "op", "backend"]).size()
    return BestGrid(wide, tuned_backends, base_cols, failed)


# ---- tuned against default ---------------------------------------------------------------------------------

@dataclass
class StudySpeedup:
    study: str
    backend: str
    op: str
    problem: str
    trials: int
    ok: int
    best_s: float | None           # best ok trial's median time
    default_s: float | None        # the default config's, when it ran ok
    default_failed: list[str] | None   # statuses of the default config's trials when none ran ok; None: no
                                       # default-config trial
    ratio: float | None            # default_s / best_s


def speedups(df: pd.DataFrame) -> list[StudySpeedup]:
    out = []
    for study, part in _studies(df):
        ok = part[part["status"] == "ok"]
        default = part[part["is_default_row"]]
        default_ok = default[default["status"] == "ok"]
        best = float(ok["time_s"].min()) if len(ok) else None
        d: float | None = None
        ratio: float | None = None
        failed: list[str] | None = None
        if len(default_ok):
            d = float(default_ok["time_s"].min())
            ratio = d / best if best else None
        elif len(default):
            failed = distinct(default["status"])
        first = part.iloc[0]
        out.append(StudySpeedup(study, str(first["backend"]), str(first["op"]), str(first["problem"]),
                                len(part), len(ok), best, d, failed, ratio))
    return out


# ---- convergence -------------------------------------------------------------------------------------------

def _trial_order(part: pd.DataFrame) -> pd.DataFrame:
    part = part.copy()
    trial = pd.to_numeric(part["trial"], errors="coerce") if "trial" in part.columns else None
    if trial is None or trial.isna().any():
        part["trial_no"] = np.arange(len(part))   # file order: rows are appended as trials finish
    else:
        part["trial_no"] = trial.astype(int).to_numpy()
    return part.sort_values("trial_no", kind="stable")


@dataclass
class StudyConvergence:
    study: str
    backend: str
    op: str
    problem: str
    trials: int
    ok: int
    first_s: float | None      # the first ok trial's time
    best_s: float | None
    best_at: int | None        # trial number of the best
    trial_no: np.ndarray       # of the ok trials, in order
    best_so_far: np.ndarray    # running minimum of their times
    seconds: np.ndarray | None = None   # their timestamps, in seconds since the study's first row


def convergence(df: pd.DataFrame) -> list[StudyConvergence]:
    out = []
    for study, part in _studies(df):
        part = _trial_order(part)
        ok = part[part["status"] == "ok"]
        first = part.iloc[0]
        head = (study, str(first["backend"]), str(first["op"]), str(first["problem"]), len(part), len(ok))
        if ok.empty:
            out.append(StudyConvergence(*head, None, None, None, np.array([]), np.array([])))
            continue
        best_so_far = ok["time_s"].cummin().to_numpy()
        at = int(ok["trial_no"].iloc[int(np.argmin(ok["time_s"].to_numpy()))])
        stamps = pd.to_datetime(part["timestamp"], errors="coerce", utc=True)
        seconds = None
        if stamps.notna().all():
            seconds = (stamps[ok.index] - stamps.min()).dt.total_seconds().to_numpy()
        out.append(StudyConvergence(*head, float(ok["time_s"].iloc[0]), float(best_so_far[-1]), at,
                                    ok["trial_no"].to_numpy(), best_so_far, seconds))
    return out


# ---- parameter importance ----------------------------------------------------------------------------------

def _configs(part: pd.DataFrame) -> list[dict[str, Any] | None]:
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
                      failed: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances of an in-memory study rebuilt from the rows (failed trials as FAIL)."""
    import optuna  # imported here: slow to import, and only studies with enough trials need it
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


@dataclass
class StudyImportance:
    study: str
    backend: str
    op: str
    method: str                    # how it was computed, shown in the table
    importance: dict[str, float]   # parameter -> share, summing to 1


def importances(df: pd.DataFrame) -> tuple[list[StudyImportance], list[str]]:
    """Importances of the studies with two or more ok trials that differ in a parameter; the other studies."""
    per_study = []
    skipped = []
    for study, part in _studies(df):
        cfgs = _configs(part)
        ok_mask = (part["status"] == "ok").to_numpy()
        # Only configs of plain values can be grouped (and given to Optuna as categorical choices).
        usable = [(c, bool(ok), t) for c, ok, t in zip(cfgs, ok_mask, part["time_s"])
                  if c is not None and all(map(_hashable, c.values()))]
        params = [c for c, ok, _ in usable if ok]
        times = [float(t) for _, ok, t in usable if ok]
        varying = [k for k in sorted({k for p in params for k in p})
                   if len({repr(p.get(k)) for p in params}) > 1]
        if len(params) < 2 or not varying:
            skipped.append(study)
            continue
        # One method for every study, so that studies can be compared and averaged (IMPORTANCE_METHOD).
        imp, method = variance_importance(params, times), IMPORTANCE_METHOD
        first = part.iloc[0]
        per_study.append(StudyImportance(study, str(first["backend"]), str(first["op"]), method, imp))
    return per_study, skipped


# ---- failures ----------------------------------------------------------------------------------------------

@dataclass
class FailureGroup:
    backend: str
    op: str
    status: str
    count: int
    reason: str | None   # the first recorded reason


def failures(df: pd.DataFrame) -> tuple[list[FailureGroup], dict[str, int]]:
    """Failed rows grouped by backend, op and status; and the count of each status."""
    bad = df[~df["status"].isin(["ok", "baseline"])]
    groups = []
    for (backend, op, status), part in bad.groupby(["backend", "op", "status"], sort=True):
        reasons = distinct(part["reason"]) if "reason" in part.columns else []
        groups.append(FailureGroup(str(backend), str(op), str(status), len(part),
                                   reasons[0] if reasons else None))
    return groups, {str(k): int(v) for k, v in bad["status"].value_counts().items()}


# ---- across devices ----------------------------------------------------------------------------------------

def best_per_device(df: pd.DataFrame, names: dict[str, str], devices: list[str]
                    ) -> tuple[pd.DataFrame, dict[tuple[str, str, str], tuple[float, str]]]:
    """(wide frame of the best ok GFLOP/s: index (problem, op), one column per device;
    (device, problem, op) -> (GFLOP/s, backend that reached it))."""
    ok = df[(df["status"] == "ok") & df["gflops"].notna()]
    keys = problem_keys(df, names)
    wide = pd.DataFrame(index=pd.MultiIndex.from_tuples(keys, names=["problem", "op"]), columns=devices,
                        dtype=float)
    best = ok.loc[ok.groupby(["device", "problem", "op"])["gflops"].idxmax()] if len(ok) else ok
    lookup = {(r.device, r.problem, r.op): (float(r.gflops), str(r.backend)) for r in best.itertuples()}
    for (dev, prob, op), (g, _) in lookup.items():
        wide.loc[(prob, op), dev] = g
    return wide, lookup


# ---- the layer drawn in the explain section ----------------------------------------------------------------

def choose_layer(df: pd.DataFrame, layer: str | None, names: dict[str, str]) -> tuple[str, Problem]:
    """`layer` (a suite name or a problem key), else the most measured problem with a stride > 1, else the
    suite's first strided layer, else kernel 4, stride 2, padding 1."""
    if layer:
        by_name = {v: k for k, v in names.items()}
        key = by_name.get(layer, layer)
        try:
            return label(key, names), Problem.from_key(key)
        except ValueError:
            raise UserError(f"--layer {layer!r} is neither a problem of the built-in suite nor a problem "
                            "key") from None
    if len(df):
        for key in df["problem"].value_counts().index:
            p = Problem.from_key(key)
            if max(p.stride) > 1:
                return label(key, names), p
    for key, name in names.items():
        p = Problem.from_key(key)
        if max(p.stride) > 1:
            return name, p
    return "example", Problem.make(N=1, C_in=1, H=6, W=6, C_out=1, kH=4, kW=4, stride=2, padding=1)


# ---- winners, the torch baseline and the device's peak ---------------------------------------------------------

@dataclass
class Winner:
    problem: str
    op: str
    backend: str
    config: str
    time_s: float            # median of the medians of the config's ok measurements (dispatch's ranking)
    time_min_s: float        # fastest and slowest repetition over those measurements
    time_max_s: float
    measurements: int
    gflops: float
    torch_s: float | None    # PyTorch's median on the same problem and op (baseline rows), if measured
    peak_fraction: float | None

    @property
    def vs_torch(self) -> float | None:
        return self.torch_s / self.time_s if self.torch_s else None


def peak_gflops(df: pd.DataFrame) -> float | None:
    """The device's measured peak: the median GFLOP/s of its `blas` baseline rows (bench's sgemm), or None."""
    rows = df[(df["backend"] == "blas") & (df["status"] == "baseline") & df["gflops"].notna()]
    return float(rows["gflops"].median()) if len(rows) else None


def winners(df: pd.DataFrame) -> list[Winner]:
    """Per (problem, op): the (backend, config) with the smallest median of its ok measurements (tune and bench
    rows alike, as dispatch ranks them), with the repetition range and the torch baseline."""
    ok = df[(df["status"] == "ok") & df["time_s"].notna()]
    base = df[(df["status"] == "baseline") & (df["backend"] == "torch") & df["time_s"].notna()]
    torch = base.groupby(["problem", "op"])["time_s"].median().to_dict()
    peak = peak_gflops(df)
    out: list[Winner] = []
    if ok.empty:
        return out
    agg = ok.groupby(["problem", "op", "backend", "config"], sort=False).agg(
        time_s=("time_s", "median"), lo=("time_min_s", "min"), hi=("time_max_s", "max"), n=("time_s", "size"))
    agg = agg.reset_index()
    for (prob, op), part in agg.groupby(["problem", "op"], sort=False):
        best = part.loc[part["time_s"].idxmin()]
        t = float(best["time_s"])
        gflops = Problem.from_key(str(prob)).flops(str(op)) / t / 1e9
        lo = float(best["lo"]) if pd.notna(best["lo"]) else t
        hi = float(best["hi"]) if pd.notna(best["hi"]) else t
        out.append(Winner(str(prob), str(op), str(best["backend"]), str(best["config"]), t, min(lo, t), max(hi, t),
                          int(best["n"]), gflops, torch.get((prob, op)), gflops / peak if peak else None))
    return out
