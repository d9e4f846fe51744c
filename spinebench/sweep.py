"""Sweeps: a grid of ordinary tracked runs that is idempotent and survives interruption.

A cell is (method, labeled fraction, seed, variant); a variant is a named list of ``--set``
overrides (ablations). Every cell is prepared before anything runs, so a bad option fails at
once, and looked up by config hash: a cell with a FINISHED run is skipped unless forced, and an
interrupted cell continues its own run (the engine resumes unfinished runs by config hash).

Executors: ``local`` runs cells in this process, one after another, or in ``--workers N``
``spinebench run`` processes (one GPU each when GPUs exist); ``ray`` submits cells as Ray tasks
with CPU/GPU requests. Every cell logs to the same tracking URI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

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

from spinebench.config import load_yaml_file
from spinebench.engine.run import Prepared, RunRequest, prepare
from spinebench.engine.tracking import TAG, Tracker, experiment_name, resolve_uri
from spinebench.errors import ConfigError, SpinebenchError
from spinebench.leaderboard import VARIANT_TAG
from spinebench.paths import runs_dir

STATUS_STYLES = {"finished": "green", "skipped": "dim", "failed": "red", "killed": "yellow"}
GRID_KEYS = ("methods", "labeled", "seeds", "set", "variants")
VARIANT_KEYS = ("name", "set", "methods")


@dataclass(frozen=True)
class Variant:
    """Named overrides added to the cells of some methods (all when ``methods`` is empty)."""

    name: str
    overrides: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods


BASE = Variant("")


@dataclass(frozen=True)
class Cell:
    method: str
    labeled: float
    seed: int
    variant: Variant = BASE

    @property
    def name(self) -> str:
        tag = f"[{self.variant.name}]" if self.variant.name else ""
        return f"{self.method}{tag} l={self.labeled:g} s={self.seed}"


@dataclass(frozen=True)
class Grid:
    """What a sweep varies; ``overrides`` apply to every cell."""

    methods: tuple[str, ...]
    labeled: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()

    def cells(self) -> list[Cell]:
        """Seed-major order, so a complete one-seed table exists as early as possible."""
        return [
            Cell(m, f, s, v)
            for s in self.seeds
            for f in self.labeled
            for m in self.methods
            for v in (BASE, *self.variants)
            if v is BASE or v.applies_to(m)
        ]


def _as_list(value: Any, key: str, origin: str) -> list[str]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        items = [str(value)]
    elif isinstance(value, list | tuple):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError(f"{origin}: {key} must be a list or a comma-separated string")
    if not items or any(not v for v in items):
        raise ConfigError(f"{origin}: {key} has an empty entry; write e.g. {key}: [a, b]")
    return items


def _overrides(value: Any, origin: str) -> tuple[str, ...]:
    """``set:`` entries, one ``key=value`` each (never split on commas: values may hold them)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{origin}: set must be a list of key=value strings")
    return tuple(items)


def _numbers(items: list[str], kind: type, key: str, origin: str) -> tuple:
    try:
        values = tuple(kind(v) for v in items)
    except ValueError:
        raise ConfigError(f"{origin}: {key} must hold {kind.__name__}s, got {items}") from None
    if len(set(values)) != len(values):
        raise ConfigError(f"{origin}: {key} lists a value twice ({items}); list each once")
    return values


def _variants(raw: Any, origin: str) -> tuple[Variant, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{origin}: variants must be a list of {{name, set, methods}} mappings")
    out = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(
                f"{origin}: each variant needs a name, e.g. "
                "{name: no_token_loss, set: [cps4.token_loss=false]}"
            )
        unknown = set(entry) - set(VARIANT_KEYS)
        if unknown:
            raise ConfigError(
                f"{origin}: variant {entry['name']!r} has unknown keys "
                f"{sorted(unknown)}; valid: {', '.join(VARIANT_KEYS)}"
            )
        sets = _overrides(entry.get("set"), origin)
        methods = _as_list(entry["methods"], "methods", origin) if entry.get("methods") else []
        out.append(Variant(entry["name"], sets, tuple(methods)))
    names = [v.name for v in out]
    if len(set(names)) != len(names) or "" in names:
        raise ConfigError(f"{origin}: variant names must be unique and non-empty, got {names}")
    return tuple(out)


def make_grid(
    grid_file: Path | None = None,
    methods: str | None = None,
    labeled: str | None = None,
    seeds: str | None = None,
) -> Grid:
    """The grid of a ``--grid`` file, with ``--methods/--labeled/--seeds`` replacing its lists."""
    raw: dict[str, Any] = load_yaml_file(grid_file) if grid_file else {}
    origin = str(grid_file) if grid_file else "command line"
    unknown = set(raw) - set(GRID_KEYS)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown grid keys {sorted(unknown)}; valid: {', '.join(GRID_KEYS)}"
        )
    for key, given in (("methods", methods), ("labeled", labeled), ("seeds", seeds)):
        if given is not None:
            raw[key] = _as_list(given, f"--{key}", "command line")
        elif key in raw:
            raw[key] = _as_list(raw[key], key, origin)
    for key in ("methods", "labeled"):
        if key not in raw:
            raise ConfigError(f"no {key} to sweep; pass --{key} a,b or list them in a --grid file")
    variants_methods = _variants(raw.get("variants", []), origin)
    unknown_methods = {m for v in variants_methods for m in v.methods} - set(raw["methods"])
    if unknown_methods:
        raise ConfigError(
            f"{origin}: variants name methods not in the sweep: {sorted(unknown_methods)}"
        )
    return Grid(
        methods=tuple(dict.fromkeys(raw["methods"])),
        labeled=_numbers(raw["labeled"], float, "labeled", origin),
        seeds=_numbers(raw.get("seeds", ["0"]), int, "seeds", origin),
        overrides=_overrides(raw.get("set"), origin),
        variants=variants_methods,
    )


