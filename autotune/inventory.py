"""The inventory of this machine: every registered backend and its devices, with availability and, when a
backend cannot run, the reason (and how to fix it). Library code behind `autotune devices`; the registry's one
enumerator (`backends.targets`) decides what is usable."""

from __future__ import annotations

import pandas as pd

import backends

COLUMNS = ["backend", "available", "device", "kind", "name", "note"]


def device_table() -> pd.DataFrame:
    """One row per (backend, device); one row with the reason for a backend that is unavailable or has none.
    Rows in registry order (`backends.names()`)."""
    found, skipped = backends.targets()
    rows = [{"backend": s.backend, "available": False, "note": s.reason} for s in skipped]
    for t in found:
        note = t.backend.version()
        if not t.device.timing_is_speed:
            note = f"{note}; interpreter: correct but slow, never tuned for speed".lstrip("; ")
        rows.append({"backend": t.backend.name, "available": True, "device": t.device.id,
                     "kind": t.device.kind, "name": t.device.name, "note": note})
    # Devices or drivers of a usable backend that it left out (a driver that crashed or hung while probed), with why.
    for backend in {id(t.backend): t.backend for t in found}.values():
        broken = getattr(backend, "broken", None)
        for label, reason in (broken() if callable(broken) else []):
            rows.append({"backend": backend.name, "available": False, "name": label, "note": reason})
    order = {name: i for i, name in enumerate(backends.names())}
    # a stable sort: each backend's devices keep their order
    rows.sort(key=lambda r: order.get(str(r["backend"]), len(order)))
    return pd.DataFrame(rows, columns=COLUMNS)
