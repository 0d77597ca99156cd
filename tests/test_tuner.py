"""The tuner: trial isolation (wrong answers, build errors, out of resources, hangs, crashes), the `autotune tune`
command end to end, kill -9 and resume, concurrent writers, a corrupt results file, PostgreSQL scale-out, and
`autotune devices`. Problems are tiny and studies short: the whole file runs in about a minute."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import IN_CI, register_plugin, require

from autotune.core import results
from autotune.core.problem import Problem
from autotune.core.verify import make_inputs, tolerance
from autotune.problems import NamedProblem
from autotune.tuner import TuneOptions, tune
from autotune.tuner.study import RETIMED
from autotune.tuner.trial import Worker, run_trial

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FAKE_DEVICE = "cpu-fake-test-1c"
TINY = Problem.make(2, 3, 5, 5, 4, 3, 3, stride=2, padding=1, output_padding=1, bias=True)
PROBLEMS_CSV = ("name,N,C_in,H,W,C_out,kH,kW,stride,padding,output_padding,dilation,groups,bias\n"
                "tiny,2,3,5,5,4,3,3,2,1,1,1,1,1\n")


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The fake backend registered (through an entry point) here and in every subprocess (workers, CLI runs)."""
    register_plugin(monkeypatch, tmp_path_factory.mktemp("plugins"), "fake", "fake_backend:FakeBackend")
    monkeypatch.delenv("FAKE_BACKEND_MODES", raising=False)
    return dict(os.environ)


@pytest.fixture
def problems_file(tmp_path: Path) -> Path:
    p = tmp_path / "problems.csv"
    p.write_text(PROBLEMS_CSV)
    return p


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], cwd=ROOT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def tune_args(problems: Path, res: Path, *extra: str) -> list[str]:
    return ["tune", "--problems", str(problems), "--results", str(res), "--timing-budget", "0.02", *extra]


