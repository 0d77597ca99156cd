"""A new device (issue 12): device-aware defaults, reuse of other devices' results (the `transfer` rule),
first-call tuning, seeded and abandoning studies, the OpenCL binary cache."""

from __future__ import annotations

import pytest
from conftest import require

import backends
from autotune.core import devices
from autotune.core.problem import Problem
from backends.base import Device

P = Problem.make(2, 64, 8, 8, 64, 4, 4, stride=2, padding=1)


# ---- 1. device-aware defaults --------------------------------------------------------------------------------
def test_cpu_features_has_safe_values() -> None:
    f = devices.cpu_features()
    assert f["simd_bits"] in (128, 256, 512) and f["float_lanes"] == f["simd_bits"] // 32
    assert f["registers"] in (16, 32) and f["cores"] >= 1
    assert ("avx512f" in f["flags"]) == (f["simd_bits"] == 512)


def _fake_cl_device(kind: str, **info: int) -> Device:
    base = {"max_work_group_size": 4096, "local_mem_size": 1 << 20, "global_mem_size": 8 << 30,
            "max_mem_alloc_size": 2 << 30, "compute_units": 2, "fp64": True}
    return Device(id=f"{kind}-test-x-1c", name="test", kind=kind, info={**base, **info})


@pytest.mark.parametrize("width", [4, 8, 16])
def test_opencl_default_follows_the_preferred_vector_width(width: int) -> None:
    ocl = backends.get("opencl")
    dev = _fake_cl_device("cpu", preferred_vector_width_float=width)
    for op in ("forward", "backward_input", "backward_weight", "backward_bias"):
        cfg = ocl.default_config(op, P, dev)
        assert cfg["vec"] <= width, (op, cfg)
        assert ocl.space(op, P, dev).violation(cfg) is None


def test_opencl_default_no_16_wide_vectors_without_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    import backends.opencl as ocl_mod
    monkeypatch.setattr(ocl_mod, "cpu_features", lambda: {"float_lanes": 8, "registers": 16})
    dev = _fake_cl_device("cpu")  # reports no vector width: the CPU's ISA decides
    cfg = backends.get("opencl").default_config("forward", P, dev)
    assert cfg["vec"] == 8
    # half the 16 AVX2 registers hold accumulators
    assert cfg["co_block"] * cfg["tile_h"] * cfg["tile_w"] <= 8


def test_opencl_default_on_a_gpu_uses_its_width_and_work_groups() -> None:
    dev = _fake_cl_device("gpu", preferred_vector_width_float=1, max_work_group_size=1024)
    cfg = backends.get("opencl").default_config("forward", P, dev)
    assert cfg["vec"] == 1 and cfg["wg_x"] * cfg["wg_y"] >= 32


def test_opencl_real_device_default_matches_its_width() -> None:
    ocl = backends.get("opencl")
    ok, why = ocl.available()
    require(ok, f"the opencl backend ({why})")
    from backends.opencl import device_traits
    dev = ocl.devices()[0]
    assert backends.get("opencl").default_config("forward", P, dev)["vec"] <= device_traits(dev)["vec_width"]


def test_numpy_default_workspace_from_the_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    import backends.numpy as np_mod
    monkeypatch.setattr(np_mod, "cpu_features", lambda: {"l3_bytes": 128 << 20, "l2_bytes": 0, "cores": 4})
    assert np_mod.default_workspace_bytes() == 32 << 20
    monkeypatch.setattr(np_mod, "cpu_features", lambda: {"l3_bytes": 0, "l2_bytes": 0, "cores": 4})
    assert np_mod.default_workspace_bytes() == np_mod.DEFAULT_WORKSPACE_BYTES


# ---- 2. reuse of other devices' results ----------------------------------------------------------------------
def test_device_distance_orders_by_similarity() -> None:
    d = devices.device_distance
    assert d("cpu-amd-epyc-2c", "cpu-amd-epyc-2c") == 0
    assert d("cpu-amd-epyc-2c", "gpu-nvidia-h100-80gb") is None  # another kind: never
    same_vendor = d("cpu-amd-epyc-2c", "cpu-amd-epyc-8c", 8, 8)
    other_vendor = d("cpu-amd-epyc-2c", "cpu-intel-xeon-2c", 8, 8)
    assert same_vendor == 2.0 and other_vendor == devices.DISTANCE_VENDOR + devices.DISTANCE_MODEL
    # an AVX-512 part is further from an AVX2 one than an AVX2 one of the same model
    assert d("cpu-intel-xeon-2c", "cpu-intel-xeon-4c", 8, 16) > d("cpu-intel-xeon-2c", "cpu-intel-xeon-4c", 8, 8)
    assert d("gpu-nvidia-h100-80gb", "gpu-nvidia-a100-80gb") < d("gpu-nvidia-h100-80gb", "gpu-amd-mi300x-192gb")


