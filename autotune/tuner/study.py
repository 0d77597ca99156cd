"""One study: open (or resume) it in storage, then run trials until its target is reached.

Each trial samples every parameter with `suggest_categorical` over the space's values; a config that breaks a
constraint is recorded as `pruned` and not run; any other config is built, checked and timed in the worker
subprocess (autotune.tuner.trial), and its row appended to the device's results file whatever the outcome. The
backend's default config is enqueued as each study's first trial, so the best config found is never worse than
the default. The counts that decide when a study is done are read from storage each time: other processes may
be tuning the same study."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.core import results
from autotune.core.space import ConfigError
from autotune.core.timing import ABANDON_FACTOR
from autotune.tuner.options import TuneOptions
from autotune.tuner.plan import StudyPlan
from autotune.tuner.progress import Progress
from autotune.tuner.samplers import make_sampler

# After its trials, a study's best `TuneOptions.retime` ok configs are timed again, RETIME_ROUNDS rounds interleaved
# (each round times each config once, in turn) in the worker, one row each with reason RETIMED: one timing on a
# shared machine spreads by 10-30%, so a winner is measured again beside its rivals before it wins (dispatch ranks
# a config by the median of its rows' medians).
RETIME_ROUNDS = 3
RETIMED = "re-timed"

# Only for type hints: the worker, `python -m autotune.tuner.trial`, must not find its module imported.
if TYPE_CHECKING:
    from autotune.tuner.trial import Worker


def open_study(plan: StudyPlan, storage: Any, sampler: str, seed: int | None,
               results_dirs: list[Any] | None = None) -> Any:
    """The Optuna study of `plan`, created or loaded, with the default config enqueued, then the `seeds` from
    `results_dirs` (None: the user's then the shipped directory)."""
    import optuna

    study = optuna.create_study(study_name=plan.name, storage=storage, direction="minimize",
                                load_if_exists=True, sampler=make_sampler(sampler, plan.space, seed))
    if not study.user_attrs:
        for k, v in (("device", plan.device.id), ("backend", plan.backend.name), ("op", plan.op),
                     ("problem", plan.problem.key), ("problem_name", plan.problem_name)):
            study.set_user_attr(k, v)
    _enqueue_default(study, plan.default)
    for config in seeds(plan, results_dirs):
        study.enqueue_trial(config, skip_if_exists=True)
    return study


def _enqueue_default(study: Any, default: dict[str, Any]) -> None:
    """Enqueue the default config unless a finished trial has it or one is waiting: a trial left RUNNING by a
    killed run does not count (Optuna's `skip_if_exists` would count it, and the study could finish without the
    default). Several processes starting together enqueue it at worst twice: a repeat is not re-run."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)):
        params = t.system_attrs.get("fixed_params", {}) if t.state == TrialState.WAITING else t.params
        if params == default:
            return
    study.enqueue_trial(default)


PORTABLE_SEEDS = 2
SAME_PROBLEM_SEEDS = 3


def portable(plan: StudyPlan, table: Any) -> list[dict[str, Any]]:
    """This backend's configs measured on at least two other tuned problems of the op on this device, ranked by
    their mean speed relative to each problem's best (of this backend): tile choices that suit the device more than
    the layer (on a CPU one vector and work-group shape often wins across layers that differ), which the nearest
    problem's own winner can miss."""
    from backends.base import config_json

    speeds: dict[str, tuple[list[float], dict[str, Any]]] = {}
    for key, rows in table.rows[plan.op].items():
        mine = [r for r in rows if r.backend == plan.backend.name]
        if key == plan.problem.key or not mine:
            continue
        for r in mine:
            speeds.setdefault(config_json(r.config), ([], dict(r.config)))[0].append(mine[0].time_s / r.time_s)
    ranked = sorted(((sum(v) / len(v), text, c) for text, (v, c) in speeds.items() if len(v) >= 2),
                    key=lambda t: (-t[0], t[1]))
    return [c for _, _, c in ranked[:PORTABLE_SEEDS]]


def seeds(plan: StudyPlan, results_dirs: list[Any] | None = None) -> list[dict[str, Any]]:
    """Priors for a study beyond the default: this backend's fastest configs of this very problem on this device
    in results the study does not write (`results_dirs` after the first: the shipped results when tuning into a
    user's directory, or a re-tune in a fresh one), its `portable` configs on this device, its own `seed_configs`,
    its winners of the nearest tuned problems there, then the winners of the same problem on the most similar other
    devices (`dispatch`'s nearest and transfer rules), each valid for this problem's space; in that order, each
    once."""
    from autotune import dispatch
    from backends.base import config_json

    dirs = results_dirs if results_dirs is not None else dispatch.default_results_dirs()
    try:
        table = dispatch.load_table(plan.device.id, dirs)
        found: list[tuple[str, Any]] = []  # (backend name, config)
        own = Path(dirs[0]).resolve() if dirs else None
        elsewhere = tuple(Path(d) for d in dirs[1:] if Path(d).resolve() != own)
        if elsewhere:  # files the run does not write: the cached table, read once per run, not once per study
            rows = dispatch.table(plan.device.id, elsewhere, wait=True).rows[plan.op].get(plan.problem.key, [])
            found += [(r.backend, r.config) for r in rows if r.backend == plan.backend.name][:SAME_PROBLEM_SEEDS]
        found += [(plan.backend.name, c) for c in portable(plan, table)]
        found += [(plan.backend.name, c) for c in plan.backend.seed_configs(plan.op, plan.problem, plan.device)]
        tuned = sorted((dispatch.distance(plan.problem, rows[0].problem), key, rows)
                       for key, rows in table.rows[plan.op].items() if key != plan.problem.key and rows)
        for dist, _, rows in tuned[:3]:
            found += [(c.backend.name, c.config) for c in
                      dispatch._from_rows(plan.op, plan.problem, rows, table, "nearest", warn=False, dist=dist)]
        for _, _, other in dispatch.similar_devices(table)[:2]:
            found += [(c.backend.name, c.config) for c in dispatch._from_rows(
                plan.op, plan.problem, other[plan.op].get(plan.problem.key, []), table, "transfer", warn=False)]
    except Exception:  # priors are a help, never a reason to fail a study
        return []
    out: list[dict[str, Any]] = []
    seen = {config_json(plan.default)}
    for name, config in found:
        if name != plan.backend.name:
            continue
        try:
            clean = plan.space.validate(dict(config))  # a point of this problem's space, exactly
        except ConfigError:
            continue
        text = config_json(clean)
        if text not in seen:
            seen.add(text)
            out.append(clean)
    return out


@dataclass(frozen=True)
class _State:
    total: int  # finished trials (complete or pruned), repeats included
    measured: int  # trials that ran in the worker (ok or failed): what --trials counts
    distinct: int  # distinct configs among the finished trials
    distinct_measured: int
    best_s: float | None
    default_s: float | None


def _info(trial: Any) -> dict[str, Any]:
    """What a trial did (see StudyRunner.objective); empty for a trial still running or killed mid-way."""
    info = trial.user_attrs.get("info")
    return info if isinstance(info, dict) else {}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same config, types included (1 and True, or 1 and 1.0, are different points of a space)."""
    return a.keys() == b.keys() and all(type(a[k]) is type(b[k]) and a[k] == b[k] for k in a)


class StudyRunner:
    """Runs the trials of one study in `worker`, appending a results row per trial, until the study is done or
    `deadline` (a time.monotonic() value, the run's time budget) passes."""

    def __init__(self, plan: StudyPlan, study: Any, worker: Worker, options: TuneOptions, progress: Progress,
                 deadline: float | None) -> None:
        self.plan, self.study, self.worker, self.options = plan, study, worker, options
        self.progress, self.deadline = progress, deadline
        self.path = results.device_file(options.results, plan.device.id)
        self.version = plan.backend.version()

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
        every point, pruned ones too, is visited and recorded), also when every feasible point has been
        measured or the sampler keeps proposing known points (it has converged)."""
        if s.measured >= self.options.trials or s.distinct >= self.plan.space.size:
            return True
        if self.options.sampler == "grid":
            return False
        if self.plan.feasible is not None and s.distinct_measured >= self.plan.feasible:
            return True
        return s.total >= 4 * self.options.trials + 20

    def write_row(self, trial: Any, config: dict[str, Any], outcome: dict[str, Any]) -> None:
        from backends.base import config_json

        p = self.plan
        row = results.make_row(device_id=p.device.id, device_name=p.device.name, backend=p.backend.name,
                               op=p.op, problem=p.problem, config=config_json(config),
                               status=outcome["status"], source="tune", threads=outcome.get("threads"),
                               time_s=outcome.get("time_s"), time_min_s=outcome.get("time_min_s"),
                               time_max_s=outcome.get("time_max_s"), reps=outcome.get("reps"),
                               device_time_s=outcome.get("device_time_s"),
                               max_abs_err=outcome.get("max_abs_err"), reason=outcome.get("reason"),
                               study=p.name, trial=trial.number, is_default=_same(config, p.default),
                               backend_version=outcome.get("backend_version") or self.version)
        try:
            results.append_rows(self.path, [row])
        except results.ResultsFileError:
            # Changed under us (another writer, a user): keep it aside, never overwrite, start a new file.
            note = results.set_aside_if_unreadable(self.path)
            if note is None:
                raise
            self.progress.message(f"warning: {note}")
            results.append_rows(self.path, [row])

    def objective(self, trial: Any) -> float:
        """One trial. What it did is stored as user attributes in one write (each write is a transaction):
        is_default, status, reason, measured (ran in the worker: what --trials counts), recorded (appended a
        results row), duplicate_of (a repeated point, answered from that trial), pid."""
        import optuna

        p = self.plan
        config = {name: trial.suggest_categorical(name, list(values))
                  for name, values in p.space.params.items()}
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
            best = self.state().best_s
            if best is not None:  # bad configs cost one run, not a timing budget
                request["abandon_above_s"] = ABANDON_FACTOR * best
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
        """Trials until done, `timeout_s` (this study's share of the time) or the deadline; then, if this run
        measured any trial, the best configs re-timed (`retime_best`)."""
        s = self.state()
        self.show(s)
        if not self.done(s):
            before = self.progress.trials_run
            self.study.optimize(self.objective, timeout=timeout_s, callbacks=[self.after_trial],
                                gc_after_trial=False, show_progress_bar=False)
            if self.progress.trials_run > before:
                self.retime_best()
            s = self.state()
        self.show(s, final=True)

    def best_trials(self, n: int) -> list[Any]:
        """The `n` fastest ok trials of distinct configs (measured here or by an earlier run), fastest first."""
        out: list[Any] = []
        for t in sorted((t for t in self.finished() if t.value is not None and _info(t).get("status") == "ok"
                         and _info(t).get("duplicate_of") is None), key=lambda t: t.value):
            if not any(_same(t.params, o.params) for o in out):
                out.append(t)
            if len(out) == n:
                break
        return out

    def retime_best(self) -> None:
        """Time the best `options.retime` ok configs again, RETIME_ROUNDS rounds interleaved in the worker, and
        append one row per config (reason RETIMED, the trial that measured it first, status ok or the failure):
        the winner is the config whose rows' medians are best, not the one luckiest in a single timing. Skipped
        with fewer than two such configs or when the run's deadline has passed."""
        best = self.best_trials(self.options.retime)
        if len(best) < 2 or (self.deadline is not None and time.monotonic() >= self.deadline):
            return
        p = self.plan
        request = {"backend": p.backend.name, "device": p.device.id, "op": p.op, "problem": p.problem.key,
                   "configs": [dict(t.params) for t in best], "rounds": RETIME_ROUNDS,
                   "budget_s": self.options.timing_budget_s, "seed": 0}
        answer = self.worker.run(request, self.options.trial_timeout_s)
        found = answer.get("results")
        if not isinstance(found, list) or len(found) != len(best):
            self.progress.message(f"warning: re-timing the best configs of study {p.name} failed: "
                                  f"{answer.get('status', 'error')}: {answer.get('reason', '')}")
            return
        for t, outcome in zip(best, found):
            if not isinstance(outcome, dict) or outcome.get("status") not in results.STATUSES:
                outcome = {"status": "error", "reason": "the worker answered no result"}
            if outcome.get("status") != "ok" and not outcome.get("reason"):
                outcome = {**outcome, "reason": "failed"}
            reason = RETIMED if outcome["status"] == "ok" else f"{RETIMED}: {outcome['reason']}"
            if outcome["status"] == "ok":
                reason += f" ({outcome.get('rounds', RETIME_ROUNDS)} rounds interleaved with {len(best) - 1} other(s))"
            self.write_row(t, dict(t.params), {**outcome, "reason": reason})
