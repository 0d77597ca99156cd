"""What a tuning run is asked to do (`TuneOptions`), checked once when built so the rest of the tuner can
trust it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autotune.core.errors import UserError
from autotune.core.problem import OPS
from autotune.problems import NamedProblem
from autotune.tuner.samplers import SAMPLERS


@dataclass
class TuneOptions:
    problems: list[NamedProblem]
    results: Path  # results directory: one CSV per device, and the default study storage
    ops: Sequence[str] = OPS
    backends: Sequence[str] | None = None  # None: every registered backend
    devices: Sequence[str] | None = None  # ids or kinds ("cpu", "gpu"); None: every device
    trials: int = 20  # configs measured per study in total, earlier runs' included
    timeout_s: float | None = None  # per study
    time_budget_s: float | None = None  # whole run
    storage: str | None = None  # any SQLAlchemy URL; None: a SQLite file in `results`
    sampler: str = "tpe"
    seed: int | None = None
    trial_timeout_s: float = 120.0
    timing_budget_s: float = 0.3
    retime: int = 3  # the best configs of a study re-timed interleaved after its trials (0: none)
    progress: bool = True  # draw the progress bar (messages and warnings are written either way)

    def __post_init__(self) -> None:
        # UserError (a ValueError): these are the caller's mistakes, shown by the CLI as one line.
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1:
            raise UserError(f"trials must be a positive integer, got {self.trials!r}")
        if not isinstance(self.retime, int) or isinstance(self.retime, bool) or self.retime < 0:
            raise UserError(f"retime must be a non-negative integer, got {self.retime!r}")
        for name in ("timeout_s", "time_budget_s"):
            v = getattr(self, name)
            if v is not None and not _positive_seconds(v):
                raise UserError(f"{name} must be a positive number of seconds, got {v!r}")
        for name in ("trial_timeout_s", "timing_budget_s"):
            v = getattr(self, name)
            if not _positive_seconds(v):
                raise UserError(f"{name} must be a positive number of seconds, got {v!r}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise UserError(f"ops must be some of {', '.join(OPS)}, got {list(self.ops)!r}")
        if not self.problems:
            raise UserError("no problems to tune")


def _positive_seconds(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)
