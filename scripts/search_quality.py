#!/usr/bin/env python
"""Search quality: how many trials TPE needs to come within 5% of the exhaustive grid's best.

1. Runs `autotune tune --sampler grid` (every point of every space: the exhaustive baseline) on a few suite
   problems per backend, through the tuner itself, into a results directory (kept, so a rerun resumes).
2. Replays TPE (and random search, for reference) against the grid's measurements, many seeds per study, exactly
   as the tuner samples: the default config enqueued first, constraint-pruned points and repeats free, failed
   configs recorded as pruned. This is Kernel Tuner's "simulation mode": it isolates the search from timing noise
   (each sampler sees the same numbers) and lets us average over seeds at no device cost.
3. Prints, per study: grid points measured, the grid's best and the default (tuned vs default speed-up), and the
   trials (measured configs, as `--trials` counts) TPE needed to reach 5% of the best: median and 75th percentile
   over seeds; and the share of studies where TPE's median is at most a quarter of the grid's trials.

Usage: .venv/bin/python scripts/search_quality.py [--backends numpy] [--only NAME...] [--ops OP...]
       [--seeds 20] [--results DIR] [--timing-budget S] [--restricted] [--replay-only] [--markdown]

--pool (issue 12's metric, on the full OpenCL spaces, too large for a grid): per study, 100 random valid configs
(plus the default and the tuner's seeds) are measured once into a CSV (--csv, resumed by a rerun); samplers are
then replayed over that finite pool: (best time after K measured configs) / (best of the random pool), K = 5, 10,
20, median over seeds and then over studies, for seeded TPE (default + `tuner.study.seeds`), seeded TPE on a device
whose other pooled layers are tuned (`seeded-loo`: the seeds computed with the other studies' measurements as this
device's results, never the study's own; seeds outside the pool are measured and appended as `extra`), plain TPE
(default enqueued, as the tuner without seeds) and random search (uniform over the pool). Usage:
       .venv/bin/python scripts/search_quality.py --pool [--backend opencl] [--only NAME...] [--ops OP...]
       [--size 100] [--seeds 20] [--timing-budget 0.05] [--csv PATH] [--replay-only] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autotune.core import allocator, results  # noqa: E402
from autotune.problems import load_problems, select  # noqa: E402
from autotune.tuner import TuneOptions, make_sampler, tune  # noqa: E402

DEFAULT_PROBLEMS = ["dcgan_rgb", "depthwise_up", "dilated_up", "odd_shapes"]
DEFAULT_OPS = ["forward", "backward_input", "backward_weight"]
WITHIN = 1.05


# --restricted: spaces too large for an exhaustive grid on a small machine (OpenCL: ~10^4 feasible points per
# study) are cut to a sub-space by fixing these parameters at the backend's default; the search question is then
# asked on that sub-space, exhaustively measured.
FIXED = {"forward": ("wg_x", "wg_y", "local", "algorithm", "co_block", "vec_axis"),
         "backward_input": ("wg_x", "wg_y", "local", "algorithm", "co_block"),
         "backward_weight": ("wg_x", "wg_y", "split"), "backward_bias": ()}
RESTRICTED_ENV = "SEARCH_QUALITY_BASE"


class Restricted:
    """A backend that is `$SEARCH_QUALITY_BASE` with some parameters fixed at its default (see FIXED);
    registered as an `autotune.backends` entry point (register_restricted), so its trials run in the tuner's
    workers too."""

    def __new__(cls) -> object:
        import backends
        from backends.base import Backend, Space

        base = backends.get(os.environ[RESTRICTED_ENV])

        class _Restricted(type(base)):  # type: ignore[misc]
            def space(self, op: str, problem: object, device: object) -> Space:
                full = super().space(op, problem, device)
                default = base.default_config(op, problem, device)  # the unrestricted backend's own default
                return Space({k: (default[k],) if k in FIXED[op] else v for k, v in full.params.items()},
                             full.constraints)

        obj = _Restricted()
        assert isinstance(obj, Backend)
        return obj


@dataclass
class GridStudy:
    """One exhaustively measured study, rebuilt from its rows alone (so a replay does not depend on the backend's
    code still producing the same space): every recorded config with its time (None: failed) or pruned."""

    backend: str
    op: str
    problem: str
    params: dict[str, tuple]
    times: dict[str, float | None]
    pruned: set[str]
    default: dict[str, object]

    @property
    def best(self) -> float | None:
        ok = [t for t in self.times.values() if t is not None]
        return min(ok) if ok else None


def grid_studies(results_dir: Path) -> list[GridStudy]:
    df = pd.concat([results.read_file(f) for f in sorted(Path(results_dir).glob("*.csv"))], ignore_index=True)
    out = []
    for (backend, op, problem), g in df.groupby(["backend", "op", "problem"], sort=False):
        g = g[g["study"] == g["study"].value_counts().idxmax()]  # the fullest grid if the space ever changed
        configs = [json.loads(c) for c in g["config"]]
        params = {k: tuple(sorted({c[k] for c in configs}, key=lambda v: (isinstance(v, str), v)))
                  for k in configs[0]}
        times: dict[str, float | None] = {}
        pruned: set[str] = set()
        for r in g.itertuples():
            if r.status == "ok":
                times[r.config] = min(times.get(r.config) or math.inf, float(r.time_s))
            elif r.status == "pruned":
                pruned.add(r.config)
            else:
                times.setdefault(r.config, None)
        defaults = g[pd.to_numeric(g["is_default"]) == 1]
        if not len(defaults):
            continue
        out.append(GridStudy(backend, op, problem, params, times, pruned, json.loads(defaults["config"].iloc[0])))
    return out


def replay(grid: GridStudy, sampler: str, seed: int, target: float) -> int | None:
    """Measured trials until the best so far is <= target, sampling as the tuner does; None if never."""
    from backends.base import Space, config_json
    measured, best = 0, math.inf
    seen: dict[str, float | None] = {}
    space = Space(dict(grid.params))
    study = optuna.create_study(direction="minimize", sampler=make_sampler(sampler, space, seed))
    study.enqueue_trial(grid.default)
    for _ in range(4 * len(grid.times) + 50):
        trial = study.ask()
        config = {k: trial.suggest_categorical(k, list(v)) for k, v in grid.params.items()}
        key = config_json(config)
        if key in seen:
            value = seen[key]
        elif key not in grid.times:  # pruned by a constraint: free
            value = seen[key] = None
        else:
            measured += 1
            value = seen[key] = grid.times[key]
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
            best = min(best, value)
        if best <= target:
            return measured
        if measured >= len(grid.times):
            return None
    return None


def register_restricted(base: str) -> str:
    """Register `Restricted` over backend `base` through the registry's one external route, an entry point:
    its metadata goes into a temporary directory put on sys.path and on PYTHONPATH (for the tuner's worker
    subprocesses), with this scripts folder for the `search_quality` module. Returns the backend's name."""
    import backends

    name = f"{base}_restricted"
    os.environ[RESTRICTED_ENV] = base
    directory = Path(tempfile.mkdtemp(prefix="search-quality-plugin-"))
    info = directory / "search_quality_restricted-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: search-quality-restricted\nVersion: 0\n")
    entry = f"{name} = search_quality:Restricted"
    (info / "entry_points.txt").write_text(f"[{backends.ENTRY_POINT_GROUP}]\n{entry}\n")
    paths = [str(directory), str(Path(__file__).resolve().parent)]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")]))
    sys.path[:0] = paths
    backends.clear_cache()  # the registry read the entry points before the new ones were on the path
    return name


