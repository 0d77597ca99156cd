"""The Optuna sampler of a study, by name: `tpe` (the default), `random`, or `grid` (exhaustive)."""

from __future__ import annotations

import warnings
from typing import Any

SAMPLERS = ("tpe", "random", "grid")


def make_sampler(kind: str, space: Any, seed: int | None) -> Any:
    """A fresh sampler for one study over `space` (a backends.base.Space)."""
    import optuna  # imported late: `autotune --help` and the worker need not pay for it

    if kind == "grid":
        return optuna.samplers.GridSampler({k: list(v) for k, v in space.params.items()}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind != "tpe":
        raise ValueError(f"unknown sampler {kind!r}; one of {', '.join(SAMPLERS)}")
    # Spaces are small and categorical: a few random points are enough before TPE's model takes over. Replayed over
    # measured pools of 100 random OpenCL configs (scripts/search_quality.py --pool, 4 suite layers, AMD EPYC), 4
    # startup trials instead of 10 brought the seeded study's best after 10 configs from 1.37x to 1.21x the pool's
    # best (median over studies; both reach 1.00 by 20).
    # Multivariate TPE models the parameters jointly (tile sizes and vector widths interact). It is Optuna 5's
    # default; said explicitly for older Optuna, whose independent TPE, replayed on exhaustively measured
    # OpenCL spaces, needed ~35% more trials and kept re-proposing known points (scripts/search_quality.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, max(3, space.size // 8)),
                                          multivariate=True, group=True)