OTHER = "cpu-faraway-model-2c"  # another CPU's results (vendor and model differ from any real one)
NEAR = "cpu-faraway-model-4c"




def _rows(device: str, p: Problem, backend: str, config: dict, time_s: float, op: str = "forward") -> list[dict]:
    from autotune.core import results
    from backends.base import config_json
    q = p.for_op(op)
    return [results.make_row(device_id=device, device_name="other cpu", backend=backend, op=op, problem=q,
                             config=config_json(config), status="ok", source="tune", time_s=time_s)]


def _append(directory, device: str, rows: list[dict]) -> None:
    from autotune.core import results
    results.append_rows(results.device_file(directory, device), rows)


Q = Problem.make(2, 8, 8, 8, 8, 4, 4, stride=2, padding=1)
# the numpy forward configs as validated (a recorded config without chunk and runs reads so)
COPIED = {"chunk": 0, "runs": "copied"}
COL2IM = {"algorithm": "col2im", "batch_block": 0, **COPIED}


def _numpy_forward_plan(name: str):
    """The numpy backend's forward study plan for Q on this CPU, with its space and default."""
    from autotune.tuner.plan import StudyPlan
    numpy = backends.get("numpy")
    dev = numpy.devices()[0]
    return StudyPlan("q", Q, "forward", numpy, dev, numpy.space("forward", Q, dev),
                     numpy.default_config("forward", Q, dev), name=name)


def test_transfer_uses_the_most_similar_devices_rows(dirs) -> None:
    import autotune
    from autotune.core.devices import cpu_device_id
    _, shipped = dirs
    _append(shipped, OTHER, _rows(OTHER, Q, "numpy", COL2IM, 1e-3))
    _append(shipped, NEAR, _rows(NEAR, Q, "numpy", {"algorithm": "phase", "batch_block": 1, **COPIED}, 1e-3))
    w = autotune.which(Q)
    assert w.device == cpu_device_id() and w.reason == "transfer"
    # both are equally unlike this CPU in vendor and model; NEAR's 4 cores are further from this CPU's count
    # unless this CPU has 4 cores: the most similar one decides
    best = min((OTHER, NEAR), key=lambda d: (devices.device_distance(cpu_device_id(), d), d))
    assert w.from_device == best and w.source.startswith(f"from {best}")
    assert any("[transfer]" in c for c in w.chain) and "[default]" in w.chain[1]


def test_transfer_revalidates_and_never_uses_an_invalid_config(dirs) -> None:
    import autotune
    _, shipped = dirs
    # batch_block 16 >= N=2 is not a point of this device's space for Q; an unknown algorithm neither
    _append(shipped, OTHER, _rows(OTHER, Q, "numpy", {"algorithm": "col2im", "batch_block": 16}, 1e-4)
            + _rows(OTHER, Q, "numpy", {"algorithm": "magic", "batch_block": 0}, 1e-5))
    w = autotune.which(Q)
    assert w.reason == "default"
    # a valid one behind them is used
    _append(shipped, NEAR, _rows(NEAR, Q, "numpy", COL2IM, 1e-3))
    from autotune import dispatch
    dispatch.clear_cache()
    w = autotune.which(Q)
    assert (w.reason, w.from_device, w.config) == ("transfer", NEAR, COL2IM)


def test_transfer_not_used_when_the_device_has_its_own_rows(dirs) -> None:
    import autotune
    from autotune.core.devices import cpu_device_id
    user, shipped = dirs
    _append(shipped, OTHER, _rows(OTHER, Q, "numpy", COL2IM, 1e-3))
    phase = {"algorithm": "phase", "batch_block": 0, **COPIED}
    _append(user, cpu_device_id(), _rows(cpu_device_id(), Q, "numpy", phase, 2e-3))
    assert autotune.which(Q).reason == "exact"


def test_which_cli_names_the_device(dirs, capsys) -> None:
    from autotune import cli
    from autotune.problems import load_problems
    _, shipped = dirs
    rgb = next(n.problem for n in load_problems() if n.name == "dcgan_rgb")
    _append(shipped, OTHER, _rows(OTHER, rgb, "numpy", {"algorithm": "phase", "batch_block": 0, **COPIED}, 1e-3))
    assert cli.main(["which", "--problem", "dcgan_rgb", "--op", "forward"]) == 0
    assert f"from {OTHER}" in capsys.readouterr().out


