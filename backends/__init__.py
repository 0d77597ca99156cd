"""The backend registry: the one place backends are found, and the one enumerator of usable (backend, device) pairs.

Built-in backends are the sub-packages of this package that define `BACKEND` (found by folder name, imported lazily,
so adding one touches nothing else). Third-party ones register under the entry-point group `autotune.backends` as
`name = "package.module:BackendClass"`; that is the only external route, and it reaches the tuner's worker processes
too because they read the same installed metadata.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from autotune.core.errors import UserError
from backends.base import Backend, BackendUnavailable, Config, ConfigError, Device, Space

__all__ = ["Backend", "BackendUnavailable", "Config", "ConfigError", "Device", "ENTRY_POINT_GROUP", "Skipped",
           "Space", "Target", "clear_cache", "find", "get", "names", "targets"]

ENTRY_POINT_GROUP = "autotune.backends"
_NOT_BACKENDS = {"base"}
# Order of preference where nothing was measured: numpy last because it is the fallback.
_BUILTIN_ORDER = ("opencl", "triton", "numpy")


def _builtin_names() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__)
             if m.name not in _NOT_BACKENDS and not m.name.startswith("_")]
    return sorted(found, key=lambda n: (_BUILTIN_ORDER.index(n) if n in _BUILTIN_ORDER else len(_BUILTIN_ORDER), n))


def _entry_points() -> dict[str, EntryPoint]:
    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # a broken third-party distribution must not break the registry
        return {}


def names() -> list[str]:
    """Every registered backend name, available here or not: built-in ones first, in order of preference."""
    builtin = _builtin_names()
    return builtin + sorted(n for n in _entry_points() if n not in builtin)


@functools.lru_cache(maxsize=None)
def get(name: str) -> Backend:
    """The backend object registered as `name` (one instance per process; it owns its caches)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a backend name (str), got {type(name).__name__}")
    if name in _builtin_names():
        cls = getattr(importlib.import_module(f"{__name__}.{name}"), "BACKEND")
    elif name in _entry_points():
        cls = _entry_points()[name].load()
    else:
        raise UserError(f"unknown backend {name!r}; registered backends: {', '.join(names())}")
    backend = cls()
    if not isinstance(backend, Backend):
        raise TypeError(f"backend {name!r} does not implement backends.base.Backend")
    backend.name = name
    return backend


def clear_cache() -> None:
    """Forget the backend objects (after a plug-in was installed or removed in this process)."""
    get.cache_clear()


@dataclass(frozen=True)
class Target:
    """A backend that runs here, on one of its devices."""

    backend: Backend
    device: Device


@dataclass(frozen=True)
class Skipped:
    """A backend, or one of its devices, that cannot be used, and why."""

    backend: str
    reason: str
    device: Device | None = None


def _usable(name: str) -> tuple[tuple[Device, ...], str]:
    """(devices, "") or ((), reason). Broken backends (import errors, drivers that raise) become a reason."""
    try:
        backend = get(name)
        ok, why = backend.available()
        if not ok:
            return (), why or "not available"
        devices = tuple(backend.devices())
    except Exception as exc:  # a broken backend or driver is reported, never fatal to the caller
        return (), f"{type(exc).__name__}: {exc}"
    return devices, ("" if devices else "no device")


def targets(wanted: Iterable[str] | None = None, *, timed: bool = False,
            device_ids: Iterable[str] | None = None) -> tuple[list[Target], list[Skipped]]:
    """The usable (backend, device) pairs, in registry order, and what was skipped with the reason.

    `wanted`: backend names (unknown ones raise ValueError); default every registered backend. `timed`: only devices
    whose timings are speed (for tuning, benchmarking and dispatch by time). `device_ids`: only these devices."""
    chosen = names() if wanted is None else list(wanted)
    known = names()
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise UserError(f"unknown backend(s) {', '.join(map(repr, unknown))}; registered: {', '.join(known)}")
    ids = None if device_ids is None else set(device_ids)
    found: list[Target] = []
    skipped: list[Skipped] = []
    for name in chosen:
        devices, why = _usable(name)
        if why:
            skipped.append(Skipped(name, why))
            continue
        for device in devices:
            if ids is not None and device.id not in ids:
                continue
            if timed and not device.timing_is_speed:
                skipped.append(Skipped(name, "its timings on this device are not speed", device))
                continue
            found.append(Target(get(name), device))
    return found, skipped


def find(name: str, device_id: str) -> Target:
    """The usable pair (backend `name`, device `device_id`); ValueError naming what is missing."""
    found, skipped = targets([name], device_ids=[device_id])
    if found:
        return found[0]
    why = skipped[0].reason if skipped else f"it has no device {device_id!r} here"
    raise UserError(f"backend {name!r} cannot run on {device_id!r}: {why}")
