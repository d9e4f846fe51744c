"""Where a sweep's cells run: in this process one after another (``local``), in ``--workers N``
``spinebench run`` processes (one GPU each when GPUs exist), or as Ray tasks with CPU/GPU
requests (``ray``). Every cell logs to the same tracking URI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from rich.console import Console

from spinebench.engine.progress import clock
from spinebench.engine.tracking import Tracker
from spinebench.engine.trainer import Interrupted
from spinebench.errors import SpinebenchError
from spinebench.runinfo import RunRequest
from spinebench.sweep.display import Outcome, SweepDisplay
from spinebench.sweep.plan import PlannedCell
from spinebench.sweep.worker_logs import cell_state


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


class Executor(Protocol):
    parallel: int

    def run(self, cells: Sequence[PlannedCell], display: SweepDisplay) -> Iterator[Outcome]:
        """Yield each cell's outcome as it completes; on interrupt, stop cells and re-raise."""
        ...


class SequentialExecutor:
    """In this process, one cell after another (the engine's bars show inside the sweep's)."""

    parallel = 1

    def run(self, cells: Sequence[PlannedCell], display: SweepDisplay) -> Iterator[Outcome]:
        from spinebench.engine.run import Engine

        for pc in cells:
            display.started(pc)
            start = time.perf_counter()
            try:
                result = Engine(pc.prepared, display.console).run()
            except Interrupted as exc:
                raise KeyboardInterrupt(str(exc)) from None
            except Exception as exc:
                yield Outcome(
                    pc, "failed", seconds=time.perf_counter() - start, error=_one_line(exc)
                )
                continue
            yield Outcome(
                pc,
                "finished",
                result.info.run_id,
                result.metrics.get("test/dice"),
                time.perf_counter() - start,
            )


def run_arguments(req: RunRequest) -> list[str]:
    """``spinebench run`` arguments that reproduce a request exactly."""
    args = [
        "--method",
        req.method,
        "--labeled",
        repr(req.labeled),
        "--dataset",
        req.dataset,
        "--seed",
        str(req.seed),
        "--profile",
        req.profile,
        "--device",
        req.device,
    ]
    if req.resume is not None:
        args.append("--resume" if req.resume else "--no-resume")
    if req.data_dir is not None:
        args += ["--data-dir", str(req.data_dir)]
    if req.config_file is not None:
        args += ["--config", str(req.config_file)]
    if req.tracking_uri:
        args += ["--tracking-uri", req.tracking_uri]
    if req.experiment:
        args += ["--experiment", req.experiment]
    for override in req.overrides:
        args += ["--set", override]
    if req.parent_run:
        args += ["--parent-run", req.parent_run]
    return args


@dataclass
class _Job:
    pc: PlannedCell
    proc: subprocess.Popen
    log: Path
    handle: IO[str]
    start: float = field(default_factory=time.perf_counter)


