"""Sweeps: a grid of ordinary tracked runs that is idempotent and survives interruption.

:mod:`~spinebench.sweep.grid` parses what varies, :mod:`~spinebench.sweep.plan` prepares every
cell and finds the finished ones, :mod:`~spinebench.sweep.executors` runs cells here, in worker
processes or on Ray, :mod:`~spinebench.sweep.display` shows progress (a worker's read from its
log by :mod:`~spinebench.sweep.worker_logs`) and :mod:`~spinebench.sweep.run` ties them together.
"""

from spinebench.sweep.display import STATUS_STYLES, Outcome, SweepDisplay
from spinebench.sweep.executors import (
    Executor,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    run_arguments,
)
from spinebench.sweep.grid import BASE, Grid, GridCell, Variant, make_grid
from spinebench.sweep.plan import Plan, PlannedCell, plan, tag_variant
from spinebench.sweep.run import SweepReport, default_log_dir, run_sweep

__all__ = [
    "BASE",
    "STATUS_STYLES",
    "Executor",
    "Grid",
    "GridCell",
    "Outcome",
    "Plan",
    "PlannedCell",
    "ProcessExecutor",
    "RayExecutor",
    "SequentialExecutor",
    "SweepDisplay",
    "SweepReport",
    "Variant",
    "default_log_dir",
    "make_grid",
    "plan",
    "run_arguments",
    "run_sweep",
    "tag_variant",
]
