"""The whole run: every planned study in turn, in one trial worker, sharing the run's time budget."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import pandas as pd

from autotune.core import results
from autotune.core.errors import UserError
from autotune.tuner.options import TuneOptions
from autotune.tuner.plan import plan_studies
from autotune.tuner.progress import Progress
from autotune.tuner.storage import make_storage, storage_url
from autotune.tuner.study import StudyRunner, open_study
from autotune.tuner.summary import summarize


def tune(options: TuneOptions, stream: TextIO | None = None) -> pd.DataFrame:
    """Run every planned study; return the summary table (summary.summarize). Progress, skips and warnings are
    written to `stream` (default: sys.stderr at call time); the bar only if `options.progress`."""
    # Imported here, not at module level: the worker runs as `python -m autotune.tuner.trial`, which imports
    # this package first, and must not find its own module already imported.
    from autotune.tuner.trial import Worker

    start = time.monotonic()  # the budget covers planning and opening the storage too
    deadline = start + options.time_budget_s if options.time_budget_s else None
    progress = Progress(0, stream if stream is not None else sys.stderr, options.progress)
    plans = plan_studies(options, progress.message)
    if not plans:
        raise UserError("nothing to tune: no available backend and device for these problems and ops "
                        "(see `autotune devices`)")
    results.make_dir(options.results)
    for device_id in sorted({p.device.id for p in plans}):
        note = results.set_aside_if_unreadable(results.device_file(options.results, device_id))
        if note:
            progress.message(f"warning: {note}")
    storage = make_storage(storage_url(options.storage, options.results))
    progress.total = len(plans)
    with Worker() as worker:
        for i, plan in enumerate(plans, start=1):
            timeout = options.timeout_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    progress.message(f"time budget of {options.time_budget_s:g} s spent: "
                                     f"{len(plans) - i + 1} of {len(plans)} studies not run (run the command "
                                     f"again to continue)")
                    break
                share = left / (len(plans) - i + 1)  # an even share of what is left, per remaining study
                timeout = min(timeout, share) if timeout else share
            progress.study(i, f"{plan.device.id} {plan.backend.name} {plan.op} {plan.problem_name}")
            study = open_study(plan, storage, options.sampler, options.seed,
                               [options.results, results.shipped_results_dir()])
            StudyRunner(plan, study, worker, options, progress, deadline).run(timeout)
    progress.close()
    return summarize(options.results, plans)
