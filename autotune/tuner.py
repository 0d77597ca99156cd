"""`autotune tune`: one Optuna study per (device, backend, op, problem) over the backend's tunable space.

Each trial samples every parameter with `suggest_categorical` over the space's values; a config that breaks a
constraint is recorded as `pruned` and not run; any other config is built, checked against the NumPy reference and
timed in a worker subprocess (`autotune.trial`), and its row appended to the device's results file whatever the
outcome. The backend's default config is enqueued as each study's first trial, so the best config found is never
worse than the default. Study state lives in Optuna storage (a SQLite file in the results directory unless
`--storage` names another SQLAlchemy URL), so running the same command again continues the studies, and several
processes or machines given one `--storage` share them.

`--trials N` is the number of configs each study should have measured (built, checked, timed, or failed doing so)
in total, those in storage from earlier runs included: a rerun after an interruption finishes the job, and raising N
tunes further. Constraint-pruned points and repeats (answered from the earlier trial, never run twice) cost nothing
and do not count. A study also ends when every feasible point of its space has been measured.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from autotune import model_args, results
from autotune.problem import OPS, Problem
from autotune.problems import NamedProblem, load_problems, select

HELP = "tune every backend's kernels per device, problem and op with Optuna; results go to one CSV per device"
SAMPLERS = ("tpe", "random", "grid")
STORAGE_FILE = "studies.sqlite3"
MAX_COUNTED_SPACE = 100_000  # spaces up to this size have their feasible points counted (a stopping rule)
# Presets: defaults for options not given on the command line. `quick` is the README's main job: a few suite
# layers, every op, a few minutes in all.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"only": ["fcn_score_up2", "dcgan_g3", "dilated_up", "odd_shapes"], "trials": 12,
              "time_budget": 300.0, "timing_budget": 0.2},
    "suite": {"trials": 30},
}


@dataclass
class TuneOptions:
    problems: list[NamedProblem]
    results: Path
    ops: Sequence[str] = OPS
    backends: Sequence[str] | None = None  # None: every registered backend
    devices: Sequence[str] | None = None  # ids or kinds ("cpu", "gpu"); None: every device
    trials: int = 20
    timeout_s: float | None = None  # per study
    time_budget_s: float | None = None  # whole run
    storage: str | None = None
    sampler: str = "tpe"
    seed: int | None = None
    trial_timeout_s: float = 120.0
    timing_budget_s: float = 0.3
    progress: bool = True
    stream: TextIO = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1:
            raise ValueError(f"trials must be a positive integer, got {self.trials!r}")
        for name in ("timeout_s", "time_budget_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        for name in ("trial_timeout_s", "timing_budget_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"ops must be some of {', '.join(OPS)}, got {list(self.ops)!r}")
        if not self.problems:
            raise ValueError("no problems to tune")


@dataclass
class StudyPlan:
    """One study: what is tuned where, and the Optuna study name (which carries a hash of the space, so a
    backend whose space changed starts a fresh study instead of clashing with the old distributions)."""

    problem_name: str
    problem: Problem  # as the op sees it (Problem.for_op)
    op: str
    backend: Any
    device: Any
    space: Any
    default: dict[str, Any]
    name: str = ""

    @functools.cached_property
    def feasible(self) -> int | None:
        """Points of the space that satisfy its constraints (None: too many to count)."""
        if self.space.size > MAX_COUNTED_SPACE:
            return None
        return sum(1 for c in self.space.grid() if self.space.violation(c) is None)

    def __post_init__(self) -> None:
        space_hash = hashlib.sha256(json.dumps({k: list(v) for k, v in self.space.params.items()},
                                               sort_keys=True).encode()).hexdigest()[:8]
        self.name = f"{self.device.id}:{self.backend.name}:{self.op}:{self.problem.key}:space-{space_hash}"


# ---- planning ------------------------------------------------------------------------------------------------------
def _device_selected(device: Any, wanted: Sequence[str] | None) -> bool:
    return not wanted or device.id in wanted or device.kind in wanted


def plan_studies(options: TuneOptions, say: Callable[[str], None]) -> list[StudyPlan]:
    """Every (problem, op, backend, device) study to run, in that order; what is skipped is said, with why."""
    from autotune.trial import backend_names, get_backend

    known = backend_names()
    wanted = list(options.backends) if options.backends else known
    unknown = [b for b in wanted if b not in known]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; registered: {', '.join(known)}")
    pairs: list[tuple[Any, Any]] = []
    seen_devices: list[str] = []
    for name in wanted:
        backend = get_backend(name)
        ok, why = backend.available()
        if not ok:
            say(f"skipping backend {name}: not available here ({why})")
            continue
        try:
            devices = backend.devices()
        except Exception as exc:  # a broken driver must not stop the other backends
            say(f"skipping backend {name}: listing its devices failed ({type(exc).__name__}: {exc})")
            continue
        for device in devices:
            seen_devices += [device.id, device.kind]
            if not _device_selected(device, options.devices):
                continue
            if device.kind == "interpreter":
                say(f"skipping {name} on {device.id}: an interpreter, its timings are not speed (tune it on "
                    f"real hardware)")
                continue
            pairs.append((backend, device))
    if options.devices:
        missing = [d for d in options.devices if d not in seen_devices]
        if missing:
            raise ValueError(f"unknown device(s) {', '.join(missing)}; known: "
                             f"{', '.join(sorted(set(seen_devices)))}")
    plans: list[StudyPlan] = []
    for named in options.problems:
        for op in options.ops:
            problem = named.problem.for_op(op)
            for backend, device in pairs:
                reason = backend.supports(problem, device)
                if reason:
                    say(f"skipping {backend.name} on {device.id} for {named.name} {op}: {reason}")
                    continue
                try:
                    space = backend.space(op, problem, device)
                    default = space.validate(backend.default_config(op, problem, device))
                except Exception as exc:  # a backend bug costs its study, not the run
                    say(f"skipping {backend.name} on {device.id} for {named.name} {op}: its space or default "
                        f"config is broken ({type(exc).__name__}: {exc})")
                    continue
                plans.append(StudyPlan(named.name, problem, op, backend, device, space, default))
    return plans


# ---- storage and samplers ------------------------------------------------------------------------------------------
def storage_url(options: TuneOptions) -> str:
    if options.storage:
        return options.storage
    options.results.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(options.results / STORAGE_FILE).resolve()}"


def make_storage(url: str) -> Any:
    """RDB storage with heartbeats: a trial left RUNNING by a killed process is marked failed after the grace
    period and retried once (RetryFailedTrialCallback), so it is not lost."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 120}}  # several tuner processes on one file wait for its lock
        _sqlite_wal(url)
    elif url.startswith("postgresql"):
        kwargs = {"pool_pre_ping": True}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeats are "experimental" in Optuna, and stable since 2.8
                if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
                    retry = {"heartbeat_stale_trial_callback":
                             optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
                else:
                    retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
                storage = RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=120, **retry)
            break
        except Exception as exc:
            # Several processes creating the tables of a new database at once: all but one lose the race
            # (IntegrityError); the tables exist a moment later.
            if attempt < 3 and type(exc).__name__ in ("IntegrityError", "ProgrammingError", "OperationalError"):
                time.sleep(0.5 + attempt)
                continue
            raise ValueError(f"cannot open the study storage {url!r}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if url.startswith("sqlite"):
        from sqlalchemy import event

        # Optuna commits a dozen times per trial; with WAL, synchronous=NORMAL commits without an fsync each
        # (still safe when the process is killed; only a power cut may lose the last trials' state).
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

        event.listen(storage.engine, "connect", _pragmas)
        storage.engine.dispose()  # connections opened while creating the tables lack the pragma
    return storage


def _sqlite_wal(url: str) -> None:
    """Put a SQLite storage file in WAL mode (persistent in the file): readers and the writer of several tuner
    processes no longer block each other."""
    import sqlite3
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(database, timeout=120)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def make_sampler(kind: str, space: Any, seed: int | None) -> Any:
    import optuna
    if kind == "grid":
        return optuna.samplers.GridSampler({k: list(v) for k, v in space.params.items()}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Spaces are small and categorical: a few random points are enough before TPE's model takes over.
    # Multivariate TPE models the parameters jointly (tile sizes and vector widths interact). It is Optuna 5's
    # default; said explicitly for older Optuna, whose independent TPE, replayed on exhaustively measured OpenCL
    # spaces, needed ~35% more trials and kept re-proposing known points (scripts/search_quality.py).
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, space.size // 8)),
                                          multivariate=True, group=True)


# ---- progress ----------------------------------------------------------------------------------------------------
class Progress:
    """A bar for the current study and an overall count on one stderr line, rewritten in place on a terminal;
    one line per finished study otherwise."""

    WIDTH = 20

    def __init__(self, total: int, stream: TextIO, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.index = 0
        self.trials_run = 0
        self.label = ""
        self._dirty = False

    def message(self, text: str) -> None:
        if self._dirty:
            self.stream.write("\r\033[K")
            self._dirty = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def study(self, index: int, label: str) -> None:
        self.index, self.label = index, label

    def update(self, done: int, target: int, best_s: float | None, default_s: float | None,
               final: bool = False) -> None:
        if not self.enabled:
            return
        frac = min(done / target, 1.0) if target else 1.0
        bar = "#" * int(round(frac * self.WIDTH))
        best = f"best {best_s * 1e3:.3g} ms" if best_s else "best -"
        speedup = f" ({default_s / best_s:.2f}x default)" if best_s and default_s else ""
        elapsed = time.monotonic() - self.start
        line = (f"[{self.index}/{self.total}] {self.label} [{bar:<{self.WIDTH}}] {done}/{target} {best}"
                f"{speedup}"
                f" | trials run {self.trials_run}, {elapsed:.0f} s")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._dirty = True
            if final:
                self.stream.write("\n")
                self._dirty = False
            self.stream.flush()
        elif final:
            self.message(line)

    def close(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self._dirty = False


# ---- one study -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _State:
    total: int  # finished trials (complete or pruned), repeats included
    measured: int  # trials that ran in the worker (ok or failed): what --trials counts
    distinct: int  # distinct configs among the finished trials
    distinct_measured: int
    best_s: float | None
    default_s: float | None


def _info(trial: Any) -> dict[str, Any]:
    """What a trial did (see _StudyRunner.objective); empty for a trial still running or killed mid-way."""
    info = trial.user_attrs.get("info")
    return info if isinstance(info, dict) else {}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(type(a[k]) is type(b[k]) and a[k] == b[k] for k in a)


class _StudyRunner:
    def __init__(self, plan: StudyPlan, study: Any, worker: Any, options: TuneOptions, progress: Progress,
                 deadline: float | None) -> None:
        self.plan, self.study, self.worker, self.options = plan, study, worker, options
        self.progress, self.deadline = progress, deadline
        self.path = results.device_file(options.results, plan.device.id)
        self.version = plan.backend.version()
        self.flops = plan.problem.flops(plan.op)
        self.rows_written = 0

    # The counts come from storage each time: other processes may be tuning the same study.
    def finished(self) -> list[Any]:
        from optuna.trial import TrialState
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))

    def state(self) -> _State:
        trials = self.finished()
        ok = [t.value for t in trials if t.value is not None]
        default = [t.value for t in trials if t.value is not None and _info(t).get("is_default")]
        return _State(total=len(trials), measured=sum(1 for t in trials if _info(t).get("measured")),
                      distinct=len({json.dumps(t.params, sort_keys=True) for t in trials}),
                      distinct_measured=len({json.dumps(t.params, sort_keys=True) for t in trials
                                             if _info(t).get("measured")}),
                      best_s=min(ok) if ok else None, default_s=default[0] if default else None)

    def done(self, s: _State) -> bool:
        """Enough configs measured, or every point of the space tried; except with grid sampling (exhaustive:
        every point, pruned ones too, is visited and recorded), also when every feasible point has been measured
        or the sampler keeps proposing known points (it has converged)."""
        if s.measured >= self.options.trials or s.distinct >= self.plan.space.size:
            return True
        if self.options.sampler == "grid":
            return False
        if self.plan.feasible is not None and s.distinct_measured >= self.plan.feasible:
            return True
        return s.total >= 4 * self.options.trials + 20

    def write_row(self, trial: Any, config: dict[str, Any], outcome: dict[str, Any]) -> None:
        from backends.base import config_json

        from autotune import __version__
        p = self.plan
        t = outcome.get("time_s")
        row = {"device": p.device.id, "device_name": p.device.name, "backend": p.backend.name, "op": p.op,
               **results.problem_columns(p.problem), "config": config_json(config), "status": outcome["status"],
               "time_s": t, "gflops": (self.flops / t / 1e9) if t else None,
               "max_abs_err": outcome.get("max_abs_err"),
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "time_min_s": outcome.get("time_min_s"), "time_max_s": outcome.get("time_max_s"),
               "reps": outcome.get("reps"),
               "reason": " ".join(str(outcome.get("reason") or "").split())[:500] or None,
               "study": p.name, "trial": trial.number, "is_default": int(_same(config, p.default)),
               "backend_version": outcome.get("backend_version") or self.version,
               "autotune_version": __version__}
        try:
            results.append_rows(self.path, [row])
        except results.ResultsFileError:
            # Changed under us (another writer, a user): keep it aside, never overwrite, start a new file.
            note = results.set_aside_if_unreadable(self.path)
            if note is None:
                raise
            self.progress.message(f"warning: {note}")
            results.append_rows(self.path, [row])
        self.rows_written += 1

    def objective(self, trial: Any) -> float:
        """One trial. What it did is stored as user attributes in one write (each write is a transaction):
        is_default, status, reason, measured (ran in the worker: what --trials counts), recorded (appended a
        results row), duplicate_of (a repeated point, answered from that trial), pid."""
        import optuna
        p = self.plan
        config = {name: trial.suggest_categorical(name, list(values)) for name, values in p.space.params.items()}
        info: dict[str, Any] = {"is_default": _same(config, p.default), "pid": os.getpid()}
        for old in self.finished():  # a repeated point: answer from the earlier trial, do not run it again
            if _same(old.params, config):
                info.update(duplicate_of=old.number, status=_info(old).get("status", "ok"))
                trial.set_user_attr("info", info)
                if old.value is None:
                    raise optuna.TrialPruned(f"same as trial {old.number}")
                return float(old.value)
        violation = p.space.violation(config)
        if violation:
            outcome: dict[str, Any] = {"status": "pruned", "reason": violation}
        else:
            request = {"backend": p.backend.name, "device": p.device.id, "op": p.op, "problem": p.problem.key,
                       "config": config, "budget_s": self.options.timing_budget_s, "seed": 0}
            outcome = self.worker.run(request, self.options.trial_timeout_s)
            self.progress.trials_run += 1
            info["measured"] = True
        if outcome.get("status") not in results.STATUSES:
            outcome = {"status": "error", "reason": f"unknown trial status {outcome.get('status')!r}"}
        self.write_row(trial, config, outcome)
        info.update(status=outcome["status"], recorded=True)
        if outcome["status"] != "ok":
            info["reason"] = str(outcome.get("reason", ""))[:500]
        trial.set_user_attr("info", info)
        if outcome["status"] != "ok":
            # Pruned (not failed) so that TPE learns to avoid it: TPE ignores FAIL trials.
            raise optuna.TrialPruned(f"{outcome['status']}: {outcome.get('reason', '')}")
        return float(outcome["time_s"])

    def show(self, s: _State, final: bool = False) -> None:
        target = min(self.options.trials, self.plan.feasible or self.plan.space.size)
        self.progress.update(min(s.measured, target), target, s.best_s, s.default_s, final=final)

    def after_trial(self, study: Any, trial: Any) -> None:
        s = self.state()
        self.show(s)
        if self.done(s) or (self.deadline is not None and time.monotonic() >= self.deadline):
            study.stop()

    def run(self, timeout_s: float | None) -> None:
        s = self.state()
        self.show(s)
        if not self.done(s):
            self.study.optimize(self.objective, timeout=timeout_s, callbacks=[self.after_trial],
                                gc_after_trial=False, show_progress_bar=False)
            s = self.state()
        self.show(s, final=True)


def open_study(plan: StudyPlan, storage: Any, sampler: str, seed: int | None) -> Any:
    import optuna
    study = optuna.create_study(study_name=plan.name, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(sampler, plan.space, seed))
    if not study.user_attrs:
        for k, v in (("device", plan.device.id), ("backend", plan.backend.name), ("op", plan.op),
                     ("problem", plan.problem.key), ("problem_name", plan.problem_name)):
            study.set_user_attr(k, v)
    # Enqueued once (also when several processes start together, at worst twice: a repeat is not re-run).
    study.enqueue_trial(plan.default, skip_if_exists=True)
    return study


# ---- the run -----------------------------------------------------------------------------------------------------
def tune(options: TuneOptions) -> pd.DataFrame:
    """Run every planned study; return the summary table (also printed by the CLI)."""
    from autotune.trial import Worker

    progress = Progress(0, options.stream, options.progress)
    plans = plan_studies(options, progress.message)
    if not plans:
        raise ValueError("nothing to tune: no available backend and device for these problems and ops "
                         "(see `autotune devices`)")
    options.results.mkdir(parents=True, exist_ok=True)
    for device_id in sorted({p.device.id for p in plans}):
        note = results.set_aside_if_unreadable(results.device_file(options.results, device_id))
        if note:
            progress.message(f"warning: {note}")
    storage = make_storage(storage_url(options))
    progress.total = len(plans)
    start = time.monotonic()
    deadline = start + options.time_budget_s if options.time_budget_s else None
    with Worker() as worker:
        for i, plan in enumerate(plans, start=1):
            timeout = options.timeout_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    progress.message(f"time budget of {options.time_budget_s:g} s spent: {len(plans) - i + 1} "
                                     f"of {len(plans)} studies not run (run the command again to continue)")
                    break
                share = left / (len(plans) - i + 1)  # an even share of what is left, per remaining study
                timeout = min(timeout, share) if timeout else share
            progress.study(i, f"{plan.device.id} {plan.backend.name} {plan.op} {plan.problem_name}")
            study = open_study(plan, storage, options.sampler, options.seed)
            _StudyRunner(plan, study, worker, options, progress, deadline).run(timeout)
    progress.close()
    return summarize(options.results, plans)


def summarize(results_dir: Path, plans: Sequence[StudyPlan]) -> pd.DataFrame:
    """Per problem, op and device: the fastest `ok` config over the planned backends, its GFLOP/s, and its
    speed-up over its backend's default config (all rows in the results files count, earlier runs too)."""
    columns = ["problem", "op", "device", "backend", "config", "time_ms", "gflops", "speedup_vs_default",
               "trials_ok", "trials"]
    frames = []
    for device_id in sorted({p.device.id for p in plans}):
        path = results.device_file(results_dir, device_id)
        if path.is_file():
            frames.append(results.read_file(path))
    if not frames:
        return pd.DataFrame(columns=columns)
    df = pd.concat(frames, ignore_index=True)
    out = []
    for key in dict.fromkeys((p.problem_name, p.op, p.device.id, p.problem.key) for p in plans):
        name, op, device_id, problem_key = key
        names = {p.backend.name for p in plans if (p.problem_name, p.op, p.device.id) == (name, op, device_id)}
        rows = df[(df["device"] == device_id) & (df["op"] == op) & (df["problem"] == problem_key)
                  & df["backend"].isin(names)]
        ok = rows[rows["status"] == "ok"]
        entry: dict[str, Any] = {"problem": name, "op": op, "device": device_id, "trials_ok": len(ok),
                                 "trials": len(rows)}
        if len(ok):
            best = ok.loc[ok["time_s"].idxmin()]
            defaults = ok[(ok["backend"] == best["backend"]) & (pd.to_numeric(ok["is_default"]) == 1)]
            entry.update(backend=best["backend"], config=best["config"], time_ms=best["time_s"] * 1e3,
                         gflops=best["gflops"],
                         speedup_vs_default=(defaults["time_s"].median() / best["time_s"]) if len(defaults)
                         else float("nan"))
        out.append(entry)
    return pd.DataFrame(out, columns=columns)


def format_summary(table: pd.DataFrame) -> str:
    if table.empty:
        return "no results"
    return table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3g}")


