"""Planning: every (problem, op, backend, device) study a run will tune, and what is skipped, with why."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autotune.core.errors import UserError
from autotune.core.problem import Problem
from autotune.tuner.options import TuneOptions

MAX_COUNTED_SPACE = 100_000  # spaces up to this size have their feasible points counted (a stopping rule)


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


def _device_selected(device: Any, wanted: Sequence[str] | None) -> bool:
    return not wanted or device.id in wanted or device.kind in wanted


def plan_studies(options: TuneOptions, say: Callable[[str], None]) -> list[StudyPlan]:
    """Every (problem, op, backend, device) study to run, in that order; what is skipped is said, with why.
    Unknown backends or devices are the caller's mistake (UserError)."""
    import backends

    found, skipped = backends.targets(options.backends or None)
    for skip in skipped:
        where = f" on {skip.device.id}" if skip.device else ""
        say(f"skipping backend {skip.backend}{where}: {skip.reason}")
    # Interpreters are filtered here rather than by targets(timed=True), so that only the selected devices are
    # reported and in this wording.
    pairs = []
    for t in found:
        if not _device_selected(t.device, options.devices):
            continue
        if t.device.timing_is_speed:
            pairs.append((t.backend, t.device))
        else:
            say(f"skipping {t.backend.name} on {t.device.id}: its timings are not speed "
                "(tune it on real hardware)")
    if options.devices:
        # A device is known if any backend has it, usable or not: a typo is an error, a skipped device is not.
        seen = {x for t in found for x in (t.device.id, t.device.kind)}
        seen |= {x for s in skipped if s.device for x in (s.device.id, s.device.kind)}
        missing = [d for d in options.devices if d not in seen]
        if missing:
            raise UserError(f"unknown device(s) {', '.join(missing)}; known: {', '.join(sorted(seen))}")
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
