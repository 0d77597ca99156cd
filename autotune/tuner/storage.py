"""Where study state lives: Optuna RDB storage, by default a SQLite file in the results directory, else any
SQLAlchemy URL (several processes or machines given one URL share the studies). SQLite is set up for several
tuner processes at once (WAL, lock time-out, no fsync per commit)."""

from __future__ import annotations

import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

from autotune.core.errors import UserError

STORAGE_FILE = "studies.sqlite3"


def storage_url(storage: str | None, results_dir: Path) -> str:
    """`storage` if given, else the SQLite file STORAGE_FILE in `results_dir` (which the caller has created)."""
    if storage:
        return storage
    return f"sqlite:///{(results_dir / STORAGE_FILE).resolve()}"


def make_storage(url: str) -> Any:
    """RDB storage with heartbeats: a trial left RUNNING by a killed process is marked failed after the grace
    period and retried once, so it is not lost. A URL that cannot be opened is a UserError."""
    import optuna
    from optuna.storages import RDBStorage

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 120}}  # several tuner processes on one file wait for its lock
        try:
            _sqlite_wal(url)
        except UserError:
            raise
        except Exception as exc:  # a malformed URL, not a database
            raise UserError(f"cannot open the study storage {url!r}: {type(exc).__name__}: {exc}; move the file "
                            f"aside (the results CSV files keep every measurement) or give another --storage") \
                from None
    elif url.startswith("postgresql"):
        kwargs = {"pool_pre_ping": True}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                # Heartbeats are "experimental" in Optuna, and stable since 2.8.
                warnings.simplefilter("ignore")
                retry: dict[str, Any]
                if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
                    retry = {"heartbeat_stale_trial_callback":
                             optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
                else:
                    retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
                storage = RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=120,
                                     **retry)
            break
        except Exception as exc:
            # Several processes creating the tables of a new database at once: all but one lose the race
            # (IntegrityError); the tables exist a moment later.
            lost_race = type(exc).__name__ in ("IntegrityError", "ProgrammingError", "OperationalError")
            if attempt < 3 and lost_race:
                time.sleep(0.5 + attempt)
                continue
            raise UserError(f"cannot open the study storage {url!r}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if url.startswith("sqlite"):
        _no_fsync_per_commit(storage)
    return storage


def _no_fsync_per_commit(storage: Any) -> None:
    """Optuna commits a dozen times per trial; with WAL, synchronous=NORMAL commits without an fsync each
    (still safe when the process is killed; only a power cut may lose the last trials' state)."""
    from sqlalchemy import event

    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(storage.engine, "connect", _pragmas)
    storage.engine.dispose()  # connections opened while creating the tables lack the pragma


def _sqlite_wal(url: str) -> None:
    """Put a SQLite storage file in WAL mode (persistent in the file): readers and the writer of several tuner
    processes no longer block each other."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or "mode=memory" in url:
        raise UserError(f"--storage {url!r} is an in-memory database: the studies would be lost at exit; give a "
                        f"file (sqlite:///path/studies.db) or a server URL")
    if not Path(database).parent.is_dir():  # no directory is created for a URL (a typo would make one)
        raise UserError(f"--storage {url!r}: directory {Path(database).parent} does not exist; create it or fix "
                        f"the URL")
    con = sqlite3.connect(database, timeout=120)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()
