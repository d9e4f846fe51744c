"""One tracked run, in order: reach the store, set up, train every stage, test, record.

The pieces live with their owners: checks before anything is written in
:mod:`~spinebench.engine.prepare`, stage decisions (cache, load-from, resume) in
:mod:`~spinebench.engine.stages`, the loop in :mod:`~spinebench.engine.trainer`, every file in
:mod:`~spinebench.engine.artifacts`, MLflow in :mod:`~spinebench.engine.tracking`. A run is
identified by its config hash: an unfinished run with the same hash is resumed (same MLflow
run, from the latest intact checkpoint) unless ``resume=False``.
"""

from __future__ import annotations

import math
import time
import traceback
from contextlib import nullcontext
from typing import Any

import torch
from rich.console import Console

from spinebench import __version__, plugins
from spinebench.config import flatten, short_summary
from spinebench.data.slices import SliceCache, build_or_load
from spinebench.data.streams import TrainStreams
from spinebench.engine import artifacts, distributed
from spinebench.engine.distributed import SINGLE, Distributed
from spinebench.engine.evaluate import evaluate, summarize, validate
from spinebench.engine.prepare import Prepared, load_data, resolve_request
from spinebench.engine.runtime import Runtime, pick_device, setup, stage_seed, torch_settings_kept
from spinebench.engine.stages import RunCheckpoints, StageCache, StageEnv, restore, run_stages
from spinebench.engine.tracking import (
    MlflowTracker,
    NullTracker,
    Tag,
    Tracker,
    experiment_name,
    resolve_uri,
    source_commit,
)
from spinebench.engine.trainer import Interrupted, TrainState
from spinebench.errors import ConfigError
from spinebench.method import Method, MethodContext, Stage
from spinebench.runinfo import RunInfo, RunRequest, RunResult


def build_method(prepared: Prepared) -> Method:
    """The method of a prepared run, on the CPU, as its plugin builds it."""
    config = prepared.config
    ctx = MethodContext(
        class_map=prepared.class_map,
        image_size=int(config["data"]["image_size"]),
        options=dict(config["method"]),
        config=config,
    )
    return prepared.method_cls(ctx)