def recorded_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial in `storage` that appended a results row."""
    out = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out += [t for t in study.trials if info(t).get("recorded")]
    return out


def info(trial: optuna.trial.FrozenTrial) -> dict:
    """What the tuner stored about a trial (autotune.tuner.study.StudyRunner.objective)."""
    return trial.user_attrs.get("info", {})


def request(mode: str, size: int = 1, op: str = "forward") -> dict:
    return {"backend": "fake", "device": FAKE_DEVICE, "op": op, "problem": TINY.for_op(op).key,
            "config": {"mode": mode, "size": size}, "budget_s": 0.01, "seed": 0}


# ---- one trial ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, status", [("good", "ok"), ("wrong", "wrong_answer"), ("build_error", "build_error"),
                                          ("oom", "out_of_resources")])
def test_run_trial_in_process_classifies(fake_env: dict, mode: str, status: str) -> None:
    out = run_trial(request(mode))
    assert out["status"] == status, out
    if status == "ok":
        assert out["time_s"] > 0 and out["reps"] >= 3 and out["max_abs_err"] <= tolerance("forward", TINY)
    else:
        assert out["reason"]
    if mode == "wrong":
        assert out["max_abs_err"] == pytest.approx(0.5, rel=1e-3)


def test_a_kernel_writing_into_its_inputs_does_not_spoil_later_trials(fake_env: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_backend
    good = fake_backend.FakeBackend.prepare

    def clobbering(self, op, problem, device, config):  # type: ignore[no-untyped-def]
        kernel = good(self, op, problem, device, config)

        def run(*inputs):  # type: ignore[no-untyped-def]
            out = kernel(*inputs)
            for a in inputs:
                if a is not None:
                    a[...] = 7.0
            return out
        return run

    monkeypatch.setattr(fake_backend.FakeBackend, "prepare", clobbering)
    assert run_trial(request("good", 2))["status"] == "ok"
    monkeypatch.setattr(fake_backend.FakeBackend, "prepare", good)
    assert run_trial(request("good", 1))["status"] == "ok"  # the cached inputs were not overwritten


def test_run_trial_rejects_config_outside_the_space(fake_env: dict) -> None:
    out = run_trial({**request("good"), "config": {"mode": "rm -rf", "size": 1}})
    assert out["status"] == "error" and "not one of" in out["reason"]


@pytest.mark.parametrize("op", ["forward", "backward_input", "backward_weight", "backward_bias"])
def test_numpy_backend_trial_passes_its_own_check(op: str) -> None:
    from autotune.core.devices import cpu_device_id
    out = run_trial({"backend": "numpy", "device": cpu_device_id(), "op": op, "problem": TINY.for_op(op).key,
                     "config": {"algorithm": "sum"} if op == "backward_bias" else
                     {"algorithm": "col2im" if op == "forward" else "per_tap", "batch_block": 1},
                     "budget_s": 0.01})
    assert out["status"] == "ok", out
    assert out["device_time_s"] == out["time_s"]  # numpy on a CPU: the call's time is the device time
    # The tolerance is meaningful: far below one product (inputs are in [-1, 1]).
    assert out["max_abs_err"] <= tolerance(op, TINY) < 1e-3


def test_inputs_are_in_the_unit_interval_and_in_dtype() -> None:
    kernel_in, exact = make_inputs("forward", TINY, seed=3)
    assert kernel_in[0].dtype == "float32" and kernel_in[2].shape == (4,)
    assert max(abs(a).max() for a in exact if a is not None) <= 1


def test_worker_survives_hang_and_crash(fake_env: dict) -> None:
    with Worker() as worker:
        assert worker.run(request("good"), timeout_s=60)["status"] == "ok"
        first = worker.proc.pid
        hang = worker.run(request("hang"), timeout_s=1.5)
        assert hang["status"] == "timeout" and "1.5 s" in hang["reason"]
        crash = worker.run(request("crash"), timeout_s=60)
        assert crash["status"] == "crash" and "SIGSEGV" in crash["reason"]
        again = worker.run(request("good", 2), timeout_s=60)
        assert again["status"] == "ok" and worker.proc.pid != first and worker.starts == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_worker_in_a_hanging_kernel_dies_with_the_tuner(fake_env: dict) -> None:
    code = ("import sys; from autotune.tuner.trial import Worker; w = Worker(); "
            "r = " + repr(request("good")) + "\n"
            "print(w.run(r, 60)['status'], w.proc.pid, flush=True)\n"
            "w.run({**r, 'config': {'mode': 'hang', 'size': 1}}, 600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=fake_env, stdout=subprocess.PIPE, text=True)
    status, pid = proc.stdout.readline().split()
    assert status == "ok"
    time.sleep(0.5)  # the worker is now inside the hanging kernel
    proc.kill()  # kill -9: no clean-up runs in the tuner
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":  # killed, waiting to be reaped by init
            break
        time.sleep(0.05)
    else:
        os.kill(int(pid), signal.SIGKILL)
        pytest.fail("the worker outlived the killed tuner")


# ---- the command -------------------------------------------------------------------------------------------------
def split_retimed(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows of the best configs re-timed after a study's trials, the trials' own rows)."""
    again = df["reason"].astype(str).str.startswith(RETIMED)
    return df[again], df[~again]


