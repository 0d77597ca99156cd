"""Benchmarks: every available backend side by side with PyTorch's own CPU `conv_transpose2d` (and its
backward ops: `aten.convolution_backward`, which autograd calls, for the input and weight gradients, and
`grad_output.sum((0, 2, 3))` for the bias gradient), timed in the same run, per problem and op.

Each backend runs its default config, the best config recorded in the results (`--configs tuned`), or the best
of a search over its space done right here (`--configs grid`, at most `--max-configs` valid configs). Beside them,
the `dispatch` column times what a plain `autotune.conv_transpose2d` call runs (dispatch's first candidate with the
results in place, on the host arrays a user passes: staging included), and the `torch` backend (PyTorch's kernels,
tuned like the others) is shown apart from PyTorch's default call, the `torch` baseline.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import backends
from autotune.core import reference, results, verify
from autotune.core.devices import cpu_device_id, cpu_device_name
from autotune.core.errors import UserError
from autotune.core.problem import Problem
from autotune.core.timing import Timing, current_threads, load_average, measure
from autotune.problems import NamedProblem
from backends import Target
from backends.base import Backend, Config, Device, config_json


# ---- PyTorch baseline -----------------------------------------------------------------------------------------
def _torch() -> Any:  # the torch module, or None
    try:
        import torch
        return torch
    except ImportError:
        return None


def torch_version() -> str | None:
    torch = _torch()
    return None if torch is None else str(torch.__version__)


def torch_runner(op: str, p: Problem, inputs: tuple) -> Any:
    """A zero-argument callable running PyTorch's CPU op, or None if torch is missing or cannot express `p`."""
    torch = _torch()
    pad = p.symmetric_padding
    if torch is None or pad is None or p.dtype not in ("float32", "float64"):
        return None
    t: list[Any] = [None if a is None else torch.from_numpy(a) for a in inputs]
    if op == "forward":
        x, w, b = t

        def fwd() -> None:
            with torch.no_grad():
                torch.nn.functional.conv_transpose2d(x, w, b, p.stride, pad, p.output_padding, p.groups, p.dilation)
        return fwd
    gy = t[0]
    if op == "backward_bias":
        # What a bias gradient costs in torch: a reduction. (aten.convolution_backward with only the bias in its
        # output mask took 200x longer here: it does the convolution's work too, which would flatter us.)
        def bias_grad() -> None:
            gy.sum((0, 2, 3))
        return bias_grad
    x = t[1] if op == "backward_weight" else torch.zeros(p.input_shape, dtype=gy.dtype)
    w = t[1] if op == "backward_input" else torch.zeros(p.weight_shape, dtype=gy.dtype)
    mask = [op == "backward_input", op == "backward_weight", False]

    def bwd() -> None:
        torch.ops.aten.convolution_backward(gy, x, w, [p.C_out], list(p.stride), list(pad), list(p.dilation),
                                            True, list(p.output_padding), p.groups, mask)
    return bwd


# ---- the device's peak: a BLAS sgemm (CPU) or a matmul (GPU), recorded as a baseline row ----------------------
PEAK_SIZE = 512
PEAK_BACKEND = "blas"


