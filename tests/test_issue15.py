"""Issue 15: nothing lost, nothing poisoned. Outputs never over results, and every user-facing failure is one line
(exit 2, no traceback) naming the file or option and what to do."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autotune import cli
from autotune.core import results
from autotune.core.problem import Problem

P = Problem.make(1, 2, 3, 3, 2, 2, 2, stride=2)


def _results_file(d: Path) -> Path:
    path = results.device_file(d, "cpu-test-1c")
    results.append_rows(path, [{"device": "cpu-test-1c", "device_name": "Test", "backend": "numpy", "op": "forward",
                                **results.problem_columns(P), "config": "{}", "status": "ok", "time_s": 1e-3}])
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("verb", ["report", "bench"])
def test_outputs_never_over_results(tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str) -> None:
    """Item 3: `report -o` and `bench --csv` refuse a results file and a results directory, before any work."""
    d = tmp_path / "res"
    path = _results_file(d)
    before = path.read_bytes()
    option = ["-o"] if verb == "report" else ["--backends", "numpy", "--no-torch", "--only", "nope", "--csv"]
    for target in (path, d / "other.csv"):
        _one_line_error(capsys, [verb, "--results", str(d), *option, str(target)], str(target), "results")
    copy = tmp_path / "copy.csv"  # a results file outside any results directory is refused too
    copy.write_bytes(before)
    _one_line_error(capsys, [verb, "--results", str(d), *option, str(copy)], "is a results file")
    assert path.read_bytes() == before and copy.read_bytes() == before


def test_bench_csv_in_a_missing_directory_fails_before_the_run(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Item 8: checked before the (long) run: the problem selection `nope` would only fail later."""
    _one_line_error(capsys, ["bench", "--results", str(tmp_path), "--only", "nope", "--csv",
                             "/nonexistent/dir/x.csv"], "--csv", "does not exist")


@pytest.mark.filterwarnings("ignore:Heartbeat")
def test_default_is_enqueued_again_after_a_kill_during_its_trial(tmp_path: Path) -> None:
    """Item 5: a run killed during the default trial leaves it RUNNING; the next run enqueues the default again
    (no finished trial has it), so the study cannot finish without it."""
    from optuna.trial import TrialState

    import backends
    from autotune.tuner.plan import StudyPlan
    from autotune.tuner.storage import make_storage
    from autotune.tuner.study import open_study

    backend = backends.get("numpy")
    device = backend.devices()[0]
    space = backend.space("forward", P, device)
    plan = StudyPlan("tiny", P, "forward", backend, device, space,
                     space.validate(backend.default_config("forward", P, device)))
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(plan, storage, "random", 0, results_dirs=[])
    trial = study.ask()  # the enqueued default, now RUNNING: the process is killed here
    for name, values in space.params.items():
        trial.suggest_categorical(name, list(values))
    assert trial.params == plan.default
    study = open_study(plan, storage, "random", 0, results_dirs=[])  # the rerun, within the heartbeat's grace period
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [plan.default]
    nxt = study.ask()
    assert {k: nxt.suggest_categorical(k, list(v)) for k, v in space.params.items()} == plan.default
    study.tell(nxt, 1.0)
    open_study(plan, storage, "random", 0, results_dirs=[])  # a finished default: not enqueued again
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_time_budget_holds_for_2000_problems(tmp_path: Path) -> None:
    """Item 6: planning and summary are linear; a 3 s budget over 2,000 problems ends in seconds, and the summary
    has every problem."""
    import time

    from autotune.problems import NamedProblem
    from autotune.tuner import TuneOptions, tune

    problems = [NamedProblem(f"p{i}", Problem.make(1, 1 + i % 7, 3 + i % 5, 3 + i // 5 % 5, 1 + i // 25 % 7, 2, 2,
                                                   stride=2)) for i in range(2000)]
    options = TuneOptions(problems=problems, results=tmp_path, ops=("forward",), backends=["numpy"],
                          time_budget_s=3, timing_budget_s=0.01, progress=False)
    start = time.monotonic()
    table = tune(options)
    assert time.monotonic() - start < 3 + 4
    assert len(table) == 2000 and table["trials"].sum() >= 1


