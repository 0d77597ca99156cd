"""The runtime log of dispatch decisions: for each new (device, op, problem) decision, which backend and config
run and the rule that chose them (like Triton's `TRITON_PRINT_AUTOTUNING`).

Two switches, either is enough:
- the environment variable `AUTOTUNE_LOG_DISPATCH=1`: the decisions go to stderr (a handler is added to the
  `autotune` logger at the first decision made while it is set; read at every new decision, so it can be set at
  run time);
- Python logging: `logging.getLogger("autotune").setLevel(logging.INFO)` plus a handler of your own (records of
  the logger `autotune.dispatch`, level INFO).

Only new decisions are logged (a decision is made once per device, op, problem and forced backend/config, then
memoized), so the log costs nothing per call.
"""

from __future__ import annotations

import logging
import os
from typing import Any

ENV_VAR = "AUTOTUNE_LOG_DISPATCH"
logger = logging.getLogger("autotune")
dispatch_logger = logging.getLogger("autotune.dispatch")
_handler: logging.Handler | None = None


def env_enabled() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def _ensure_handler() -> None:
    """With the environment switch on: a stderr handler on the `autotune` logger (once) and level INFO."""
    global _handler
    if _handler is None:
        _handler = logging.StreamHandler()
        _handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(_handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def decision(device_id: str, op: str, problem_key: str, candidates: list[Any]) -> None:
    """Log a new dispatch decision: `candidates` are dispatch's `Choice`s, best first."""
    if env_enabled():
        _ensure_handler()
    if not dispatch_logger.isEnabledFor(logging.INFO) or not candidates:
        return
    first = candidates[0]
    rest = ", ".join(f"{c.backend.name} [{c.reason}]" for c in candidates[1:])
    dispatch_logger.info("%s %s %s -> %s%s", device_id, op, problem_key, first.describe(),
                         f"; then {rest}" if rest else "")