def peak_problem(n: int = PEAK_SIZE) -> Problem:
    """An n x n x n sgemm as a problem: a 1x1 transposed convolution with C_in = C_out = n over n pixels, so that
    `Problem.flops('forward')` is the sgemm's 2 n^3 and the row fits the results schema."""
    h = 1 << ((n.bit_length() - 1) // 2)
    return Problem.make(1, n, h, n // h, n, 1, 1)


def measure_peak(budget_s: float, n: int = PEAK_SIZE) -> Timing:
    """This CPU's BLAS sgemm rate: NumPy's float32 n x n matmul (the BLAS the numpy backend uses)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)

    def sgemm() -> None:
        np.matmul(a, b, out=out)
    t = interleaved({"sgemm": sgemm}, budget_s)["sgemm"]
    assert not isinstance(t, str), t  # a matmul of NumPy's own arrays does not fail
    return t


# ---- configs ---------------------------------------------------------------------------------------------------
def tuned_config(rows: pd.DataFrame, backend: Backend, op: str, p: Problem, device: Device) -> Config | None:
    """The fastest valid `ok` config recorded for (device, backend, op, problem), or None."""
    if rows.empty:
        return None
    key = p.for_op(op).key
    mine = rows[(rows.device == device.id) & (rows.backend == backend.name) & (rows.op == op) & (rows.problem == key)
                & (rows.status == "ok")].sort_values("time_s")
    space = backend.space(op, p, device)
    for text in mine.config:
        try:
            return space.validate(json.loads(text))
        except (ValueError, TypeError):
            continue
    return None


def candidate_configs(mode: str, max_configs: int, rows: pd.DataFrame, backend: Backend, op: str, p: Problem,
                      device: Device) -> list[Config]:
    space = backend.space(op, p, device)
    default = space.validate(backend.default_config(op, p, device))
    if mode == "tuned":
        return [tuned_config(rows, backend, op, p, device) or default]
    if mode == "grid":
        valid = [c for c in space.grid() if space.violation(c) is None]
        if len(valid) > max_configs:
            rng = np.random.default_rng(0)
            valid = [valid[i] for i in sorted(rng.choice(len(valid), max_configs, replace=False))]
        return [default] + [c for c in valid if c != default]
    return [default]


# ---- the run ---------------------------------------------------------------------------------------------------
DISPATCH = "dispatch"  # the column of what a plain call runs (never recorded: it is not a backend)
TORCH_BACKEND_LABEL = "torch (backend)"  # the torch backend's column, apart from the `torch` baseline
def _row(name: str, op: str, p: Problem, backend: str, device: str, config: str, t: Timing | None, status: str,
         err: float | None = None, threads: int | None = None, device_time_s: float | None = None) -> dict[str, Any]:
    return {"problem_name": name, "op": op, "backend": backend, "device": device, "config": config, "status": status,
            "time_s": t.median_s if t else math.nan, "time_min_s": t.min_s if t else math.nan,
            "time_max_s": t.max_s if t else math.nan, "reps": t.reps if t else 0,
            "device_time_s": math.nan if device_time_s is None else device_time_s,
            "gflops": p.flops(op) / t.median_s / 1e9 if t else math.nan, "max_abs_err": err, "problem": p.key,
            "threads": threads or current_threads(), "load_avg": load_average()}


def _pick_config(configs: list[Config], budget_s: float, backend: Backend, device: Device, op: str, p: Problem,
                 inputs: tuple, expected: np.ndarray) -> tuple[Config | None, Callable[[], Any] | None, str, float]:
    """The candidate config to bench: the one config checked for correctness, or (several, `--configs grid`) the
    fastest correct one of a first timing. (config, its runner, status, error)."""
    best: tuple[Config | None, Callable[[], Any] | None, str, float] = (None, None, "no valid config", math.nan)
    best_s = math.inf
    for config in configs:
        try:
            kernel = backend.prepare(op, p, device, config)
            verdict = verify.compare(kernel(*inputs), expected, op, p)
            err = verdict.max_abs_err
            if not verdict.ok:
                best = best if best[1] else (config, None, f"wrong answer ({verdict.reason})", err)
                continue
            run = backend.runner(kernel, inputs, device)
            seconds = measure(run, budget_s=budget_s).median_s if len(configs) > 1 else 0.0
        except Exception as exc:  # a config that fails is reported, the bench goes on
            best = best if best[1] else (config, None, f"error: {type(exc).__name__}: {exc}"[:200], math.nan)
            continue
        if best[1] is None or seconds < best_s:
            best, best_s = (config, run, "ok", err), seconds
    return best


# Each (problem, op)'s entries (PyTorch, every backend, dispatch) are timed in ROUNDS interleaved rounds of
# budget / ROUNDS each, and each keeps its fastest round's median: a stretch of interference (another process, or
# one thread pool spinning while the next library's needs the core: seen here as 8 ms torch calls that take 0.06 ms
# alone) then costs one round of one entry, not the comparison.
ROUNDS = 3


def interleaved(runs: dict[str, Callable[[], Any]], budget_s: float, rounds: int = ROUNDS) -> dict[str, Timing | str]:
    """Time each of `runs` in `rounds` interleaved rounds (a, b, c, a, b, c, ...) of `budget_s / rounds` seconds;
    each keeps the measurement of its fastest round, or the error that stopped it."""
    best: dict[str, Timing | str] = {}
    rounds = max(rounds, 1)
    for _ in range(rounds):
        for name, run in runs.items():
            before = best.get(name)
            if isinstance(before, str):
                continue
            try:
                t = measure(run, budget_s=budget_s / rounds)
            except Exception as exc:  # reported in the table, the bench goes on
                best[name] = f"error: {type(exc).__name__}: {exc}"[:200]
                continue
            if before is None or t.median_s < before.median_s:
                best[name] = t
    return best


def device_time(backend: Backend, device: Device, op: str, p: Problem, config: Config, inputs: tuple,
                t: Timing, budget_s: float) -> float:
    """The kernel-only device time of `config` (the backend's `device_runner`, inputs staged once), or the call's
    median `t` where the backend times one thing (numpy, torch on a CPU)."""
    run = backend.device_runner(backend.prepare(op, p, device, config), inputs, device)
    return t.median_s if run is None else measure(run, budget_s=budget_s).median_s


def _dispatch_run(op: str, p: Problem, inputs: tuple, expected: np.ndarray,
                  results_dirs: Sequence[Path]) -> tuple[str, Callable[[], Any] | None, str, float]:
    """What a plain call of `op` on host arrays runs: dispatch's first candidate for this CPU (tuned results of
    `results_dirs` in place), called as the api calls it, timed by the wall clock. (label, run, status, error)."""
    from autotune import dispatch  # lazily: bench without the dispatch column does not pay for it
    try:
        choice = dispatch.choices(op, p, device=cpu_device_id(), results_dirs=list(results_dirs) or None)[0]
        label = f"{choice.backend.name} {choice.config_text}"
        kernel = choice.kernel
        verdict = verify.compare(kernel(*inputs), expected, op, p)
        if not verdict.ok:
            return label, None, f"wrong answer ({verdict.reason})", verdict.max_abs_err

        def call() -> None:  # the wall clock around the whole call
            kernel(*inputs)
        return label, call, "ok", verdict.max_abs_err
    except Exception as exc:  # reported in the table, the bench goes on
        return "", None, f"error: {type(exc).__name__}: {exc}"[:200], math.nan


def bench(problems: list[NamedProblem], ops: Sequence[str], backend_names: Sequence[str] | None = None, *,
          configs: str = "default", max_configs: int = 24, budget_s: float = 0.5,
          results_dirs: Sequence[Path] = (), with_torch: bool = True, with_peak: bool = True,
          with_dispatch: bool = True, say: Callable[[str], None] = lambda _: None,
          record_to: Path | None = None) -> tuple[pd.DataFrame, list[Target]]:
    """Time every usable backend (or `backend_names`) and PyTorch on each (problem, op) in one run. Returns the long
    table (one row per problem, op and backend) and the (backend, device) pairs that were timed. PyTorch runs with
    the backends' thread count (`current_threads()`); the entries of one (problem, op) are timed in `ROUNDS`
    interleaved rounds (`interleaved`), each keeping its fastest round's median; with
    `with_peak`, this CPU's BLAS sgemm rate is measured once first (a `blas` baseline row: the report's peak); with
    `with_dispatch`, a `dispatch` row per (problem, op) times what a plain call runs (`results_dirs` in place). With
    `record_to` (a results directory), the measurements of each (problem, op) are appended to their device's
    results file as soon as they are taken, so a killed run keeps what it measured."""
    chosen, skipped = backends.targets(backend_names, timed=True)
    for skip in skipped:
        if backend_names and skip.device is None:
            raise UserError(f"backend {skip.backend!r} is not available here: {skip.reason}")
        where = f" on {skip.device.id}" if skip.device else ""
        say(f"skipping backend {skip.backend}{where}: {skip.reason}")
    if not chosen:
        raise UserError("no backend with a device to time")
    rows = results.read_dirs(results_dirs, errors=[]) if configs == "tuned" else pd.DataFrame()
    torch: Any = _torch() if with_torch else None
    if torch is None and with_torch:
        say("torch is not installed: no PyTorch baseline (pip install convt-autotune[torch])")

    table: list[dict[str, Any]] = []
    if record_to is not None:
        results.make_dir(record_to)  # checked before the run
        version = torch.__version__ if torch is not None else None
        table = _Recording(problems, chosen, version, record_to)
    threads = current_threads()
    if with_peak:
        pp = peak_problem()
        say(f"measuring the BLAS sgemm peak ({PEAK_SIZE}^3, {threads} thread(s))")
        table.append(_row("sgemm", "forward", pp, PEAK_BACKEND, cpu_device_id(),
                          json.dumps({"routine": "sgemm", "n": PEAK_SIZE}), measure_peak(budget_s), "baseline",
                          threads=threads))
    before_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)  # PyTorch with the backends' thread count, restored after the run
    try:
        _run(problems, ops, chosen, rows, configs, max_configs, budget_s, results_dirs, torch, threads,
             with_dispatch, say, table)
    finally:
        if torch is not None:
            torch.set_num_threads(before_threads)
    return pd.DataFrame(table), chosen


def _run(problems: list[NamedProblem], ops: Sequence[str], chosen: list[Target], rows: pd.DataFrame, configs: str,
         max_configs: int, budget_s: float, results_dirs: Sequence[Path], torch: Any, threads: int,
         with_dispatch: bool, say: Callable[[str], None], table: list[dict[str, Any]]) -> None:
    """The bench's loop: per (problem, op), check and gather every entry's run, time them interleaved, add rows."""
    start = time.perf_counter()
    total = len(problems) * len(ops)
    for i, named in enumerate(problems):
        for j, op in enumerate(ops):
            p = named.problem
            say(f"[{i * len(ops) + j + 1}/{total}] {named.name} {op} ({time.perf_counter() - start:.0f}s)")
            inputs, exact = verify.make_inputs(op, p)
            expected = reference.run(op, p, exact)
            runs: dict[str, Callable[[], Any]] = {}
            picked: dict[str, Config] = {}  # each backend entry's config, for its device time
            pending: list[tuple[str, Target | None, str, str, float]] = []  # (entry, target, config, status, err)
            run_torch = torch_runner(op, p, inputs) if torch is not None else None
            if run_torch is not None:
                runs["torch"] = run_torch
                pending.append(("torch", None, f"torch {torch.__version__}", "baseline", math.nan))
            for target in chosen:
                backend, device = target.backend, target.device
                entry = f"{backend.name}@{device.id}"
                why = backend.supports(p, device)
                if why:
                    pending.append((entry, target, "", f"unsupported: {why}", math.nan))
                    continue
                candidates = candidate_configs(configs, max_configs, rows, backend, op, p, device)
                config, run, status, err = _pick_config(candidates, budget_s, backend, device, op, p, inputs,
                                                        expected)
                if run is not None and config is not None:
                    runs[entry], picked[entry] = run, config
                pending.append((entry, target, config_json(config) if config is not None else "", status, err))
            if with_dispatch:
                label, run, status, err = _dispatch_run(op, p, inputs, expected, results_dirs)
                if run is not None:
                    runs[DISPATCH] = run
                pending.append((DISPATCH, None, label, status, err))
            timed = interleaved(runs, budget_s)
            for entry, where, text, verdict, error in pending:
                got = timed.get(entry)
                t = got if isinstance(got, Timing) else None
                verdict = got if isinstance(got, str) else verdict
                if where is None:  # the torch baseline or the dispatch column
                    table.append(_row(named.name, op, p, "torch" if entry == "torch" else DISPATCH, cpu_device_id(),
                                      text, t, verdict, None if entry == "torch" else error, threads=threads))
                    continue
                dev_s = None
                if t is not None:
                    try:
                        dev_s = device_time(where.backend, where.device, op, p, picked[entry], inputs, t,
                                            budget_s / ROUNDS)
                    except Exception as exc:  # the call's time stands; the device time is left empty
                        say(f"{where.backend.name} {named.name} {op}: no device time ({type(exc).__name__}: {exc})")
                table.append(_row(named.name, op, p, where.backend.name, where.device.id, text, t, verdict, error,
                                  device_time_s=dev_s))


def _torch_backend_version(torch_version: str | None) -> str:
    """The torch backend's version() where it can say (its default config *is* PyTorch's default call, so the
    baseline is a measurement of it), else torch's own."""
    try:
        return backends.get("torch").version()
    except Exception:  # the backend not registered or torch half-broken: the baseline still names torch
        return f"torch {torch_version}"


