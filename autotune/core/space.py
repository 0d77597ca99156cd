"""A backend's tunable space: finite choices per parameter plus constraints that return a reason, and the
canonical JSON form of a config. Values are validated by exact type and value, so nothing read from a file (results,
user configs) reaches a kernel unchecked."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from autotune.core.errors import UserError

Config = dict[str, Any]


class ConfigError(UserError):
    """A config is not a point of the backend's space (bad name, value, or broken constraint)."""


# A constraint takes a config and returns None when it holds, or a short reason when it does not.
Constraint = Callable[[Config], "str | None"]


@dataclass
class Space:
    """A finite tunable space: each parameter has a tuple of allowed values (ints, or short identifier strings),
    plus constraints that prune combinations before anything is built. `added`: parameters added to the space
    after results were recorded, each with the value that means what a config lacking it ran (a config read from
    an older results file gets that value instead of being dropped)."""

    params: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    constraints: list[Constraint] = field(default_factory=list)
    added: dict[str, Any] = field(default_factory=dict)

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
        config = {**{k: v for k, v in self.added.items() if k in self.params}, **config}
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
