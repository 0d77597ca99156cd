"""The small base class every backend implements, and the tunable-space type it describes itself with.

A backend answers six questions: does it run here (and if not, why), on which devices, what can be tuned for an
(op, problem, device) and under which constraints, what is a sane default, give me a ready callable for a config,
and how to time that callable. Everything else (timing loops, tuning, results, dispatch) lives outside backends.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # backends must not import the autotune package at import time (it imports backends)
    from autotune.problem import Problem

Config = dict[str, Any]
# Signatures of prepared kernels, per op (arrays are the backend's native type, see Backend.accepts):
#   forward(x, w, bias_or_None) -> y
#   backward_input(gy, w) -> gx
#   backward_weight(gy, x) -> gw
#   backward_bias(gy) -> gb
Kernel = Callable[..., Any]


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why and how to fix it."""


class ConfigError(ValueError):
    """A config is not a point of the backend's space (bad name, value, or broken constraint)."""


@dataclass(frozen=True)
class Device:
    """A physical device as one backend sees it. `id` is the shared slug (autotune.devices), so that backends
    running on the same hardware compete in one results table; `handle` is the backend's own object."""

    id: str
    name: str
    kind: str  # "cpu", "gpu", "interpreter", ...
    backend: str
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    handle: Any = field(default=None, compare=False, hash=False, repr=False)


# A constraint takes a config and returns None when it holds, or a short reason when it does not.
Constraint = Callable[[Config], "str | None"]


@dataclass
class Space:
    """A finite tunable space: each parameter has a tuple of allowed values (ints, or short identifier strings),
    plus constraints that prune combinations before anything is built."""

    params: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    constraints: list[Constraint] = field(default_factory=list)

    def violation(self, config: Config) -> str | None:
        """None if `config` satisfies every constraint, else the first reason."""
        for c in self.constraints:
            reason = c(config)
            if reason:
                return reason
        return None

    def validate(self, config: Any) -> Config:
        """Return a clean copy of `config` if it is exactly a point of this space; else raise ConfigError.
        Values must compare equal *and* have the same type as an allowed value, so text read from a file can
        never reach kernel source or build options."""
        if not isinstance(config, dict):
            raise ConfigError(f"config must be a mapping of parameter names to values, got {type(config).__name__}")
        unknown = sorted(set(config) - set(self.params))
        if unknown:
            raise ConfigError(f"unknown config parameter(s) {unknown}; known: {sorted(self.params)}")
        missing = sorted(set(self.params) - set(config))
        if missing:
            raise ConfigError(f"config lacks parameter(s) {missing}")
        clean: Config = {}
        for name, choices in self.params.items():
            value = config[name]
            match = [c for c in choices if type(c) is type(value) and c == value]
            if not match:
                raise ConfigError(f"config parameter {name}={value!r} is not one of {list(choices)}")
            clean[name] = match[0]
        reason = self.violation(clean)
        if reason:
            raise ConfigError(f"config {json.dumps(clean, sort_keys=True)} breaks a constraint: {reason}")
        return clean

    def complete(self, partial: Config, default: Config) -> Config:
        """`default` updated with `partial` (so users may force just some parameters), then validated."""
        if not isinstance(partial, dict):
            raise ConfigError(f"config must be a mapping, got {type(partial).__name__}")
        return self.validate({**default, **partial})

    def grid(self) -> Iterator[Config]:
        """Every config, constraint-breaking ones included (the tuner records those as pruned)."""
        names = list(self.params)
        for values in itertools.product(*(self.params[n] for n in names)):
            yield dict(zip(names, values))

    @property
    def size(self) -> int:
        n = 1
        for v in self.params.values():
            n *= len(v)
        return n


def config_json(config: Config) -> str:
    """The canonical JSON form of a config (sorted keys), as stored in result rows."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


class Backend:
    """Base class of every backend. Subclasses set `name` and implement the methods marked below."""

    name: str = ""
    #: one line telling how to install what this backend needs
    install_hint: str = ""

    # ---- implemented by every backend ---------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        """(True, "") if the backend can run here, else (False, reason with an install hint). Must not raise."""
        raise NotImplementedError

    def devices(self) -> list[Device]:
        """The devices this backend can run on here (empty when unavailable)."""
        raise NotImplementedError

    def space(self, op: str, problem: Problem, device: Device) -> Space:
        """The tunable parameters for this op and problem on this device, with their constraints."""
        raise NotImplementedError

    def default_config(self, op: str, problem: Problem, device: Device) -> Config:
        """A config of `space(...)` that is valid and reasonably fast without tuning."""
        raise NotImplementedError

    def prepare(self, op: str, problem: Problem, device: Device, config: Config) -> Kernel:
        """A ready callable for (op, problem, device, config); compiled once and cached by the backend.
        `config` has already been validated against `space(...)`."""
        raise NotImplementedError

    # ---- overridable defaults -----------------------------------------------------------------------------------
    def supports(self, problem: Problem, device: Device) -> str | None:
        """None if this backend can run `problem` on `device`, else the reason (dtype, size limits...)."""
        return None

    def accepts(self, array: Any) -> bool:
        """Whether prepared kernels take `array` as is; other inputs are converted to NumPy first."""
        return isinstance(array, np.ndarray)

    def runner(self, kernel: Kernel, inputs: tuple[Any, ...], device: Device) -> Callable[[], float | None]:
        """A zero-argument callable that runs `kernel` once on `inputs` (staged on the device beforehand, outside
        the timed loop) and returns the seconds measured by a device timer, or None to be timed by the wall
        clock around the call (which must then have finished its work when it returns)."""
        def run() -> None:
            kernel(*inputs)
        return run

    def version(self) -> str:
        """Version string of what computes (library and driver), recorded with every measurement."""
        return ""

    def compile_report(self, op: str, problem: Problem, device: Device, config: Config,
                       target: str) -> list[dict[str, Any]]:
        """What the compiler makes of the kernels of (op, problem, config) for `target` (e.g. "sm_90"), without
        running them: one dict per kernel with at least `kernel`, `registers`, `spills`, `shared_bytes`,
        `tensor_core` and `global_load_bits` (width in bits -> instructions). `autotune inspect` calls it; a backend
        that cannot compile ahead of time keeps this default, which says so."""
        raise BackendUnavailable(f"the {self.name or type(self).__name__} backend cannot compile its kernels ahead "
                                 f"of time for inspection (target {target})")