def test_problems_file_with_a_bom(tmp_path: Path) -> None:
    """Item 10: a UTF-8 BOM (spreadsheet exports) is tolerated."""
    from autotune.problems import load_problems

    f = tmp_path / "p.csv"
    f.write_bytes(b"\xef\xbb\xbfname,N,C_in,H,W,C_out,kH,kW,stride,padding,output_padding,dilation,groups,bias\n"
                  b"tiny,2,3,5,5,4,3,3,2,1,1,1,1,1\n")
    assert [p.name for p in load_problems(f)] == ["tiny"]


PROBLEMS = ("name,N,C_in,H,W,C_out,kH,kW,stride,padding,output_padding,dilation,groups,bias\n"
            "tiny,1,2,3,3,2,2,2,2,0,0,1,1,0\n")


@pytest.mark.parametrize("case", ["corrupt_storage", "results_is_a_file", "results_not_creatable", "memory_storage",
                                  "storage_in_a_missing_dir"])
def test_tune_failures_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    """Item 8: each is one line naming the file or option and what to do; no directory is created for a URL."""
    problems = tmp_path / "p.csv"
    problems.write_text(PROBLEMS)
    res = tmp_path / "res"
    extra: list[str] = []
    needles: tuple[str, ...]
    if case == "corrupt_storage":
        res.mkdir()
        (res / "studies.sqlite3").write_text("garbage")
        needles = ("studies.sqlite3", "not a database", "--storage")
    elif case == "results_is_a_file":
        res = problems
        needles = ("--results", "is a file")
    elif case == "results_not_creatable":
        res = Path("/proc/autotune-results")
        needles = ("--results", "cannot create")
    elif case == "memory_storage":
        extra = ["--storage", "sqlite:///:memory:"]
        needles = ("--storage", "in-memory")
    else:
        extra = ["--storage", f"sqlite:///{tmp_path}/typo/dir/x.db"]
        needles = ("--storage", "does not exist")
    _one_line_error(capsys, ["tune", "--problems", str(problems), "--backends", "numpy", "--ops", "forward",
                             "--trials", "1", "--quiet", "--results", str(res), *extra], *needles)
    assert not (tmp_path / "typo").exists()