# ---- command line ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", nargs="+", metavar="ID", help="device ids or kinds (cpu, gpu) to tune "
                        "(default: every device; interpreters are never tuned)")
    parser.add_argument("--backends", nargs="+", metavar="NAME", help="backends to tune (default: all available)")
    parser.add_argument("--ops", nargs="+", choices=OPS, metavar="OP", help=f"ops to tune (default: all of "
                        f"{', '.join(OPS)})")
    parser.add_argument("--problems", metavar="FILE", help="problems CSV (default: the built-in suite)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="tune only these problems (by name)")
    model_args.add_arguments(parser)
    parser.add_argument("--trials", type=int, metavar="N",
                        help="configs measured per study in total, earlier runs' included (default 20); constraint-"
                        "pruned and repeated points do not count")
    parser.add_argument("--timeout", type=float, metavar="S", help="seconds per study")
    parser.add_argument("--time-budget", type=float, metavar="S", help="seconds for the whole run, shared evenly "
                        "by the studies left")
    parser.add_argument("--results", metavar="DIR", help="results directory (default: $AUTOTUNE_RESULTS, else a "
                        "per-user data directory)")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage, any SQLAlchemy URL (default: a SQLite "
                        f"file {STORAGE_FILE} in the results directory); share it to tune from several machines")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                        help="tpe (default), random, or grid (exhaustive)")
    parser.add_argument("--seed", type=int, help="sampler seed (default: random)")
    parser.add_argument("--trial-timeout", type=float, default=120.0, metavar="S",
                        help="time limit of one trial (build, check and timing); a trial over it is killed and "
                        "recorded as timeout (default 120)")
    parser.add_argument("--timing-budget", type=float, metavar="S",
                        help="seconds spent timing one config (default 0.3)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="defaults for options not given: quick = a few "
                        "suite layers in a few minutes; suite = the whole suite")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def options_from_args(args: argparse.Namespace) -> TuneOptions:
    preset = PRESETS.get(args.preset or "", {})

    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else preset.get(name, default)

    problems = model_args.problems(args, pick("only", None)) or select(load_problems(args.problems),
                                                                         pick("only", None))
    return TuneOptions(problems=problems, results=results.results_dir(args.results), ops=tuple(args.ops or OPS),
                       backends=args.backends, devices=args.devices, trials=pick("trials", 20),
                       timeout_s=args.timeout, time_budget_s=pick("time_budget", None), storage=args.storage,
                       sampler=args.sampler, seed=args.seed, trial_timeout_s=args.trial_timeout,
                       timing_budget_s=pick("timing_budget", 0.3), progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so the trial worker is stopped and storage connections closed.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = options_from_args(args)
    table = tune(options)
    print(format_summary(table))
    print(f"results: {options.results}", file=sys.stderr)
    return 0