class _Recording(list):
    """The bench's table, appending each timed row to its device's results file as it is added."""

    def __init__(self, problems: list[NamedProblem], chosen: list[Target], torch_version: str | None,
                 directory: Path) -> None:
        super().__init__()
        self.args = (problems, chosen, torch_version, directory)
        self.recorded = 0

    def append(self, row: dict[str, Any]) -> None:
        super().append(row)
        if row["status"] in ("ok", "baseline") and row["backend"] != DISPATCH:
            record(pd.DataFrame([row]), *self.args)
            self.recorded += 1


def record(df: pd.DataFrame, problems: list[NamedProblem], chosen: list[Target], torch_version: str | None,
           results_directory: Path) -> None:
    """Append the timed rows to each device's results file (failed ones are the tuner's business)."""
    by_name = {n.name: n.problem for n in problems}
    by_name["sgemm"] = peak_problem()
    # per (backend, device): the backends of one CPU share its device id, and each row carries its own backend's
    # version (dispatch ranks a backend's configs measured with its current version first)
    targets = {(t.backend.name, t.device.id): (t.backend.version(), t.device.name) for t in chosen}
    names = {device_id: name for (_, device_id), (_, name) in targets.items()}
    per_file: dict[Path, list[dict[str, Any]]] = {}
    for r in df[df.status.isin(["ok", "baseline"]) & (df.backend != DISPATCH)].itertuples():
        version, device_name = targets.get((r.backend, r.device), (None, names.get(r.device, cpu_device_name())))
        if r.status == "baseline" and r.backend == "torch":  # PyTorch's default call, on this CPU
            version = _torch_backend_version(torch_version)
        elif r.backend == PEAK_BACKEND:
            version = f"numpy {np.__version__}"
        row = results.make_row(device_id=r.device, device_name=device_name, backend=r.backend, op=r.op,
                               problem=by_name[r.problem_name].for_op(r.op),
                               config="{}" if r.status == "baseline" and r.backend == "torch" else r.config,
                               status=r.status, time_s=r.time_s,
                               time_min_s=r.time_min_s, time_max_s=r.time_max_s, reps=r.reps,
                               device_time_s=None if pd.isna(r.device_time_s) else r.device_time_s,
                               max_abs_err=None if pd.isna(r.max_abs_err) else r.max_abs_err,
                               reason="autotune bench", backend_version=version, source="bench",
                               threads=int(r.threads), load_avg=r.load_avg)
        per_file.setdefault(results.device_file(results_directory, r.device), []).append(row)
    for path, rows in per_file.items():
        results.append_rows(path, rows)


