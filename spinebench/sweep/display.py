"""What a sweep shows while it runs: overall progress and one line per running cell."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from spinebench.engine.progress import clock
from spinebench.sweep.plan import PlannedCell

STATUS_STYLES = {"finished": "green", "skipped": "dim", "failed": "red", "killed": "yellow"}


@dataclass
class Outcome:
    cell: PlannedCell
    status: str  # skipped | finished | failed | killed | not run
    run_id: str | None = None
    dice: float | None = None
    seconds: float = 0.0
    error: str = ""


class SweepDisplay:
    """Overall progress (cells done/running/failed, ETA) plus one line per running cell; the
    engine's own stage bar nests under it when cells run in this process."""

    def __init__(self, console: Console, total: int, parallel: int) -> None:
        self.console = console
        self.parallel = max(parallel, 1)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=console.quiet,
        )
        self.total = total
        self.counts = {"finished": 0, "skipped": 0, "failed": 0, "killed": 0}
        self.durations: list[float] = []
        self.running: dict[str, TaskID] = {}
        self.task = self.progress.add_task("sweep", total=total, info=f"0/{total}")

    def __enter__(self) -> SweepDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _refresh(self) -> None:
        done = sum(self.counts.values())
        remaining = self.total - done
        eta = "-"
        if self.durations and remaining:
            mean = sum(self.durations) / len(self.durations)
            eta = clock(mean * remaining / min(self.parallel, remaining))
        c = self.counts
        info = (
            f"{done}/{self.total} cells: done {c['finished']} skipped {c['skipped']} "
            f"running {len(self.running)} failed {c['failed']} | eta {eta}"
        )
        self.progress.update(self.task, completed=done, info=info)

    def started(self, pc: PlannedCell) -> None:
        self.running[pc.cell.name] = self.progress.add_task(
            escape(pc.cell.name), total=None, info="running"
        )
        self._refresh()

    def finished(self, outcome: Outcome) -> None:
        task = self.running.pop(outcome.cell.cell.name, None)
        if task is not None:
            self.progress.remove_task(task)
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if outcome.status in ("finished", "failed"):
            self.durations.append(outcome.seconds)
        detail = f"run {outcome.run_id}" if outcome.run_id else outcome.error
        dice = f" dice {outcome.dice:.4f}" if outcome.dice is not None else ""
        self.console.print(
            Text.assemble(
                (outcome.status, STATUS_STYLES.get(outcome.status, "")),
                f" {outcome.cell.cell.name}{dice} ({outcome.seconds:.0f} s) {detail}",
            )
        )
        self._refresh()
