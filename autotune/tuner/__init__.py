"""The tuner (library; the command line is autotune.cli.tune): one Optuna study per (device, backend, op,
problem) over the backend's tunable space.

A trial samples a config; one that breaks a constraint is recorded as `pruned` and not run; any other is
built, checked and timed in a worker subprocess, and its row appended to the device's results file whatever
the outcome. Study state lives in Optuna storage (a SQLite file in the results directory unless `storage`
names another SQLAlchemy URL), so running the same job again continues the studies, and several processes or
machines given one storage share them.

`trials` is the number of configs each study should have measured (built, checked, timed, or failed doing so)
in total, those in storage from earlier runs included: a rerun after an interruption finishes the job, and
raising it tunes further. Constraint-pruned points and repeats (answered from the earlier trial, never run
twice) cost nothing and do not count. A study also ends when every feasible point of its space has been
measured.

Modules, in the order a run uses them: options (TuneOptions), plan (the studies to run), storage (Optuna
storage set-up), samplers, study (one study's trials and results rows), trial (the worker subprocess that runs
one trial), progress (the progress line), summary (the table printed at the end), run (`tune`, which ties them
together).
"""

from __future__ import annotations

from autotune.tuner.options import TuneOptions
from autotune.tuner.plan import StudyPlan, plan_studies
from autotune.tuner.run import tune
from autotune.tuner.samplers import SAMPLERS, make_sampler
from autotune.tuner.storage import STORAGE_FILE
from autotune.tuner.summary import format_summary, summarize

__all__ = ["SAMPLERS", "STORAGE_FILE", "StudyPlan", "TuneOptions", "format_summary", "make_sampler",
           "plan_studies", "summarize", "tune"]
