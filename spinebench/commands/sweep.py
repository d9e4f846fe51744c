"""``spinebench sweep``: plan, run and summarise a grid of tracked runs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from spinebench.errors import SpinebenchError
from spinebench.paths import check_work_folders
from spinebench.runinfo import RunRequest
from spinebench.sweep import (
    STATUS_STYLES,
    Executor,
    Grid,
    Plan,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    SweepReport,
    default_log_dir,
    plan,
    run_sweep,
)

EXECUTORS = ("local", "ray")
INTERRUPTED_EXIT = 130


def summary_table(report: SweepReport) -> Table:
    table = Table(title="sweep")
    for column in ("cell", "status", "test dice", "seconds", "run / error"):
        table.add_column(column, justify="right" if column in ("test dice", "seconds") else "left")
    for o in report.outcomes:
        table.add_row(
            Text(o.cell.cell.name),
            Text(o.status, style=STATUS_STYLES.get(o.status, "")),
            "" if o.dice is None else f"{o.dice:.4f}",
            f"{o.seconds:.0f}" if o.seconds else "",
            Text(o.run_id or o.error),
        )
    return table


def check_executor_options(kind: str, workers: int, ray_address: str | None) -> None:
    """Before any cell is prepared: executor options that cannot work together."""
    if kind not in EXECUTORS:
        raise SpinebenchError(f"--executor {kind!r} is unknown; use {' or '.join(EXECUTORS)}")
    if workers < 1:
        raise SpinebenchError(f"--workers {workers} must be at least 1")
    if kind == "ray" and workers != 1:
        raise SpinebenchError(
            "--workers is for --executor local; Ray sizes the sweep by "
            "--cpus-per-cell/--gpus-per-cell"
        )
    if kind == "local" and ray_address:
        raise SpinebenchError("--ray-address needs --executor ray")


def _executor(
    kind: str,
    workers: int,
    ray_address: str | None,
    cpus_per_cell: float,
    gpus_per_cell: float | None,
    device: str,
    sweep_plan: Plan,
) -> Executor:
    if kind == "ray":
        return RayExecutor(ray_address, cpus_per_cell, gpus_per_cell)
    if workers == 1:
        return SequentialExecutor()
    import torch

    gpus = torch.cuda.device_count() if device != "cpu" else 0
    return ProcessExecutor(workers, gpus, sweep_plan.tracker, default_log_dir())


def sweep_and_report(
    grid: Grid,
    template: RunRequest,
    *,
    force: bool = False,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float | None = None,
) -> int:
    """Run the sweep; the exit code is 0 when every cell finished or was skipped, 1 when any
    failed, 130 when interrupted (rerun the same command to continue)."""
    check_executor_options(executor, workers, ray_address)
    check_work_folders()
    err = Console(stderr=True)
    sweep_plan = plan(grid, template, force)
    chosen = _executor(
        executor, workers, ray_address, cpus_per_cell, gpus_per_cell, template.device, sweep_plan
    )
    todo = len(sweep_plan.to_run())
    err.print(
        f"sweep: {len(sweep_plan.cells)} cells, {len(sweep_plan.cells) - todo} already "
        f"finished, {todo} to run ({executor}, {chosen.parallel} at a time) -> experiment "
        f"'{sweep_plan.experiment}' at {sweep_plan.uri}",
        highlight=False,
    )
    report = run_sweep(sweep_plan, chosen, err)
    Console().print(summary_table(report))
    err.print(report.summary_line(), highlight=False)
    if report.interrupted:
        err.print("interrupted: run the same command again to continue where it stopped")
        return INTERRUPTED_EXIT
    return 1 if report.count("failed") else 0
