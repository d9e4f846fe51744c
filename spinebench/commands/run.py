"""``spinebench run``: execute one request and print its results table."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from spinebench.engine.run import execute
from spinebench.paths import check_work_folders
from spinebench.runinfo import RunRequest, RunResult


def results_table(result: RunResult) -> Table:
    """Headline metrics, then per-class Dice, of one finished run."""
    m = result.metrics
    table = Table(
        title=f"{result.info.method} | labeled {result.info.labeled:g} | "
        f"seed {result.info.seed} | test split"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, unit in (("test/dice", ""), ("test/hd95", " mm"), ("test/assd", " mm")):
        if key in m:
            table.add_row(key, f"{m[key]:.4f}{unit}")
    for key, value in m.items():
        if key.startswith("test/dice/") and not math.isnan(value):
            table.add_row(key, f"{value:.4f}")
    return table


def run_and_report(req: RunRequest) -> RunResult:
    """Train one request and print its results (the runs folder and the data cache are
    checked first: a run that could not write its checkpoints should not start)."""
    check_work_folders()
    console = Console()
    result = execute(req, Console(stderr=True))
    if result.rank:  # rank 0 of a torchrun job reports
        return result
    console.print(results_table(result))
    uri = result.info.tracking_uri
    console.print(
        f"tracked as run [bold]{result.info.run_id}[/] in experiment "
        f"'{result.info.experiment}' at {uri}"
    )
    console.print(f"browse: mlflow ui --backend-store-uri {uri}")
    return result
