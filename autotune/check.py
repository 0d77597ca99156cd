"""Checks every usable backend, on each of its devices, against the float64 reference (`autotune check`).

Each op runs with the backend's default config plus `configs - 1` sampled valid ones, on small problems that each
stress one semantic corner (`autotune/data/corners.csv` by default), with the one correctness definition of
`autotune.core.verify`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources

import pandas as pd

import backends
from autotune.core import reference, verify
from autotune.core.problem import OPS
from autotune.problems import NamedProblem, load_problems

COLUMNS = ["backend", "device", "op", "checked", "max_err_over_tol", "result"]


def corner_problems() -> list[NamedProblem]:
    """The built-in corner cases: one semantic corner each (asymmetric padding, groups, dilation, ...)."""
    with resources.as_file(resources.files("autotune").joinpath("data/corners.csv")) as path:
        return load_problems(path)


def check(problems: Sequence[NamedProblem], backend_names: Sequence[str] | None = None, configs: int = 1,
          say: Callable[[str], None] = lambda _: None) -> pd.DataFrame:
    """One row per (backend, device, op): configs checked, the worst error as a fraction of its tolerance, and
    "ok" or "FAIL" (each failure is said, with the problem and config)."""
    found, skipped = backends.targets(backend_names)
    rows = []
    for skip in skipped:
        say(f"{skip.backend}: not available: {skip.reason}")
        if backend_names:
            rows.append({"backend": skip.backend, "device": "-", "op": "-", "checked": 0,
                         "max_err_over_tol": float("nan"), "result": f"unavailable: {skip.reason}"})
    for target in found:
        backend, device = target.backend, target.device
        for op in OPS:
            worst, checked, failures = 0.0, 0, []
            for named in problems:
                p = named.problem
                if backend.supports(p, device):
                    continue
                space = backend.space(op, p, device)
                default = space.validate(backend.default_config(op, p, device))
                candidates = [default] + verify.sample_configs(space, configs - 1, exclude=default)
                inputs, exact = verify.make_inputs(op, p)
                expected = reference.run(op, p, exact)
                for config in candidates:
                    try:
                        verdict = verify.compare(backend.prepare(op, p, device, config)(*inputs), expected, op, p)
                    except Exception as exc:  # reported, not raised: check every backend
                        failures.append(f"{named.name} {config}: {type(exc).__name__}: {exc}")
                        continue
                    checked += 1
                    worst = max(worst, verdict.max_abs_err / verdict.tolerance if verdict.tolerance else 0.0)
                    if not verdict.ok:
                        failures.append(f"{named.name} {config}: {verdict.reason}")
            for f in failures:
                say(f"{backend.name} {device.id} {op}: FAIL {f}")
            rows.append({"backend": backend.name, "device": device.id, "op": op, "checked": checked,
                         "max_err_over_tol": worst, "result": "FAIL" if failures else "ok"})
    return pd.DataFrame(rows, columns=COLUMNS)