class Engine:
    """Runs one prepared request end to end: alone, or as one rank of a ``torchrun`` job
    (rank 0 tracks, checkpoints, validates and tests; the others only train)."""

    def __init__(
        self,
        prepared: Prepared,
        console: Console | None = None,
        tracker: Tracker | None = None,
        dist: Distributed = SINGLE,
    ) -> None:
        self.p = prepared
        self.dist = dist
        self.console = console or Console(stderr=True, quiet=not dist.main)
        self.config = prepared.config
        self.tracker = tracker

    def run(self) -> RunResult:
        req = self.p.request
        tracker: Tracker
        if self.dist.main:  # an unreachable store is an error before any training
            tracker = self.tracker or connect(req)
            lock: Any = artifacts.config_lock(self.p.config_hash)
        else:
            tracker, lock = NullTracker(resolve_uri(req.tracking_uri)), nullcontext()
        with lock, torch_settings_kept():
            return self._run(tracker)

    def _setup(self) -> tuple[Runtime, SliceCache, Method]:
        runtime = setup(self.config["train"], self.p.request.device, self.p.request.seed, self.dist)
        t0 = time.perf_counter()
        cache = build_or_load(self.p.request.dataset, self.p.dataset, self.config)
        self.cache_seconds = time.perf_counter() - t0
        method = build_method(self.p)
        if self.config["train"]["compile"]:  # in place, so state-dict keys stay the same
            for module in method.children():
                module.compile()
        if self.dist.enabled and runtime.device.type == "cuda":  # BatchNorm over the global batch
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        method = method.to(runtime.device)
        if runtime.channels_last:
            method = method.to(memory_format=torch.channels_last)
        self.dist.sync_module(method)
        return runtime, cache, method

    def _run(self, tracker: Tracker) -> RunResult:
        req, cfg, main = self.p.request, self.config, self.dist.main
        run_name = f"{req.method}-l{req.labeled:g}-s{req.seed}"
        resume_id = self.dist.broadcast(self._resume_target(tracker, run_name) if main else None)
        self.runtime, self.cache, method = self._setup()
        split_hash = self.p.split.hash()
        info = RunInfo(
            req.method,
            req.dataset,
            req.seed,
            req.labeled,
            req.profile,
            cfg,
            self.p.config_hash,
            split_hash,
            tracker.uri,
            experiment_name(req.dataset, req.experiment),
        )
        ckpt = None
        if resume_id and main:  # read by rank 0 and sent: other nodes need no shared folder
            where = "cpu" if self.dist.enabled else self.runtime.device
            ckpt = RunCheckpoints(artifacts.checkpoint_dir(resume_id)).latest(where)
        ckpt = self.dist.broadcast(ckpt)
        streams = self._streams(ckpt["state"]["stage_index"] if ckpt else 0)
        state = restore(method, ckpt, streams) if ckpt else TrainState()
        info.run_id = self.dist.broadcast(
            tracker.start(run_name, self._tags(split_hash), cfg, resume_id=resume_id)
        )
        tracker.set_tag(Tag.DATA_CACHE, "built" if self.cache.built_now else "reused")
        checkpoints = RunCheckpoints(artifacts.checkpoint_dir(info.run_id)) if main else None
        self._announce(info, state, ckpt is not None, resume_id is not None)
        try:
            if ckpt is None:  # a run killed before its first checkpoint logs them again
                artifacts.log_start(tracker, cfg, self.p.split, self.p.class_map)
                tracker.log_metrics({"data/cache_seconds": self.cache_seconds}, 0)
            if main:
                plugins.get_plugin_manager().hook.spinebench_run_started(run=info)
            run_stages(method, self._stage_env(tracker, checkpoints), state, streams, ckpt)
            if checkpoints is None:
                return RunResult(info, {}, {}, ckpt is not None, self.dist.rank)
            metrics, per_case = self._test(method, tracker, checkpoints)
            plugins.get_plugin_manager().hook.spinebench_run_finished(run=info, results=metrics)
        except (Interrupted, KeyboardInterrupt) as exc:
            tracker.end("KILLED", f"interrupted: {exc}")
            raise
        except BaseException as exc:
            tracker.end("FAILED", "".join(traceback.format_exception_only(exc)).strip())
            raise
        tracker.end("FINISHED")
        checkpoints.remove()  # the final model is a tracked artifact
        return RunResult(info, metrics, per_case, resumed=ckpt is not None)

    def _tags(self, split_hash: str) -> dict[str, str]:
        req = self.p.request
        tags = {
            Tag.METHOD: req.method,
            Tag.DATASET: req.dataset,
            Tag.LABELED: str(req.labeled),
            Tag.SEED: str(req.seed),
            Tag.SPLIT_HASH: split_hash,
            Tag.VERSION: __version__,
            Tag.PLUGIN: plugins.methods().owner(req.method).requirement,
            Tag.PROFILE: req.profile,
            Tag.CONFIG_HASH: self.p.config_hash,
        }
        sha = source_commit()
        if sha:
            tags[Tag.GIT_COMMIT] = sha
        return tags

    def _announce(self, info: RunInfo, state: TrainState, resumed: bool, found: bool) -> None:
        split = self.p.split
        where = (
            f"resumed at stage {state.stage_index} iteration {state.iteration}"
            if resumed
            else "resumed from the start"
            if found
            else "new"
        )
        self.console.print(f"[bold]spinebench[/] {short_summary(self.config)}")
        self.console.print(
            f"run {info.run_id} ({where}) "
            f"| split {len(split.labeled)} labeled / {len(split.unlabeled)} "
            f"unlabeled / {len(split.val)} val / {len(split.test)} test cases "
            f"| device {self.runtime.device} {self.runtime.precision}"
        )

    def _resume_target(self, tracker: Tracker, run_name: str) -> str | None:
        """The run to continue, or None; an explicit --resume that cannot happen says why."""
        if self.p.request.resume is False:
            return None
        found = tracker.find_unfinished(self.p.config_hash)
        if found or self.p.request.resume is None:
            return found
        other = tracker.find_unfinished_by_name(run_name)
        if other is None:
            raise ConfigError(
                f"--resume: no unfinished run {run_name!r} with this config; "
                "drop --resume to start a new run"
            )
        run_id, params = other
        now = {k: str(v) for k, v in flatten(self.config).items()}
        changes = [
            f"{k}: {params.get(k)} -> {now.get(k)}"
            for k in sorted(now.keys() | params)
            if params.get(k) != now.get(k)
        ]
        raise ConfigError(
            f"--resume: run {run_id} was started with another config "
            f"({'; '.join(changes[:5])}); rerun with its settings or use --no-resume"
        )

    def _streams(self, stage_index: int) -> TrainStreams:
        seed = stage_seed(self.p.request.seed, stage_index)
        return TrainStreams(
            self.cache, self.p.split, self.config, seed, self.runtime.device, self.dist.shard
        )

    def _validate(self, method: Method, stage: Stage) -> dict[str, float]:
        return validate(
            method,
            stage,
            self.cache,
            self.p.split.val,
            self.p.class_map,
            plugins.metrics()["dice"],
            self.runtime,
            int(self.config["eval"]["batch_size"]),
        )

    def _stage_env(self, tracker: Tracker, checkpoints: RunCheckpoints | None) -> StageEnv:
        return StageEnv(
            method_name=self.p.request.method,
            seed=self.p.request.seed,
            runtime=self.runtime,
            train=self.config["train"],
            make_streams=self._streams,
            validate=self._validate,
            tracker=tracker,
            console=self.console,
            dist=self.dist,
            checkpoints=checkpoints,
            cache=StageCache(self.p.request.method, self.p.split.hash(), self.cache.root.name),
        )

    def _test(
        self, method: Method, tracker: Tracker, checkpoints: RunCheckpoints
    ) -> tuple[dict[str, float], artifacts.Scores]:
        checkpoints.load_best(method, self.runtime.device)
        scores, preds = evaluate(
            method,
            self.cache,
            self.p.split.test,
            self.p.class_map,
            plugins.metrics(),
            self.runtime.device,
            int(self.config["eval"]["batch_size"]),
            self.runtime.autocast(),
        )
        metrics = summarize(scores, self.p.class_map, "test")
        total = sum(s.iterations for s in method.stages())
        tracker.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)}, total)
        artifacts.log_results(
            tracker, method, scores, preds, self.cache, self.p.class_map, self.config
        )
        return metrics, scores


def connect(req: RunRequest) -> MlflowTracker:
    """The request's tracking store and experiment (a one-line error when unreachable)."""
    return MlflowTracker(
        resolve_uri(req.tracking_uri), experiment_name(req.dataset, req.experiment)
    )


def execute(req: RunRequest, console: Console | None = None) -> RunResult:
    """Validate, reach the tracking store, then build data and run: a store that is down fails
    before any cache is built or anything trained. Started by ``torchrun``, it is one rank of
    a data-parallel run."""
    resolved = resolve_request(req)
    dist = distributed.from_environment(pick_device(req.device).type)
    try:
        tracker = connect(req) if dist.main else None
        if not dist.main:
            console = Console(stderr=True, quiet=True)
        return Engine(load_data(resolved), console, tracker, dist).run()
    finally:
        dist.close()