# -- planning -------------------------------------------------------------------------------------


@dataclass
class PlannedCell:
    cell: Cell
    prepared: Prepared
    finished_run: str | None  # an existing FINISHED run with this config hash

    @property
    def request(self) -> RunRequest:
        return self.prepared.request

    @property
    def config_hash(self) -> str:
        return self.prepared.config_hash


@dataclass
class Plan:
    uri: str
    experiment: str
    tracker: Tracker
    cells: list[PlannedCell]
    force: bool = False

    def to_run(self) -> list[PlannedCell]:
        return [c for c in self.cells if self.force or c.finished_run is None]


def plan(grid: Grid, template: RunRequest, force: bool = False) -> Plan:
    """Prepare every cell (validating it) and find the ones that already finished."""
    uri = resolve_uri(template.tracking_uri)
    experiment = experiment_name(template.dataset, template.experiment)
    prepared: list[tuple[Cell, Prepared]] = []
    seen: dict[str, Cell] = {}
    for cell in grid.cells():
        overrides = [*grid.overrides, *template.overrides, *cell.variant.overrides]
        req = replace(
            template,
            method=cell.method,
            labeled=cell.labeled,
            seed=cell.seed,
            overrides=overrides,
            tracking_uri=uri,
            experiment=experiment,
        )
        p = prepare(req)
        if p.config_hash in seen:
            raise ConfigError(
                f"cells {seen[p.config_hash].name} and {cell.name} resolve "
                "to the same config; drop the variant that changes nothing"
            )
        seen[p.config_hash] = cell
        prepared.append((cell, p))
    tracker = Tracker(uri, experiment)  # creates the experiment once, before any worker starts
    finished = finished_runs(tracker)
    planned = [PlannedCell(cell, p, finished.get(p.config_hash)) for cell, p in prepared]
    for pc in planned:
        if pc.finished_run and pc.cell.variant.name:
            tag_variant(tracker, pc.finished_run, pc.cell.variant.name)
    return Plan(uri, experiment, tracker, planned, force)


def finished_runs(tracker: Tracker) -> dict[str, str]:
    """Config hash -> newest FINISHED run id in the experiment."""
    out: dict[str, str] = {}
    token = None
    while True:
        page = tracker.client.search_runs(
            [tracker.experiment_id],
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
            page_token=token,
        )
        for run in page:
            digest = run.data.tags.get(f"{TAG}config_hash")
            if digest:
                out[digest] = run.info.run_id
        token = page.token
        if not token:
            return out


def finished_run(tracker: Tracker, config_hash: str) -> str | None:
    """The newest FINISHED run with this config hash."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        f"tags.`{TAG}config_hash` = '{config_hash}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def tag_variant(tracker: Tracker, run_id: str, variant: str) -> None:
    """The variant name keys the leaderboard row; it is not part of the config."""
    tracker.client.set_tag(run_id, VARIANT_TAG, variant)


# -- outcomes and display -------------------------------------------------------------------------


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
            eta = _clock(mean * remaining / min(self.parallel, remaining))
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


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


# -- executors ------------------------------------------------------------------------------------


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
        from spinebench.engine.trainer import Interrupted

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
            run_id = finished_run(self.tracker, job.pc.config_hash)
            dice = (
                self.tracker.client.get_run(run_id).data.metrics.get("test/dice")
                if run_id
                else None
            )
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
    from spinebench.engine.trainer import Interrupted

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


# -- the sweep ------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    outcomes: list[Outcome]
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


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
    ordered = [
        outcomes.get(pc.config_hash)
        or Outcome(pc, "killed" if pc.cell.name in started else "not run")
        for pc in sweep_plan.cells
    ]
    return SweepReport(ordered, interrupted)


def default_log_dir() -> Path:
    return runs_dir() / "sweep-logs"
