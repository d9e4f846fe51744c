"""What a sweep shows while it runs: overall progress and one line per running cell.

On a terminal that is rich's live display. In a redirected log rich draws nothing, so there the
executors that can see their cells print one plain line at least every
``SPINEBENCH_PROGRESS_EVERY`` seconds (default 60), naming each running cell with its stage,
iteration and ETA (:meth:`SweepDisplay.heartbeat`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
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

from spinebench.engine.progress import clock, line_every_s
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
        self.plain = not console.is_terminal and not console.quiet
        self.every = line_every_s()
        self._t0 = self._last_beat = time.perf_counter()

    def __enter__(self) -> SweepDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _overall(self) -> str:
        done = sum(self.counts.values())
        remaining = self.total - done
        eta = "-"
        if self.durations and remaining:
            mean = sum(self.durations) / len(self.durations)
            eta = clock(mean * remaining / min(self.parallel, remaining))
        c = self.counts
        return (
            f"{done}/{self.total} cells: done {c['finished']} skipped {c['skipped']} "
            f"running {len(self.running)} failed {c['failed']} | eta {eta}"
        )

    def _refresh(self) -> None:
        self.progress.update(self.task, completed=sum(self.counts.values()), info=self._overall())

    def heartbeat_due(self) -> bool:
        """True in a redirected log once ``every`` seconds passed since the last heartbeat."""
        return self.plain and time.perf_counter() - self._last_beat >= self.every

    def heartbeat(self, cells: Mapping[str, str]) -> None:
        """One plain line: the sweep's counts and ETA, then each running cell and its state."""
        now = time.perf_counter()
        self._last_beat = now
        parts = [f"sweep {clock(now - self._t0)} | {self._overall()}"]
        parts += [f"{name}: {state}" for name, state in cells.items()]
        self.console.print(" | ".join(parts), highlight=False, soft_wrap=True, markup=False)

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
