"""The backend registry.

Built-in backends are the sub-packages and modules of this package that define a `Backend` subclass (found by
name, imported lazily, so adding one touches nothing else); third-party ones register under the entry-point group
`autotune.backends` as `name = "package.module:BackendClass"`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points

from backends.base import Backend, BackendUnavailable, Config, ConfigError, Device, Space

__all__ = ["Backend", "BackendUnavailable", "Config", "ConfigError", "Device", "Space", "names", "get", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "autotune.backends"
_NOT_BACKENDS = {"base"}
# Order of preference where nothing was measured: numpy last because it is the fallback.
_BUILTIN_ORDER = ("opencl", "triton", "numpy")


def _builtin_names() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_BACKENDS and not m.name.startswith("_")]
    return sorted(found, key=lambda n: (_BUILTIN_ORDER.index(n) if n in _BUILTIN_ORDER else len(_BUILTIN_ORDER), n))


def _entry_points() -> dict[str, object]:
    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # a broken third-party distribution must not break the registry
        return {}


def names() -> list[str]:
    """Every registered backend name, available here or not."""
    builtin = _builtin_names()
    return builtin + sorted(n for n in _entry_points() if n not in builtin)


@functools.lru_cache(maxsize=None)
def get(name: str) -> Backend:
    """The backend object registered as `name` (one instance per process; it owns its caches)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a backend name (str), got {type(name).__name__}")
    if name in _builtin_names():
        module = importlib.import_module(f"{__name__}.{name}")
        cls = getattr(module, "BACKEND")
    elif name in _entry_points():
        cls = _entry_points()[name].load()  # type: ignore[attr-defined]
    else:
        raise ValueError(f"unknown backend {name!r}; registered backends: {', '.join(names())}")
    backend = cls()
    if not isinstance(backend, Backend):
        raise TypeError(f"backend {name!r} does not implement backends.base.Backend")
    backend.name = name
    return backend