# ---- 3. first-call tuning ------------------------------------------------------------------------------------
class SlowBackend(backends.Backend):
    """numpy's answers after a known delay: `delay` milliseconds (default 20)."""

    name = "slow"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def devices(self) -> list[Device]:
        return [Device(id=devices.cpu_device_id(), name="slow cpu", kind="cpu")]

    def space(self, op: str, problem: Problem, device: Device) -> backends.Space:
        return backends.Space({"delay": (1, 20, 200)})

    def default_config(self, op: str, problem: Problem, device: Device) -> dict:
        return {"delay": 20}

    def prepare(self, op: str, problem: Problem, device: Device, config: dict):
        import time

        inner = backends.get("numpy").prepare(op, problem, device, backends.get("numpy").default_config(
            op, problem, device))

        def run(*inputs):
            time.sleep(config["delay"] / 1000)
            return inner(*inputs)
        return run


@pytest.fixture
def slow(monkeypatch, dirs):
    from autotune import dispatch, first_call
    instance = SlowBackend()
    real_names, real_get = backends.names, backends.get
    monkeypatch.setattr(backends, "names", lambda: ["slow", *real_names()])
    monkeypatch.setattr(backends, "get", lambda name: instance if name == "slow" else real_get(name))
    monkeypatch.delenv(first_call.ENV, raising=False)
    monkeypatch.delenv(first_call.BUDGET_ENV, raising=False)
    import autotune
    monkeypatch.setattr(autotune, "benchmark", None, raising=False)
    monkeypatch.setattr(autotune, "benchmark_budget_s", None, raising=False)
    dispatch.clear_cache()
    first_call.reset()
    yield dirs
    first_call.reset()
    dispatch.clear_cache()


def _call(p: Problem):
    import numpy as np

    import autotune
    rng = np.random.default_rng(0)
    x = rng.standard_normal(p.input_shape).astype(np.float32)
    w = rng.standard_normal(p.weight_shape).astype(np.float32)
    return autotune.conv_transpose2d(x, w, stride=p.stride, padding=p.padding)


def _first_call_rows(user):
    from autotune.core import results
    df = results.read_dirs([user])
    return df[df["source"] == "first-call"]


def test_first_call_is_off_by_default_and_warns_once(slow) -> None:
    import warnings
    user, _ = slow
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _call(Q)
        _call(Problem.make(1, 8, 8, 8, 8, 4, 4, stride=2, padding=1))
    untuned = [w for w in caught if "has no tuned results" in str(w.message)]
    assert len(untuned) == 1 and "autotune tune --preset suite" in str(untuned[0].message)
    assert _first_call_rows(user).empty


def test_first_call_environment_switch_is_read_once(slow, monkeypatch) -> None:
    import autotune
    from autotune import first_call
    monkeypatch.setenv(first_call.ENV, "1")
    assert first_call.enabled()
    monkeypatch.setenv(first_call.ENV, "0")
    assert first_call.enabled()  # kept from the first read
    monkeypatch.setattr(autotune, "benchmark", False)
    assert not first_call.enabled()  # the attribute switches at run time
    monkeypatch.setattr(autotune, "benchmark", None)
    first_call.reset()
    assert not first_call.enabled()


def test_first_call_times_records_and_uses_the_fastest(slow, monkeypatch) -> None:
    import autotune
    from autotune import dispatch
    user, shipped = slow
    # another device measured delay=1 as the best: a transferred candidate; slow's default is delay=20
    _append(shipped, OTHER, _rows(OTHER, Q, "slow", {"delay": 1}, 1e-3))
    monkeypatch.setattr(autotune, "benchmark", True)
    _call(Q)
    rows = _first_call_rows(user)
    assert set(rows["backend"]) >= {"slow", "numpy"}
    assert set(rows.loc[rows["backend"] == "slow", "config"]) == {'{"delay":1}', '{"delay":20}'}
    chain = dispatch.choices("forward", Q)
    fastest = rows.sort_values("time_s").iloc[0]
    assert chain[0].reason in ("first-call", "exact")  # "exact" once the table saw the new rows
    assert (chain[0].backend.name, chain[0].config_text) == (fastest["backend"], fastest["config"])
    # later processes find the rows: exact
    dispatch.clear_cache()
    assert autotune.which(Q).reason == "exact"


