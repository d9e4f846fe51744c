"""Running a planned sweep: skip finished cells, run the rest, record every outcome."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from spinebench.engine.progress import clock
from spinebench.paths import runs_dir
from spinebench.sweep.display import Outcome, SweepDisplay
from spinebench.sweep.executors import Executor
from spinebench.sweep.plan import Plan, tag_variant


@dataclass
class SweepReport:
    outcomes: list[Outcome]
    interrupted: bool = False
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def summary_line(self) -> str:
        """One line for the end of a log: how long the sweep took and how every cell ended."""
        counts = ", ".join(
            f"{status} {self.count(status)}"
            for status in ("finished", "skipped", "failed", "killed", "not run")
            if self.count(status) or status in ("finished", "failed")
        )
        verb = "interrupted after" if self.interrupted else "done in"
        return f"sweep {verb} {clock(self.seconds)}: {len(self.outcomes)} cells, {counts}"


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a sweep like Ctrl-C: running cells end KILLED and resumable (the engine
    installs its own handler while a cell trains in this process)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sweep(sweep_plan: Plan, executor: Executor, console: Console) -> SweepReport:
    """Skip finished cells, run the rest; a failed cell is recorded and the sweep goes on."""
    start = time.perf_counter()
    todo = sweep_plan.to_run()
    pending = {pc.config_hash for pc in todo}
    outcomes: dict[str, Outcome] = {}
    interrupted = False
    with SweepDisplay(console, len(sweep_plan.cells), executor.parallel) as display:
        for pc in sweep_plan.cells:
            if pc.config_hash not in pending:
                outcome = Outcome(pc, "skipped", pc.finished_run)
                outcomes[pc.config_hash] = outcome
                display.finished(outcome)
        try:
            with _sigterm_interrupts():
                for outcome in executor.run(todo, display):
                    variant = outcome.cell.cell.variant.name
                    if outcome.status == "finished" and outcome.run_id and variant:
                        tag_variant(sweep_plan.tracker, outcome.run_id, variant)
                    outcomes[outcome.cell.config_hash] = outcome
                    display.finished(outcome)
        except KeyboardInterrupt:
            interrupted = True
        started = set(display.running)
    failed = any(o.status == "failed" for o in outcomes.values())
    status = "KILLED" if interrupted else "FAILED" if failed else "FINISHED"
    sweep_plan.tracker.end_run(sweep_plan.parent_run, status)
    ordered = [
        outcomes.get(pc.config_hash)
        or Outcome(pc, "killed" if pc.cell.name in started else "not run")
        for pc in sweep_plan.cells
    ]
    return SweepReport(ordered, interrupted, time.perf_counter() - start)


def default_log_dir() -> Path:
    return runs_dir() / "sweep-logs"
