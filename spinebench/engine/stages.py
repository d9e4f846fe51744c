"""Which stages train and which are taken from elsewhere, and where a run resumes.

For each stage of a method, in order: a resumed run continues inside the stage from its
checkpoint; a stage whose ``cache_key`` state is cached is loaded and skipped; a stage with
``load_from`` (a state file or a tracked run id) is loaded and skipped; any other stage trains
with :func:`spinebench.engine.trainer.run_stage`. Each trained stage starts from a seed that
follows from the run seed and the stage's position alone, so whether earlier stages were
trained, cached or resumed never changes a later stage's randomness.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from spinebench.config import config_hash, params_of
from spinebench.data.streams import TrainStreams
from spinebench.engine import artifacts, checkpoint
from spinebench.engine.distributed import SINGLE, Distributed
from spinebench.engine.progress import StageProgress
from spinebench.engine.runtime import Runtime, rng_state, seed_everything, stage_seed
from spinebench.engine.tracking import Tag, Tracker
from spinebench.engine.trainer import StageContext, StepObserver, StopFlag, TrainState, run_stage
from spinebench.errors import ConfigError
from spinebench.method import Method, Stage, seed_positions
from spinebench.runinfo import RunRequest


class RunCheckpoints:
    """The resume and best-model checkpoints of one run, in its own folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save_best(self, method: Method) -> None:
        checkpoint.save({"method": method.state_dict()}, self.folder, "best")

    def save(
        self,
        method: Method,
        state: TrainState,
        opt: torch.optim.Optimizer | None,
        sched: Any,
        streams: TrainStreams,
    ) -> None:
        checkpoint.save(
            {
                "method": method.state_dict(),
                "optimizer": opt.state_dict() if opt is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "streams": streams.state_dict(),
                "rng": rng_state(),
                "state": copy.deepcopy(state.__dict__),
                "time": time.time(),
            },
            self.folder,
        )

    def latest(self, map_location: str | torch.device) -> dict[str, Any] | None:
        return checkpoint.load_latest(self.folder, map_location)

    def load_best(self, method: Method, map_location: str | torch.device) -> bool:
        """Put the best validated state back, when the run kept one; whether it did."""
        best = self.folder / "best.pt"
        if not best.is_file():
            return False
        method.load_state_dict(checkpoint.load_file(best, map_location)["method"])
        return True

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_name_of(req: RunRequest) -> str:
    return f"{req.method}-l{req.labeled:g}-s{req.seed}"


def resume_target(tracker: Tracker, req: RunRequest, config: dict[str, Any]) -> str | None:
    """The unfinished run with this config to continue, or None; an explicit ``--resume``
    that cannot happen says why (no such run, or one started with another config)."""
    if req.resume is False:
        return None
    found = tracker.find_unfinished(config_hash(config))
    if found or req.resume is None:
        return found
    name = run_name_of(req)
    other = tracker.find_unfinished_by_name(name)
    if other is None:
        raise ConfigError(
            f"--resume: no unfinished run {name!r} with this config; drop --resume to start a "
            "new run"
        )
    run_id, params = other
    now = params_of(config)
    changes = [
        f"{k}: {params.get(k)} -> {now.get(k)}"
        for k in sorted(now.keys() | params)
        if params.get(k) != now.get(k)
    ]
    raise ConfigError(
        f"--resume: run {run_id} was started with another config "
        f"({'; '.join(changes[:5])}); rerun with its settings or use --no-resume"
    )


def same_split(
    tracker: Tracker, run_id: str, split_hash: str, req: RunRequest, console: Console
) -> str | None:
    """The unfinished run to resume, if the data still split as it did when it started: cases
    added, removed or renamed since make another split, and that run's ``split.json`` and
    per-case results would no longer agree. Then a new run starts (``--resume`` refuses)."""
    run = tracker.get_run(run_id)
    recorded = run.tags.get(Tag.SPLIT_HASH) if run is not None else None
    if recorded is None or recorded == split_hash:
        return run_id
    change = (
        f"unfinished run {run_id} was started on another split of the data (split "
        f"{recorded}, now {split_hash}: cases were added, removed or renamed)"
    )
    if req.resume:
        raise ConfigError(f"--resume: {change}; use --no-resume to start a new run")
    console.print(f"notice: {change}; starting a new run, which does not continue it")
    return None


def restore(method: Method, ckpt: dict[str, Any], streams: TrainStreams) -> TrainState:
    """Load a checkpoint's model and data-stream state; return the loop state (the random
    state is put back by :func:`~spinebench.engine.trainer.run_stage`, after the stage's own
    set-up)."""
    method.load_state_dict(ckpt["method"])
    streams.load_state_dict(ckpt["streams"])
    return TrainState(**ckpt["state"])