def markdown(table: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


# ---- --pool: search quality on the full spaces, against a measured pool of random configs ---------------------------
POOL_PROBLEMS = ["fcn_score_up2", "odd_shapes", "dilated_up", "dcgan_rgb"]
POOL_OPS = ["forward", "backward_input"]
POOL_KS = (5, 10, 20)
POOL_FIELDS = ["problem", "op", "kind", "config", "time_s"]
# seeded: the tuner's seeds from the results as they are (measured with the pool); seeded-loo: the seeds on a
# device whose other pooled layers are tuned (leave_one_out_seeds); tpe: the default alone; random: the pool's order
HOWS = ("seeded", "seeded-loo", "tpe", "random")


def _pool_plan(name: str, nproblem: object, op: str, backend: object, device: object) -> object:
    from autotune.tuner.plan import StudyPlan
    p = nproblem.for_op(op)  # type: ignore[attr-defined]
    return StudyPlan(name, p, op, backend, device, backend.space(op, p, device),  # type: ignore[attr-defined]
                     backend.default_config(op, p, device))  # type: ignore[attr-defined]


def measure_pool(csv_path: Path, names: list[str], ops: list[str], size: int, budget_s: float, backend_name: str,
                 say: object = print) -> None:
    """Measure, once, `size` random valid configs of each (problem, op) on the backend's first device, plus its
    default and the tuner's seeds (`tuner.study.seeds`); one CSV row per config, appended as measured, so a rerun
    resumes and replays read the file alone. A config that fails to build or run is recorded with no time."""
    import csv

    import backends
    from autotune.core import verify
    from autotune.tuner.study import seeds as study_seeds
    from backends.base import config_json

    backend = backends.get(backend_name)
    device = backend.devices()[0]
    done: set[tuple[str, str, str, str]] = set()
    if csv_path.exists():
        with csv_path.open(newline="") as f:
            done = {(r["problem"], r["op"], r["kind"], r["config"]) for r in csv.DictReader(f)}
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as f:
        out = csv.DictWriter(f, POOL_FIELDS)
        if new:
            out.writeheader()
        for named in select(load_problems(), names):
            for op in ops:
                plan = _pool_plan(named.name, named.problem, op, backend, device)
                todo = [("default", plan.default)] + [("seed", c) for c in study_seeds(plan)]  # type: ignore
                todo += [("random", c) for c in verify.sample_configs(plan.space, size, seed=0)]  # type: ignore
                for kind, config in todo:
                    text = config_json(config)
                    if (named.name, op, kind, text) in done:
                        continue
                    value, error = _measure(backend, device, named.problem.for_op(op), op, config, budget_s)
                    if error:
                        say(f"  {named.name} {op} {text}: {error}")  # type: ignore[operator]
                    out.writerow({"problem": named.name, "op": op, "kind": kind, "config": text, "time_s": value})
                    f.flush()
                    done.add((named.name, op, kind, text))
                say(f"measured {named.name} {op}")  # type: ignore[operator]


@dataclass
class Pool:
    problem: str
    op: str
    configs: list[dict]  # every measured config (random pool, default, seeds), in file order
    times: dict[str, float | None]
    random_best: float  # best of the random pool alone: the reference
    default: dict
    seeds: list[dict]
    random_keys: list[str]


def read_pools(csv_path: Path) -> list[Pool]:
    df = pd.read_csv(csv_path, dtype={"config": str})
    pools = []
    for (problem, op), g in df.groupby(["problem", "op"], sort=False):
        times: dict[str, float | None] = {}
        configs, seeds, random_keys, default = [], [], [], None
        for r in g.itertuples():
            t = float(r.time_s) if pd.notna(r.time_s) else None
            if r.config not in times:
                configs.append(json.loads(r.config))
            times[r.config] = t
            if r.kind == "default":
                default = json.loads(r.config)
            elif r.kind == "seed":
                seeds.append(json.loads(r.config))
            elif r.kind == "random":
                random_keys.append(r.config)
        ok = [times[k] for k in random_keys if times[k] is not None]
        if default is None or not ok:
            continue
        pools.append(Pool(problem, op, configs, times, min(ok), default, seeds, random_keys))  # type: ignore
    return pools


def _measure(backend: object, device: object, problem: object, op: str, config: dict,
             budget_s: float) -> tuple[str, str]:
    """One config's median time as a CSV field, and "" (or "", why it failed to build or run)."""
    from autotune.core import timing, verify
    try:
        kernel = backend.prepare(op, problem, device, config)  # type: ignore[attr-defined]
        inputs = verify.make_inputs(op, problem)[0]  # type: ignore[arg-type]
        run = backend.runner(kernel, inputs, device)  # type: ignore[attr-defined]
        return f"{timing.measure(run, budget_s=budget_s).median_s:.9g}", ""
    except Exception as e:  # noqa: BLE001 - a config that fails is a data point, not a stop
        return "", f"{type(e).__name__}: {str(e)[:100]}"


def leave_one_out_seeds(pools: list[Pool], named: dict[str, object], backend: object, device: object,
                        csv_path: Path, budget_s: float) -> dict[tuple[str, str], list[dict]]:
    """Per study, the tuner's seeds (`tuner.study.seeds`) on a device whose *other* pooled layers are tuned: this
    device's rows are the shipped ones plus every measurement of the other studies of the same op (as `tune` rows
    in a temporary results directory read first), never the study's own. Seeds absent from the study's pool are
    measured once and appended to the CSV as kind `extra` (pool.times gets them; they never join the random
    pool)."""
    import csv

    from autotune import dispatch
    from autotune.tuner.study import seeds as study_seeds
    from backends.base import config_json

    out: dict[tuple[str, str], list[dict]] = {}
    for pool in pools:
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for other in pools:
                if other.op != pool.op or other.problem == pool.problem:
                    continue
                q = named[other.problem].problem.for_op(other.op)  # type: ignore[attr-defined]
                rows += [results.make_row(device_id=device.id, device_name=device.name,  # type: ignore[attr-defined]
                                          backend=backend.name, op=other.op, problem=q,  # type: ignore[attr-defined]
                                          config=key, status="ok", source="tune", time_s=t)
                         for key, t in other.times.items() if t is not None]
            results.append_rows(results.device_file(tmp, device.id), rows)  # type: ignore[attr-defined]
            plan = _pool_plan(pool.problem, named[pool.problem].problem, pool.op, backend, device)
            found = study_seeds(plan, [Path(tmp), *dispatch.default_results_dirs()])  # type: ignore[arg-type]
        for config in found:
            key = config_json(config)
            if key not in pool.times:
                q = named[pool.problem].problem.for_op(pool.op)  # type: ignore[attr-defined]
                value, _ = _measure(backend, device, q, pool.op, config, budget_s)
                with csv_path.open("a", newline="") as f:
                    csv.DictWriter(f, POOL_FIELDS).writerow({"problem": pool.problem, "op": pool.op, "kind": "extra",
                                                             "config": key, "time_s": value})
                pool.configs.append(config)
                pool.times[key] = float(value) if value else None
        out[(pool.problem, pool.op)] = found
    return out


def replay_pool(pool: Pool, params: dict[str, tuple], how: str, seed: int, k_max: int,
                seeds: list[dict] | None = None) -> list[float]:
    """Best time after each of the first `k_max` measured configs. `random`: a uniform random order of the random
    pool. `tpe`/`seeded`: Optuna TPE as the tuner makes it, over the full space's parameters, the default enqueued
    first (`seeded`: then the tuner's seeds, or `seeds`); each suggestion is projected onto the nearest (fewest
    differing parameters, ties at random) pool config not yet measured, and the sampler is told that config's time,
    so every trial measures one new config of the pool. A failed config is told as failed."""
    import random as _random

    from backends.base import Space, config_json
    rng = _random.Random(seed)
    if how == "random":
        order = list(pool.random_keys)
        rng.shuffle(order)
        out, best = [], math.inf
        for key in order[:k_max]:
            t = pool.times[key]
            best = min(best, t) if t is not None else best
            out.append(best)
        return out
    dists = {k: optuna.distributions.CategoricalDistribution(list(v)) for k, v in params.items()}
    study = optuna.create_study(direction="minimize", sampler=make_sampler("tpe", Space(dict(params)), seed))
    for c in [pool.default] + ((pool.seeds if seeds is None else seeds) if how.startswith("seeded") else []):
        study.enqueue_trial(c)
    remaining = {config_json(c): c for c in pool.configs}
    out, best = [], math.inf
    while len(out) < min(k_max, len(pool.configs)):
        trial = study.ask()
        asked = {k: trial.suggest_categorical(k, list(v)) for k, v in params.items()}
        key = config_json(asked)
        if key not in remaining:
            near = min(remaining.values(), key=lambda c: (sum(c[p] != asked[p] for p in params), rng.random()))
            key = config_json(near)
        config = remaining.pop(key)
        t = pool.times[key]
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        study.add_trial(optuna.trial.create_trial(params=config, distributions=dists, value=t,
                                                  state=optuna.trial.TrialState.COMPLETE if t is not None
                                                  else optuna.trial.TrialState.FAIL))
        best = min(best, t) if t is not None else best
        out.append(best)
    return out


def pool_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="search quality against a measured pool of random configs (--pool)")
    ap.add_argument("--pool", action="store_true")
    ap.add_argument("--backend", default="opencl")
    ap.add_argument("--only", nargs="+", default=POOL_PROBLEMS)
    ap.add_argument("--ops", nargs="+", default=POOL_OPS)
    ap.add_argument("--size", type=int, default=100, help="random configs measured per study")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--timing-budget", type=float, default=0.05)
    ap.add_argument("--csv", default="/tmp/autotune-search-pool.csv", help="pool measurements (kept: resumes)")
    ap.add_argument("--replay-only", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    csv_path = Path(args.csv)
    if not args.replay_only:
        print(f"# {allocator.timing_malloc(False)}")  # as `autotune tune` times
        measure_pool(csv_path, args.only, args.ops, args.size, args.timing_budget, args.backend,
                     say=lambda s: print(s, file=sys.stderr, flush=True))
    import backends
    backend = backends.get(args.backend)
    device = backend.devices()[0]
    named = {n.name: n for n in select(load_problems(), args.only)}
    pools = [p for p in read_pools(csv_path) if p.problem in named and p.op in args.ops]
    loo = leave_one_out_seeds(pools, named, backend, device, csv_path, args.timing_budget)
    rows = []
    for pool in pools:
        plan = _pool_plan(pool.problem, named[pool.problem].problem, pool.op, backend, device)
        params = dict(plan.space.params)  # type: ignore[attr-defined]
        entry: dict[str, object] = {"problem": pool.problem, "op": pool.op, "pool": len(pool.random_keys),
                                    "seeds": len(pool.seeds), "loo_seeds": len(loo[(pool.problem, pool.op)]),
                                    "pool_best_ms": pool.random_best * 1e3}
        default = pool.times.get(json.dumps(pool.default, sort_keys=True, separators=(",", ":")))
        entry["default/best"] = default / pool.random_best if default else float("nan")
        for how in HOWS:
            curves = [replay_pool(pool, params, how, s, max(POOL_KS),
                                  loo[(pool.problem, pool.op)] if how == "seeded-loo" else None)
                      for s in range(args.seeds)]
            for k in POOL_KS:
                ratios = [c[min(k, len(c)) - 1] / pool.random_best for c in curves]
                entry[f"{how}@{k}"] = statistics.median(ratios)
        rows.append(entry)
    table = pd.DataFrame(rows)
    print(markdown(table) if args.markdown else table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if len(table):
        print(f"\nmedian over {len(table)} studies of (best after K) / (best of the {args.size}-config random pool), "
              f"each study's value the median over {args.seeds} seeds (target: seeded@10 <= 1/0.95 = 1.053):")
        for how in HOWS:
            print(f"  {how:10s} " + "  ".join(f"K={k}: {statistics.median(table[f'{how}@{k}']):.3f}"
                                             for k in POOL_KS))
    return 0


def main() -> int:
    if "--pool" in sys.argv[1:]:
        return pool_main(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", nargs="+", default=["numpy"])
    ap.add_argument("--only", nargs="+", default=DEFAULT_PROBLEMS)
    ap.add_argument("--ops", nargs="+", default=DEFAULT_OPS)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--results", default="/tmp/autotune-search-quality")
    ap.add_argument("--timing-budget", type=float, default=0.3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--replay-only", action="store_true", help="do not measure: replay the grid already in --results")
    ap.add_argument("--restricted", action="store_true", help="fix some parameters at their default (FIXED): "
                    "for spaces too large to measure exhaustively here")
    args = ap.parse_args()
    if args.restricted:
        if len(args.backends) != 1:
            ap.error("--restricted takes one backend")
        args.backends = [register_restricted(args.backends[0])]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    if not args.replay_only:
        allocator.keep_freed_memory()  # as `autotune tune` times
        options = TuneOptions(problems=select(load_problems(), args.only), results=Path(args.results),
                              ops=tuple(args.ops), backends=args.backends, trials=10**6, sampler="grid", seed=0,
                              timing_budget_s=args.timing_budget)
        tune(options)  # the exhaustive baseline (resumes if the directory already holds it)
    names = {n.problem.for_op(op).key: n.name for n in select(load_problems(), args.only) for op in args.ops}
    rows = []
    for grid in grid_studies(Path(args.results)):
        if grid.backend not in args.backends or grid.op not in args.ops or grid.problem not in names:
            continue
        best = grid.best
        if best is None:
            continue
        default = grid.times.get(json.dumps(grid.default, sort_keys=True, separators=(",", ":")))
        entry = {"backend": grid.backend, "op": grid.op, "problem": names[grid.problem],
                 "grid_trials": len(grid.times), "best_ms": best * 1e3,
                 "speedup_vs_default": (default / best) if default else float("nan")}
        for sampler in ("tpe", "random"):
            counts = [replay(grid, sampler, seed, WITHIN * best) for seed in range(args.seeds)]
            found = sorted(c if c is not None else math.inf for c in counts)
            entry[f"{sampler}_median"] = statistics.median(found)
            entry[f"{sampler}_p75"] = found[int(0.75 * (len(found) - 1))]
        entry["tpe_within_quarter"] = entry["tpe_median"] <= len(grid.times) / 4
        rows.append(entry)
    table = pd.DataFrame(rows)
    share = table["tpe_within_quarter"].mean() if len(table) else float("nan")
    if args.markdown:
        print(markdown(table))
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\nTPE within 5% of the grid's best using at most a quarter of the grid's trials (median over "
          f"{args.seeds} seeds): {share:.0%} of {len(table)} studies (target: at least 75%)")
    print("tuned vs default speed-up (geometric mean) per backend and op:")
    for (backend, op), g in table.groupby(["backend", "op"]):
        s = g["speedup_vs_default"].dropna()
        gm = math.exp(sum(math.log(v) for v in s) / len(s)) if len(s) else float("nan")
        print(f"  {backend:8s} {op:16s} {gm:.2f}x over {len(s)} problems (max {s.max():.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