def test_first_call_times_priors_and_abandons_far_off_candidates(slow, monkeypatch) -> None:
    import autotune
    from autotune import dispatch
    user, shipped = slow
    _append(shipped, OTHER, _rows(OTHER, Q, "slow", {"delay": 1}, 1e-3))
    monkeypatch.setattr(SlowBackend, "seed_configs", lambda self, op, p, d: [{"delay": 200}])
    monkeypatch.setattr(autotune, "benchmark", True)
    _call(Q)
    rows = _first_call_rows(user)
    slow_rows = rows[rows["backend"] == "slow"]
    status = dict(zip(slow_rows["config"], slow_rows["status"]))
    # the measured candidate first; the default (20 ms) and the prior (200 ms) ran once, over 3x the 1 ms best
    assert status == {'{"delay":1}': "ok", '{"delay":20}': "abandoned", '{"delay":200}': "abandoned"}
    assert "over 3x the fastest" in slow_rows.loc[slow_rows["status"] == "abandoned", "reason"].iloc[0]
    assert dispatch.choices("forward", Q)[0].config_text != '{"delay":200}'


def test_first_call_skips_candidates_without_a_usable_time_once_another_is_timed(slow) -> None:
    import math
    import time

    import numpy as np

    from autotune import api, dispatch, first_call
    from autotune.core.devices import cpu_device_id
    user, _ = slow
    instance = backends.get("slow")
    dev = instance.devices()[0]
    q = Q.for_op("forward")
    chain = [dispatch.Choice(instance, dev, {"delay": 200}, "transfer", "forward", q, "old kernel-only row", math.inf),
             dispatch.Choice(instance, dev, {"delay": 1}, "transfer", "forward", q, "a measured call", 1e-3)]
    rng = np.random.default_rng(0)
    arrays = (rng.standard_normal(q.input_shape).astype(np.float32),
              rng.standard_normal(q.weight_shape).astype(np.float32), None)
    start = time.perf_counter()
    timed = first_call.tune("forward", chain, arrays, cpu_device_id(), dispatch.table(cpu_device_id()), 5.0,
                            api._convert)
    assert time.perf_counter() - start < 1.0  # the 200 ms config never ran, though the budget was 5 s
    assert {c.config_text for c, _ in timed} >= {'{"delay":1}'}
    assert '{"delay":200}' not in set(_first_call_rows(user)["config"])


def test_first_call_runs_once_per_key(slow, monkeypatch) -> None:
    import autotune
    user, _ = slow
    monkeypatch.setattr(autotune, "benchmark", True)
    _call(Q)
    n = len(_first_call_rows(user))
    _call(Q)
    assert n > 0 and len(_first_call_rows(user)) == n


def test_first_call_respects_its_budget(slow, monkeypatch) -> None:
    import time

    user, shipped = slow
    # three slow candidates of 200 ms each: with a 0.1 s budget at most the first starts
    _append(shipped, OTHER, _rows(OTHER, Q, "slow", {"delay": 200}, 1e-3)
            + _rows(OTHER, Q, "numpy", {"algorithm": "col2im", "batch_block": 0, **COPIED}, 2e-3))
    monkeypatch.setenv("AUTOTUNE_BENCHMARK", "1")
    monkeypatch.setenv("AUTOTUNE_BENCHMARK_BUDGET_S", "0.1")
    start = time.perf_counter()
    _call(Q)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.1 + 2 * 0.2 + 0.5  # the budget, plus one candidate's untimed run and a timed one
    assert len(_first_call_rows(user)) <= 2


