"""Training progress: a rich bar per stage on a terminal, plain lines in a log.

rich draws its bar only on a terminal, so a run whose output goes to a file would show nothing
until its results table; there each stage prints a line at every tenth of its budget and at
least once a minute (stage, iteration/total, loss, it/s, eta), as Lightning and tqdm do for logs.
``SPINEBENCH_PROGRESS_EVERY`` (seconds) shortens that minute; a sweep with ``--workers`` reads
these lines back from its workers' logs (:func:`parse_line`).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from spinebench.method import Stage

#: A plain line at least this often (seconds), besides one per tenth of the stage.
LINE_EVERY_S = 60.0
LINES_PER_STAGE = 10
EVERY_ENV = "SPINEBENCH_PROGRESS_EVERY"
_LINE = re.compile(
    r"^(?P<stage>\S+) (?P<iteration>\d+)/(?P<total>\d+) loss \S+ "
    r"(?P<rate>[0-9.]+|nan|inf) it/s eta (?P<eta>\S+)$"
)


def line_every_s() -> float:
    """Seconds between plain progress lines at most: ``SPINEBENCH_PROGRESS_EVERY`` when set to a
    positive number (tests and impatient logs), else a minute."""
    try:
        value = float(os.environ.get(EVERY_ENV, ""))
    except ValueError:
        return LINE_EVERY_S
    return value if value > 0 else LINE_EVERY_S


@dataclass(frozen=True)
class StageLine:
    """One plain progress line, parsed back (what a sweep reads from a worker's log)."""

    stage: str
    iteration: int
    total: int
    eta: str


def parse_line(line: str) -> StageLine | None:
    """The fields of a line :class:`StageProgress` printed; None for any other line."""
    m = _LINE.match(line.strip())
    if m is None:
        return None
    return StageLine(m["stage"], int(m["iteration"]), int(m["total"]), m["eta"])


class StageProgress:
    """One progress display per run; ``start`` a stage, ``update`` it, ``finish`` it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.plain = not console.is_terminal and not console.quiet
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
            disable=console.quiet or self.plain,
        )
        self.task: TaskID | None = None
        self._stage: Stage | None = None
        self._loss: float | None = None
        self._t0 = self._last_line = 0.0
        self._done0 = self._next_tenth = 0
        self._every = line_every_s()

    def __enter__(self) -> StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, stage: Stage, done: int) -> None:
        self.task = self.progress.add_task(
            stage.name, total=stage.iterations, completed=done, loss="-"
        )
        self._stage, self._loss = stage, None
        self._t0 = self._last_line = time.perf_counter()
        self._done0 = done
        self._next_tenth = self._tenth_after(done)

    def update(self, iteration: int, loss: float | None) -> None:
        if loss is not None:
            self._loss = loss
        if self.task is not None:
            if loss is None:
                self.progress.update(self.task, completed=iteration)
            else:
                self.progress.update(self.task, completed=iteration, loss=f"{loss:.4f}")
        if self.plain and self._stage is not None:
            now = time.perf_counter()
            if iteration >= self._next_tenth or now - self._last_line >= self._every:
                self._line(iteration, now)

    def finish(self, stage: Stage) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=stage.iterations)

    def _tenth_after(self, iteration: int) -> int:
        total = self._stage.iterations if self._stage else 1
        step = max(total // LINES_PER_STAGE, 1)
        return min((iteration // step + 1) * step, total)

    def _line(self, iteration: int, now: float) -> None:
        assert self._stage is not None
        total = self._stage.iterations
        rate = (iteration - self._done0) / max(now - self._t0, 1e-9)
        eta = (total - iteration) / rate if rate > 0 else float("nan")
        loss = "-" if self._loss is None else f"{self._loss:.4f}"
        self.console.print(
            f"{self._stage.name} {iteration}/{total} loss {loss} {rate:.2f} it/s eta {clock(eta)}",
            highlight=False,
            soft_wrap=True,
        )
        self._last_line = now
        self._next_tenth = self._tenth_after(iteration)


def clock(seconds: float) -> str:
    """``h:mm:ss``; ``-`` for NaN (no rate yet)."""
    if seconds != seconds:  # NaN: no rate yet
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