def summary(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wide table per problem and op, geometric means of GFLOP/s ratios against torch per backend and op)."""
    df = df[df.backend != PEAK_BACKEND]
    ok = df[df.status.isin(["ok", "baseline"])]
    # the torch backend (tuned like the others) apart from PyTorch's default call (the `torch` baseline)
    ok = ok.assign(backend=ok.backend.where((ok.backend != "torch") | (ok.status == "baseline"), TORCH_BACKEND_LABEL))
    wide = ok.pivot_table(index=["problem_name", "op"], columns="backend", values="gflops", aggfunc="max", sort=False)
    order = [p for p in dict.fromkeys(df.problem_name)]
    wide = wide.reindex(pd.MultiIndex.from_tuples([(p, o) for p in order for o in dict.fromkeys(df.op)
                                                   if (p, o) in wide.index], names=wide.index.names))
    geo = []
    if "torch" in wide.columns:
        for b in (c for c in wide.columns if c != "torch"):
            wide[f"{b}/torch"] = wide[b] / wide["torch"]
            for op, part in wide.groupby(level="op", sort=False):
                r = part[f"{b}/torch"].dropna()
                r = r[r > 0]
                if len(r):
                    geo.append({"backend": b, "op": op, "problems": len(r),
                                "geomean_ratio": float(np.exp(np.log(r).mean())), "min_ratio": float(r.min()),
                                "max_ratio": float(r.max())})
    return wide, pd.DataFrame(geo)
