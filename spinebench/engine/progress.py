"""Rich progress bars, one per stage, with the latest loss and an ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from spinebench.method import Stage


class StageProgress:
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=console.quiet,
        )
        self.task = None

    def __enter__(self) -> StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, stage: Stage, done: int) -> None:
        self.task = self.progress.add_task(
            stage.name, total=stage.iterations, completed=done, loss="-"
        )

    def update(self, iteration: int, loss: float | None) -> None:
        if loss is None:
            self.progress.update(self.task, completed=iteration)
        else:
            self.progress.update(self.task, completed=iteration, loss=f"{loss:.4f}")

    def finish(self, stage: Stage) -> None:
        self.progress.update(self.task, completed=stage.iterations)