def test_first_call_not_inside_torch_compile(slow, monkeypatch) -> None:
    import sys
    import types

    import autotune
    user, _ = slow
    fake_torch = types.SimpleNamespace(compiler=types.SimpleNamespace(is_compiling=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr(autotune, "benchmark", True)
    _call(Q)
    assert _first_call_rows(user).empty


# ---- 4. seeded and abandoning studies ------------------------------------------------------------------------
def test_timing_abandons_a_slow_first_repetition() -> None:
    import time

    from autotune.core.timing import measure
    calls = []

    def run() -> None:
        calls.append(1)
        time.sleep(0.02)
    t = measure(run, budget_s=1.0, warmup=0, abandon_above_s=0.005)
    assert t.abandoned and t.reps == 1 and len(calls) == 1
    assert not measure(lambda: 1e-3, budget_s=0.01, abandon_above_s=0.1).abandoned


def test_abandoned_is_a_results_status() -> None:
    from autotune.core import results
    assert "abandoned" in results.STATUSES


def test_seeded_study_starts_with_the_seeds(dirs) -> None:
    import optuna

    from autotune.core.devices import cpu_device_id
    from autotune.tuner.study import open_study, seeds
    user, shipped = dirs
    here = cpu_device_id()
    near = Problem.make(4, 8, 8, 8, 8, 4, 4, stride=2, padding=1)  # another problem tuned on this device
    _append(user, here, _rows(here, near, "numpy", {"algorithm": "col2im", "batch_block": 2, **COPIED}, 1e-3))
    _append(shipped, OTHER, _rows(OTHER, Q, "numpy", {"algorithm": "col2im", "batch_block": 1, **COPIED}, 1e-3))
    plan = _numpy_forward_plan("seed-test")
    found = seeds(plan, [user, shipped])
    # batch_block 2 >= N=2 is not valid for Q: the nearest problem's winner is re-validated away
    assert found == [{"algorithm": "col2im", "batch_block": 1, **COPIED}]
    study = open_study(plan, optuna.storages.InMemoryStorage(), "tpe", 0, [user, shipped])
    first = []
    for _ in range(2):
        trial = study.ask()
        first.append({n: trial.suggest_categorical(n, list(v)) for n, v in plan.space.params.items()})
    assert first == [plan.default, found[0]]


def test_seeds_start_with_the_config_that_is_near_best_on_several_problems(dirs) -> None:
    from autotune.core.devices import cpu_device_id
    from autotune.tuner.study import seeds
    user, shipped = dirs
    here = cpu_device_id()
    phase, col0 = {"algorithm": "phase", "batch_block": 0, **COPIED}, COL2IM
    col1 = {"algorithm": "col2im", "batch_block": 1, **COPIED}
    a = Problem.make(4, 8, 8, 8, 8, 4, 4, stride=2, padding=1)
    b = Problem.make(4, 16, 8, 8, 16, 4, 4, stride=2, padding=1)
    # col2im with batch_block 1 never wins, but is within 5% on both; phase (Q's default) wins b
    _append(user, here, _rows(here, a, "numpy", col0, 1.0e-3) + _rows(here, a, "numpy", col1, 1.05e-3)
            + _rows(here, b, "numpy", phase, 1.0e-3) + _rows(here, b, "numpy", col1, 1.02e-3)
            + _rows(here, b, "numpy", col0, 3.0e-3))
    plan = _numpy_forward_plan("portable-test")
    assert plan.default == phase
    # the portable config (measured on both, best mean speed) first, then the nearest problems' winners
    assert seeds(plan, [user, shipped]) == [col1, col0]


def test_backend_seed_configs_join_the_seeds_when_valid(dirs, monkeypatch) -> None:
    from autotune.tuner.study import seeds
    numpy = backends.get("numpy")
    invalid = {"algorithm": "blocks", "batch_block": 0}  # Q has more than one tap per pixel: not in its space
    valid = {"algorithm": "col2im", "batch_block": 1, **COPIED}
    monkeypatch.setattr(type(numpy), "seed_configs", lambda self, op, p, d: [invalid, valid])
    plan = _numpy_forward_plan("backend-seed-test")
    assert seeds(plan, list(dirs)) == [valid]


def test_seeds_start_with_this_problems_winners_in_results_the_study_does_not_write(dirs) -> None:
    from autotune.core.devices import cpu_device_id
    from autotune.tuner.study import seeds
    user, shipped = dirs
    here = cpu_device_id()
    best, second = {"algorithm": "col2im", "batch_block": 1, **COPIED}, COL2IM
    _append(shipped, here, _rows(here, Q, "numpy", second, 2e-3) + _rows(here, Q, "numpy", best, 1e-3))
    plan = _numpy_forward_plan("same-problem-seed-test")
    # tuning into the user's directory: the shipped measurements of this very problem here come first, fastest first
    assert seeds(plan, [user, shipped]) == [best, second]
    # tuning into the shipped directory itself: those rows are the study's own trials, not priors
    assert seeds(plan, [shipped]) == []


def test_opencl_seeds_its_cpu_forward_prior() -> None:
    from autotune.tuner.plan import StudyPlan
    from autotune.tuner.study import seeds
    opencl = backends.get("opencl")
    if not opencl.available()[0]:
        pytest.skip(f"opencl: {opencl.available()[1]}")
    dev = next(d for d in opencl.devices() if d.kind == "cpu")
    plan = StudyPlan("p", P, "forward", opencl, dev, opencl.space("forward", P, dev),
                     opencl.default_config("forward", P, dev), name="opencl-seed-test")
    prior = opencl.seed_configs("forward", P, dev)
    assert prior and all(c in seeds(plan, []) for c in prior)
    assert opencl.seed_configs("backward_input", P, dev) == []