def test_tune_records_every_failure_and_keeps_going(fake_env: dict, problems_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    proc = cli(*tune_args(problems_file, res, "--backends", "fake", "--ops", "forward", "--sampler", "grid",
                          "--trials", "50", "--trial-timeout", "2", "--seed", "1"), env=fake_env)
    assert proc.returncode == 0, proc.stderr
    assert "skipping fake on interp-fake-test: its timings are not speed" in proc.stderr
    assert not (res / "interp-fake-test.csv").exists()
    df = results.read_file(res / f"{FAKE_DEVICE}.csv")
    assert set(df["status"]) == {"ok", "wrong_answer", "build_error", "out_of_resources", "timeout", "crash",
                                 "pruned"}
    retimed, df = split_retimed(df)
    assert len(df) == 18 and df["config"].is_unique  # the whole grid, each point once
    # then the 3 best ok configs re-timed interleaved, one row each, under the trial that measured it first
    assert len(retimed) == 3 and retimed["config"].is_unique and (retimed["status"] == "ok").all()
    ok = df[df["status"] == "ok"].sort_values("time_s")
    assert set(retimed["config"]) <= set(ok["config"]) and '{"mode":"good","size":1}' in set(retimed["config"])
    assert (retimed["trial"] == retimed["config"].map(dict(zip(df["config"], df["trial"])))).all()
    assert retimed["reason"].str.contains("rounds interleaved").all() and (retimed["reps"] >= 3).all()
    assert (df.loc[df["status"] == "ok", "reason"] == "").all()
    assert (df.loc[df["status"] != "ok", "reason"].str.len() > 0).all()
    assert df.loc[df["trial"] == 0, "config"].item() == '{"mode":"good","size":3}'  # the default, enqueued first
    assert df.loc[df["trial"] == 0, "is_default"].item() == 1
    best = df[df["status"] == "ok"].sort_values("time_s").iloc[0]
    assert json.loads(best["config"]) == {"mode": "good", "size": 1}
    # The summary: best config per problem and op, and its speed-up over the default (3 ms sleep vs 1 ms).
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["problem", "op", "device", "backend"]
    assert '{"mode":"good","size":1}' in lines[1]
    speedup = float(lines[1].split()[-3])
    assert speedup > 1.5


def test_kill_9_mid_run_then_resume(problems_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    args = tune_args(problems_file, res, "--backends", "numpy", "--ops", "forward", "backward_bias", "--trials",
                     "4", "--timing-budget", "0.2", "--seed", "0")
    path = results.device_file(res, _cpu_id())
    proc = subprocess.Popen([sys.executable, "-m", "autotune.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and path.read_text().count("\n") >= 4:  # header + 3 rows
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: make it longer"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the tuner and its worker
        proc.wait()
    before = pd.read_csv(path)  # pandas reads the file as the kill left it
    assert len(before) >= 3 and (before["schema"].iloc[:-1] == results.SCHEMA_VERSION).all()
    errors: list[str] = []
    whole = results.read_file(path, errors)
    # Every row is whole, except at most the last one if the kill landed inside its write (the trial in flight):
    # that one is dropped by the reader, with its line named.
    assert errors == [] or (len(errors) == 1 and f"line {len(before) + 1}: incomplete" in errors[0])
    assert len(whole) == len(before) - len(errors)
    before = before.iloc[:len(whole)]
    storage = f"sqlite:///{res / 'studies.sqlite3'}"
    studies_before = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}

    again = cli(*args)
    assert again.returncode == 0, again.stderr
    after = results.read_file(path)
    assert len(after) > len(before)
    assert after.iloc[:len(before)]["timestamp"].tolist() == before["timestamp"].tolist()  # appended, not rewritten
    for name, n in studies_before.items():  # the same studies, continued: their trials kept and grown
        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.trials) >= n
        # The default was enqueued once, as the first trial, and not again on resume.
        # (the seeds from tuned results, shipped ones included, may follow it)
        enqueued = [t.system_attrs["fixed_params"] for t in study.trials if "fixed_params" in t.system_attrs]
        assert study.trials[0].system_attrs.get("fixed_params") == enqueued[0] and info(study.trials[0])["is_default"]
        assert enqueued.count(enqueued[0]) == 1
    summaries = optuna.get_all_study_summaries(storage)
    assert len(summaries) == 2 and sum(s.n_trials for s in summaries) > sum(studies_before.values())
    # What `optuna-dashboard sqlite:///.../studies.sqlite3` shows (README): the study names are the results' `study`
    # column, and each study says what it tunes in its user attributes.
    assert {s.study_name for s in summaries} == set(after["study"])
    for s in summaries:
        attrs = s.user_attrs
        assert set(attrs) == {"device", "backend", "op", "problem", "problem_name"}
        assert s.study_name.split(":")[:4] == [attrs["device"], attrs["backend"], attrs["op"], attrs["problem"]]
    # and the rows say they come from tuning, with the threads and the load of the time
    assert set(after["source"]) == {"tune"} and (after.loc[after.status == "ok", "threads"] >= 1).all()
    # Both studies tuned to the end: 4 configs measured (forward), or every feasible one (2 for backward_bias).
    for s in summaries:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        measured = sum(1 for t in study.trials if info(t).get("measured"))
        assert measured >= (2 if ":backward_bias:" in s.study_name else 4)
    # A third run has nothing left to do and measures nothing.
    third = cli(*args)
    assert third.returncode == 0 and len(results.read_file(path)) == len(after)


def test_two_tuners_into_one_results_dir_lose_no_row(problems_file: Path, tmp_path: Path) -> None:
    res = tmp_path / "res"
    storages = [f"sqlite:///{tmp_path / f's{i}.sqlite3'}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "autotune.cli",
                               *tune_args(problems_file, res, "--backends", "numpy", "--sampler", "grid",
                                          "--ops", "forward", "backward_bias", "--trials", "12", "--storage", s,
                                          "--quiet")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in storages]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    retimed, df = split_retimed(results.read_file(results.device_file(res, _cpu_id())))
    expected = sum(len(recorded_trials(s)) for s in storages)
    assert len(df) == expected and expected >= 2 * 14  # forward: the 12-point grid; backward_bias: 2 points
    assert df.groupby("study")["trial"].value_counts().max() == 2  # each trial number once per process
    # per process, the best 3 forward configs re-timed, and both backward_bias configs unless one was abandoned
    # (its first run over 3x the other's: the two can be that far apart on a busy machine)
    assert (retimed["op"] == "forward").sum() == 2 * 3
    abandoned = ((df["op"] == "backward_bias") & (df["status"] == "abandoned")).sum()
    bias_retimed = (retimed["op"] == "backward_bias").sum()
    assert bias_retimed == 2 * 2 if abandoned == 0 else bias_retimed in (0, 2)


def test_corrupt_results_file_is_kept_aside(fake_env: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["FAKE_BACKEND_MODES"] = "good"  # restored by fake_env's monkeypatch
    res = tmp_path / "res"
    res.mkdir()
    bad = results.device_file(res, FAKE_DEVICE)
    garbage = "a,b\n" + "x," * 60 + "\n"  # not a results header: kept aside (a bad row alone costs that row)
    bad.write_text(garbage)
    options = TuneOptions(problems=[NamedProblem("tiny", TINY)], results=res, ops=("forward",), backends=["fake"],
                          trials=2, timing_budget_s=0.01, progress=True)
    tune(options)
    err = capsys.readouterr().err
    assert f"{bad}, line 1" in err and "kept aside" in err
    aside = list(res.glob(f"{bad.name}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == garbage  # never overwritten
    retimed, df = split_retimed(results.read_file(bad))
    assert set(df["status"]) == {"ok"} and len(df) == 2 and len(retimed) == 2


def test_options_are_validated(tmp_path: Path) -> None:
    base = dict(problems=[NamedProblem("tiny", TINY)], results=tmp_path)
    with pytest.raises(ValueError, match="trials"):
        TuneOptions(**base, trials=0)
    with pytest.raises(ValueError, match="sampler"):
        TuneOptions(**base, sampler="annealing")
    with pytest.raises(ValueError, match="ops"):
        TuneOptions(**base, ops=("sideways",))
    with pytest.raises(ValueError, match="unknown backend"):
        tune(TuneOptions(**base, backends=["nope"], progress=False))
    with pytest.raises(ValueError, match="unknown device"):
        tune(TuneOptions(**base, backends=["numpy"], devices=["gpu-none-0gb"], progress=False))


def test_cli_errors_are_one_line(problems_file: Path, tmp_path: Path) -> None:
    proc = cli(*tune_args(problems_file, tmp_path, "--only", "nosuchlayer"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nosuchlayer" in proc.stderr


def test_devices_command_lists_backends_and_reasons(fake_env: dict) -> None:
    import io
    proc = cli("devices", "--csv", env=fake_env)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False)
    assert list(table.columns) == ["backend", "available", "device", "kind", "name", "note"]
    numpy_rows = table[table["backend"] == "numpy"]
    assert numpy_rows["available"].all() and numpy_rows["device"].item() == _cpu_id()
    fake = table[table["backend"] == "fake"].set_index("device")
    assert "never tuned" in fake.loc["interp-fake-test", "note"]
    assert set(table["backend"]) >= {"numpy", "fake"}
    for row in table.itertuples():
        if not row.available:
            assert row.note  # an unavailable backend always says why


# ---- scale-out ---------------------------------------------------------------------------------------------------
@pytest.fixture
def postgres_url() -> str:
    """A fresh database on the throwaway server scripts/test.sh starts; dropped afterwards."""
    url = os.environ.get("AUTOTUNE_TEST_POSTGRES_URL")
    require(bool(url), "PostgreSQL (AUTOTUNE_TEST_POSTGRES_URL, set by scripts/test.sh)")
    import sqlalchemy
    name = f"autotune_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {url} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL at {url} is not reachable")
    yield url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_two_tuners_share_one_postgresql_study(postgres_url: str, tmp_path: Path) -> None:
    problems = tmp_path / "p.csv"
    problems.write_text(PROBLEMS_CSV.replace("tiny,2,", "tiny,16,"))  # N=16: 10 feasible forward configs
    args = ["--backends", "numpy", "--ops", "forward", "--trials", "6", "--storage", postgres_url,
            "--sampler", "random", "--quiet"]
    machines = [tmp_path / "a", tmp_path / "b"]  # two "machines": own results dirs, one storage
    procs = [subprocess.Popen([sys.executable, "-m", "autotune.cli", *tune_args(problems, m, *args, "--seed", str(i))],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, m in enumerate(machines)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(postgres_url)]
    study = optuna.load_study(study_name=name, storage=postgres_url)
    measured = [t for t in study.trials if info(t).get("measured")]
    # One target shared: 6 configs in all (plus at most one each that was in flight), not 6 per process.
    assert 6 <= len(measured) <= 8
    rows = pd.concat([results.read_file(results.device_file(m, _cpu_id())) for m in machines])
    _, rows = split_retimed(rows)  # each machine re-times the best configs it measured: not trials
    assert len(rows) == len(recorded_trials(postgres_url))  # every trial ran once, on one machine or the other
    ok = rows[rows["status"] == "ok"]
    assert study.best_value == pytest.approx(ok["time_s"].min())  # the best over both machines' trials
    # A third machine joining later finds the target reached and the shared best.
    late = cli(*tune_args(problems, tmp_path / "c", *args))
    assert late.returncode == 0, late.stderr
    assert not results.device_file(tmp_path / "c", _cpu_id()).exists()
    assert optuna.load_study(study_name=name, storage=postgres_url).best_value == study.best_value


def _cpu_id() -> str:
    from autotune.core.devices import cpu_device_id
    return cpu_device_id()


@pytest.mark.parametrize("flag", ["--time-budget", "--timing-budget", "--timeout", "--trial-timeout"])
def test_tune_option_errors_name_the_flag(flag, capsys) -> None:
    """Issue 14: a user error names the option the user typed, never the library's argument (time_budget_s)."""
    from autotune import cli
    assert cli.main(["tune", "--only", "odd_shapes", flag, "0"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be > 0" in err and "_s " not in err and "_s\n" not in err


def test_one_option_name_across_verbs() -> None:
    """`--timing-budget` is the seconds timing one config in tune and bench alike; `--verbose` everywhere."""
    from autotune import cli
    parser = cli.build_parser()
    for verb in ("tune", "bench"):
        assert parser.parse_args([verb, "--timing-budget", "0.1"]).timing_budget == 0.1
    for verb in cli.COMMANDS:
        assert parser.parse_args([verb, "--verbose"]).verbose
