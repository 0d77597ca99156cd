"""Dispatch: which backend, device and config run a call.

A forced `backend=` name runs that backend (its errors reach the caller); otherwise the candidates are tried in
order, and a backend that raises at call time is skipped with one warning naming it and the reason. `numpy` is
always the last candidate. Decisions are memoized per (op, problem, backend, config).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import backends
from autotune.problem import Problem
from backends.base import Backend, Config, Device, Kernel, config_json

FALLBACK = "numpy"


@dataclass(frozen=True)
class Choice:
    backend: Backend
    device: Device
    config: Config
    reason: str  # "forced", "default", "fallback", ...
    kernel: Kernel


_choices: dict[tuple, list[Choice]] = {}


def clear_cache() -> None:
    _choices.clear()


def _choice(name: str, op: str, problem: Problem, config: Config | None, reason: str) -> Choice:
    backend = backends.get(name)
    ok, why = backend.available()
    if not ok:
        raise RuntimeError(f"backend {name!r} is not available here: {why}")
    devices = backend.devices()
    if not devices:
        raise RuntimeError(f"backend {name!r} has no device here")
    device = devices[0]
    unsupported = backend.supports(problem, device)
    if unsupported:
        raise ValueError(f"backend {name!r} cannot run this problem: {unsupported}")
    space = backend.space(op, problem, device)
    default = backend.default_config(op, problem, device)
    cfg = space.validate(default) if config is None else space.complete(config, default)
    return Choice(backend, device, cfg, reason, backend.prepare(op, problem, device, cfg))


def choices(op: str, problem: Problem, backend: str | None = None, config: Config | None = None) -> list[Choice]:
    """The candidates for a call, best first (memoized)."""
    problem = problem.for_op(op)
    key = (op, problem, backend, None if config is None else config_json(config))
    found = _choices.get(key)
    if found is None:
        if backend is not None:
            found = [_choice(backend, op, problem, config, "forced")]
        else:
            found = [_choice(FALLBACK, op, problem, None, "fallback")]
        _choices[key] = found
    return found


def run(op: str, problem: Problem, convert: Callable[[Backend], tuple[Any, ...]], like: Any,
        backend: str | None, config: Config | None) -> Any:
    """Run `op` on the first candidate that succeeds. `convert` turns the caller's arrays into what a backend
    takes."""
    candidates = choices(op, problem, backend, config)
    for i, choice in enumerate(candidates):
        try:
            return choice.kernel(*convert(choice.backend))
        except Exception as exc:  # a failing backend must not take the call down while others remain
            if backend is not None or i == len(candidates) - 1:
                raise
            warnings.warn(f"autotune: backend {choice.backend.name!r} failed on {op} {problem.key}: {exc}; "
                          f"trying the next candidate", RuntimeWarning, stacklevel=3)
    raise AssertionError("unreachable: the last candidate re-raises")