@dataclass(frozen=True)
class StageCache:
    """Stage states cached under a hash of ``Stage.cache_key``, the split and the data.

    On the CPU the torch thread count is part of the key: a stage trained at another count is
    not bit-identical to the one this run would train, so loading it would make the run differ
    from its own reproduction.
    """

    method: str
    split_hash: str
    data_key: str
    cpu_threads: int | None = None  # None on a GPU

    def path(self, stage: Stage) -> Path | None:
        if stage.cache_key is None:
            return None
        payload = json.dumps(
            {
                "key": stage.cache_key,
                "split": self.split_hash,
                "data": self.data_key,
                "method": self.method,
                "stage": stage.name,
                **({"cpu_threads": self.cpu_threads} if self.cpu_threads is not None else {}),
                # a stage seeded from another position trains another state
                **({"seed_index": stage.seed_index} if stage.seed_index is not None else {}),
            },
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
        return artifacts.stage_cache_path(self.method, stage.name, digest)


@dataclass
class StageEnv:
    """What running a method's stages needs from the engine (or from the conformance kit)."""

    method_name: str
    seed: int
    runtime: Runtime
    train: dict[str, Any]
    make_streams: Callable[[int], TrainStreams]
    validate: Callable[[Method, Stage], dict[str, float]]
    tracker: Tracker
    console: Console
    dist: Distributed = SINGLE
    checkpoints: RunCheckpoints | None = None
    cache: StageCache | None = None
    max_steps: int | None = None
    observer: StepObserver | None = None


def run_stages(
    method: Method,
    env: StageEnv,
    state: TrainState,
    streams: TrainStreams,
    ckpt: dict[str, Any] | None,
) -> TrainState:
    """Every stage from ``state.stage_index`` on; ``ckpt`` is where a resumed run stopped."""
    stages = method.stages()
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"method {env.method_name!r} declares duplicate stages {names}")
    seeds = seed_positions(stages)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(
            f"method {env.method_name!r} gives two stages the same seed_index ({seeds} for "
            f"{names}); each stage needs its own"
        )
    first = state.stage_index
    offset = sum(s.iterations for s in stages[:first])
    with StopFlag() as stop, StageProgress(env.console) as progress:
        for index in range(first, len(stages)):
            stage = stages[index]
            resume = ckpt if index == first and state.iteration else None
            if resume is None:  # its randomness never depends on how earlier stages ran
                seed_everything(stage_seed(env.seed, seeds[index]))
                streams = env.make_streams(seeds[index])
                state.best_score, state.best_iteration = -math.inf, -1  # each stage's own best
            if state.iteration or not _take_stage(method, stage, env):
                ctx = StageContext(
                    streams,
                    env.runtime,
                    env.train,
                    env.tracker.log_metrics,
                    lambda s: env.validate(method, s),
                    progress,
                    stop,
                    env.checkpoints,
                    offset,
                    env.dist,
                    env.max_steps,
                    env.observer,
                )
                run_stage(method, stage, state, ctx, resume)
                if stage.restore_best:
                    _restore_best(method, env)
                _cache_stage(method, stage, env)
            offset += stage.iterations
            state.stage_index, state.iteration = index + 1, 0
            state.done_stages.append(stage.name)
            if env.checkpoints is not None and env.dist.main:
                env.checkpoints.save(method, state, None, None, streams)
    if state.skipped_steps:
        env.tracker.log_metrics({"train/skipped_nonfinite_steps": state.skipped_steps}, offset)
    return state


def _restore_best(method: Method, env: StageEnv) -> None:
    """The stage's best-validation state, which the next stage starts from (rank 0 reads it,
    the others receive it; the conformance kit keeps no checkpoints and goes on as it is)."""
    if env.checkpoints is None:
        return
    if env.dist.main:
        env.checkpoints.load_best(method, env.runtime.device)
    env.dist.sync_module(method)


def _take_stage(method: Method, stage: Stage, env: StageEnv) -> bool:
    """Load the stage from the cache or from ``load_from`` instead of training it (rank 0
    reads the state, the others receive it)."""
    cache_path = env.cache.path(stage) if env.cache is not None else None
    if env.dist.broadcast(cache_path is not None and cache_path.is_file()):
        assert cache_path is not None
        if env.dist.main:
            method.load_stage_state_dict(
                stage, checkpoint.load_file(cache_path, env.runtime.device)
            )
        env.dist.sync_module(method)
        env.tracker.set_tag(Tag.stage_cache(stage.name), "hit")
        env.console.print(f"stage {stage.name}: loaded from cache {cache_path.name}")
        return True
    if not stage.load_from:
        return False
    if env.dist.main:
        with tempfile.TemporaryDirectory() as tmp:
            path = stage_source(stage, env.method_name, env.tracker, Path(tmp))
            method.load_stage_state_dict(stage, checkpoint.load_file(path, env.runtime.device))
    env.dist.sync_module(method)
    env.tracker.set_tag(Tag.stage_source(stage.name), stage.load_from)
    env.console.print(f"stage {stage.name}: loaded from {stage.load_from}")
    return True


def _cache_stage(method: Method, stage: Stage, env: StageEnv) -> None:
    """Keep a freshly trained stage under its cache key and log it with the run."""
    cache_path = env.cache.path(stage) if env.cache is not None else None
    if cache_path is None or not env.dist.main:
        return
    checkpoint.save(method.stage_state_dict(stage), cache_path.parent, cache_path.stem)
    env.tracker.set_tag(Tag.stage_cache(stage.name), "miss")
    env.tracker.log_artifact(cache_path, artifacts.STAGES)


def stage_source(stage: Stage, method: str, tracker: Tracker, folder: Path) -> Path:
    """A stage state given as a file, or as the id of a tracked run that cached the stage
    (downloaded into ``folder``)."""
    source = str(stage.load_from)
    path = Path(source).expanduser()
    if path.is_file():
        return path
    prefix = artifacts.stage_artifact_prefix(method, stage.name)
    match = [
        a
        for a in tracker.list_artifacts(source, artifacts.STAGES)
        if Path(a).name.startswith(prefix)
    ]
    found = tracker.download(source, match[0], folder) if match else None
    if found is None:
        raise ConfigError(
            f"stage {stage.name!r} source {source!r} is neither a file nor a "
            f"run id with a cached '{stage.name}' stage in {tracker.uri}; "
            "pass a .pt path or the id of a run that trained this stage"
        )
    return found
