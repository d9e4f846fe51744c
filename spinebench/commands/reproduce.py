"""``spinebench reproduce``: re-run tracked runs from their records and print what differs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from spinebench.paths import check_work_folders
from spinebench.reproduce import Reproduction, record_of, record_warnings, reproduce


def _table(rep: Reproduction) -> Table:
    table = Table(title=f"run {rep.original.run_id} reproduced as {rep.result.info.run_id}")
    for column in ("metric", "original", "reproduced"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for d in rep.differences:
        table.add_row(d.name, str(d.original), str(d.reproduced))
    return table


def reproduce_and_report(run_ids: list[str], tracking_uri: str | None, device: str) -> int:
    """Exit 0 when every test metric of every run came out identical, 1 otherwise."""
    check_work_folders()
    console, err = Console(), Console(stderr=True)
    for run_id in run_ids:  # every record is checked before anything trains
        run, _, _ = record_of(run_id, tracking_uri)
        for warning in record_warnings(run):
            err.print(f"warning: {warning}", highlight=False)
    mismatched = 0
    for run_id in run_ids:
        rep = reproduce(run_id, tracking_uri, device)
        if rep.identical:
            console.print(
                f"run {run_id}: all {rep.compared} test metrics identical in the reproduction "
                f"{rep.result.info.run_id} (experiment '{rep.result.info.experiment}')",
                highlight=False,
            )
        else:
            mismatched += 1
            console.print(_table(rep))
            console.print(
                f"run {run_id}: {len(rep.differences)} of {rep.compared} test metrics differ: "
                + ", ".join(d.name for d in rep.differences),
                highlight=False,
            )
    return 1 if mismatched else 0