class ProcessExecutor:
    """``workers`` concurrent ``spinebench run`` processes; with GPUs, worker i sees GPU
    i mod #GPUs only; on CPU, the cores are shared out through ``train.threads`` (unhashed)."""

    def __init__(self, workers: int, gpus: int, tracker: Tracker, log_dir: Path) -> None:
        self.parallel = workers
        self.gpus = gpus
        self.tracker = tracker
        self.log_dir = log_dir

    def _start(self, slot: int, pc: PlannedCell) -> _Job:
        env = dict(os.environ)
        args = [sys.executable, "-m", "spinebench", "run", *run_arguments(pc.request)]
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        else:
            args += ["--set", f"train.threads={max(1, (os.cpu_count() or 1) // self.parallel)}"]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{pc.config_hash}.log"
        handle = log.open("w")
        # A session of its own: a terminal's Ctrl-C reaches the sweep only, which forwards one
        # SIGINT (a second one would abort the run without its step-boundary checkpoint).
        proc = subprocess.Popen(
            args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return _Job(pc, proc, log, handle)

    def _outcome(self, job: _Job) -> Outcome:
        job.handle.close()
        seconds = time.perf_counter() - job.start
        if job.proc.returncode == 0:
            run_id = self.tracker.find_finished(job.pc.config_hash)
            run = self.tracker.get_run(run_id) if run_id else None
            dice = run.metrics.get("test/dice") if run else None
            return Outcome(job.pc, "finished", run_id, dice, seconds)
        lines = [ln for ln in job.log.read_text(errors="replace").splitlines() if ln.strip()]
        reason = next(
            (ln for ln in reversed(lines) if ln.startswith("error:")),
            lines[-1] if lines else f"exit code {job.proc.returncode}",
        )
        return Outcome(job.pc, "failed", seconds=seconds, error=f"{reason[:300]} (log {job.log})")

    def run(self, cells: Sequence[PlannedCell], display: SweepDisplay) -> Iterator[Outcome]:
        queue = deque(cells)
        jobs: dict[int, _Job] = {}
        try:
            while queue or jobs:
                for slot in range(self.parallel):
                    if slot not in jobs and queue:
                        pc = queue.popleft()
                        display.started(pc)
                        jobs[slot] = self._start(slot, pc)
                for slot, job in list(jobs.items()):
                    if job.proc.poll() is not None:
                        del jobs[slot]
                        yield self._outcome(job)
                if jobs and display.heartbeat_due():
                    now = time.perf_counter()
                    display.heartbeat(
                        {j.pc.cell.name: cell_state(j.log, now - j.start) for j in jobs.values()}
                    )
                time.sleep(0.2)
        except (KeyboardInterrupt, GeneratorExit):
            for job in jobs.values():  # each run ends KILLED at a step boundary, resumable
                job.proc.send_signal(signal.SIGINT)
            for job in jobs.values():
                try:
                    job.proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    job.proc.kill()
                job.handle.close()
            raise


def _ray_cell(req: RunRequest) -> dict[str, Any]:
    """One cell inside a Ray worker: the ordinary engine, logging to the shared tracking URI."""
    from spinebench.engine.run import execute

    try:
        result = execute(req, Console(stderr=True, quiet=True))
    except Interrupted as exc:  # ray.cancel: the run ended KILLED at a step boundary
        return {"status": "killed", "error": _one_line(exc)}
    except Exception as exc:
        return {"status": "failed", "error": _one_line(exc)}
    return {
        "status": "finished",
        "run_id": result.info.run_id,
        "dice": result.metrics.get("test/dice"),
    }


class RayExecutor:
    """Cells as Ray tasks with resource requests, spread over the cluster at ``address``
    (a local instance when none is given and none is connected)."""

    def __init__(
        self, address: str | None, cpus_per_cell: float, gpus_per_cell: float | None
    ) -> None:
        try:
            import ray
        except ImportError:
            raise SpinebenchError(
                "--executor ray needs Ray; pip install 'spinebench[ray]'"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        resources = ray.cluster_resources()
        self.gpus = (
            gpus_per_cell
            if gpus_per_cell is not None
            else (1.0 if resources.get("GPU", 0) else 0.0)
        )
        self.cpus = cpus_per_cell
        capacity = resources.get("CPU", 1) / max(cpus_per_cell, 1e-9)
        if self.gpus:
            capacity = min(capacity, resources.get("GPU", 0) / self.gpus)
        self.parallel = max(1, int(capacity))

    def run(self, cells: Sequence[PlannedCell], display: SweepDisplay) -> Iterator[Outcome]:
        ray = self.ray
        task = ray.remote(_ray_cell).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
        threads = [] if self.gpus else [f"train.threads={max(1, int(self.cpus))}"]
        refs = {}
        for pc in cells:
            req = replace(pc.request, overrides=[*pc.request.overrides, *threads])
            refs[task.remote(req)] = pc
        waiting = list(refs)
        started: dict[Any, float] = {}  # the driver cannot see which task runs: the first
        try:  # ``parallel`` unfinished ones are shown as running
            while waiting:
                for ref in waiting[: self.parallel]:
                    if ref not in started:
                        started[ref] = time.perf_counter()
                        display.started(refs[ref])
                if display.heartbeat_due():  # no worker log to read: how long each has run
                    now = time.perf_counter()
                    display.heartbeat(
                        {
                            refs[r].cell.name: f"running ({clock(now - started[r])})"
                            for r in waiting[: self.parallel]
                            if r in started
                        }
                    )
                done, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
                for ref in done:
                    result = ray.get(ref)
                    yield Outcome(
                        refs[ref],
                        result["status"],
                        result.get("run_id"),
                        result.get("dice"),
                        time.perf_counter() - started.get(ref, time.perf_counter()),
                        result.get("error", ""),
                    )
        except (KeyboardInterrupt, GeneratorExit):
            for ref in waiting:
                ray.cancel(ref)  # a running cell gets KeyboardInterrupt and ends KILLED
            raise