def test_bench_record_appends_per_measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 9: a run killed after its first (problem, op) keeps those measurements in the results."""
    from autotune import bench
    from autotune.problems import NamedProblem

    real = bench.interleaved
    calls: list[int] = []

    def killed_on_second(*args: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(bench, "interleaved", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        bench.bench([NamedProblem("tiny", P)], ["forward", "backward_input"], ["numpy"], budget_s=0.01,
                    with_torch=False, with_peak=False, record_to=tmp_path / "res")
    (path,) = (tmp_path / "res").glob("*.csv")
    df = results.read_file(path)
    assert df["op"].tolist() == ["forward"] and df["reason"].tolist() == ["autotune bench"]


def test_empty_batch_as_torch() -> None:
    """Item 10: N=0 gives an empty output and zero weight/bias gradients, as torch (the torch module too)."""
    import numpy as np

    import autotune

    x, w, b = np.zeros((0, 4, 5, 5), np.float32), np.ones((4, 3, 3, 3), np.float32), np.ones(6, np.float32)
    y = autotune.conv_transpose2d(x, w, b, stride=2, groups=2)
    assert y.shape == (0, 6, 11, 11) and y.dtype == np.float32
    gx, gw, gb = autotune.conv_transpose2d_backward(y, x, w, stride=2, groups=2)
    assert gx.shape == x.shape and gw.shape == w.shape and not gw.any() and gb.shape == (6,)
    torch = pytest.importorskip("torch")
    import autotune.torch as att

    layer = att.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    ref = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    ref.load_state_dict(layer.state_dict())
    xt = torch.zeros((0, 4, 5, 5), requires_grad=True)
    out = layer(xt)
    assert out.shape == ref(xt).shape == (0, 6, 11, 11)
    out.sum().backward()
    assert xt.grad is not None and xt.grad.shape == xt.shape and layer.weight.grad is not None


def test_numpy_integer_scalars_everywhere() -> None:
    """Item 10: groups=np.int64(2) is accepted like stride=np.int64(2)."""
    import numpy as np

    import autotune

    x, w = np.ones((1, 4, 3, 3), np.float32), np.ones((4, 3, 2, 2), np.float32)
    y = autotune.conv_transpose2d(x, w, stride=np.int64(2), groups=np.int64(2), padding=np.int32(0),
                                  dilation=(np.int64(1), 1))
    assert np.array_equal(y, autotune.conv_transpose2d(x, w, stride=2, groups=2))
    assert autotune.conv_transpose2d_backward(y, x, w, stride=2, groups=np.int64(2))[1].shape == w.shape


def test_memory_is_checked_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 10: a call whose working memory exceeds what is available is refused before any backend allocates."""
    import numpy as np

    import autotune
    from autotune.core import memory

    monkeypatch.setattr(memory, "available_cpu", lambda: 300 * 2**20)
    x, w = np.zeros((64, 64, 64, 64), np.float16), np.zeros((64, 64, 4, 4), np.float16)  # 2 MiB + 64 KiB
    with pytest.raises(MemoryError, match="GiB available; split the batch"):
        autotune.conv_transpose2d(x, w, stride=4)  # output 64x64x256x256: about 4 GiB of working memory
    with pytest.raises(autotune.core.errors.UserError):
        autotune.conv_transpose2d(x, w, stride=4)


def test_check_negative_configs_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["check", "--configs", "-1"], "--configs must be >= 1")


def test_two_opencl_runtimes_on_one_cpu_have_two_ids() -> None:
    """Item 11: PoCL keeps the CPU's id (shared with numpy); another runtime on the same CPU adds its platform."""
    from autotune.core import devices

    cpu = "cpu-amd-epyc-2c"
    assert devices.opencl_cpu_device_id("Portable Computing Language", cpu) == cpu
    ids = {devices.opencl_cpu_device_id(name, cpu) for name in
           ("Portable Computing Language", "Oclgrind", "Intel(R) OpenCL", "Intel(R) CPU Runtime for OpenCL(TM)")}
    assert len(ids) == 4 and f"{cpu}-oclgrind" in ids and f"{cpu}-intel-opencl" in ids
    for i in ids:
        results.device_file(".", i)  # every one is a valid device id (a slug)


def test_bench_times_its_entries_interleaved_and_keeps_each_ones_fastest_round() -> None:
    """Issue 11: one stretch of interference costs one round of one entry, not the comparison."""
    from autotune import bench

    order: list[str] = []

    def make(name: str, seconds: float) -> object:
        def run() -> None:
            order.append(name)
            interfered = name == "a" and "b" not in order  # `a`'s first round only
            time.sleep(seconds + (0.02 if interfered else 0.0))
        return run

    def broken() -> None:
        raise RuntimeError("device lost")
    timed = bench.interleaved({"a": make("a", 0.001), "b": make("b", 0.002), "c": broken}, budget_s=0.03,
                              rounds=3)
    firsts = [o for i, o in enumerate(order) if i == 0 or order[i - 1] != o]
    assert firsts[:4] == ["a", "b", "a", "b"]  # rounds alternate
    assert timed["a"].median_s < 0.015  # the slow first round of `a` is not the one kept
    assert timed["b"].median_s >= 0.002
    assert timed["c"] == "error: RuntimeError: device lost"
