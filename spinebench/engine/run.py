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
from spinebench.config import short_summary
from spinebench.data.slices import SliceCache
from spinebench.data.streams import TrainStreams
from spinebench.engine import artifacts, distributed
from spinebench.engine.artifacts import Scores
from spinebench.engine.distributed import SINGLE, Distributed
from spinebench.engine.evaluate import Evaluation, coverage, evaluate, summarize, validate
from spinebench.engine.prepare import (
    Prepared,
    build_cache,
    build_method,
    load_data,
    resolve_request,
)
from spinebench.engine.runtime import (
    Runtime,
    library_versions,
    pick_device,
    setup,
    stage_seed,
    torch_settings_kept,
)
from spinebench.engine.stages import (
    RunCheckpoints,
    StageCache,
    StageEnv,
    restore,
    resume_target,
    run_name_of,
    run_stages,
    same_split,
)
from spinebench.engine.tracking import (
    MlflowTracker,
    NoSuchExperiment,
    NullTracker,
    Tag,
    Tracker,
    experiment_name,
    probe,
    resolve_uri,
    run_note,
    source_commit,
    store_exists,
)
from spinebench.engine.trainer import Interrupted, TrainState
from spinebench.errors import SpinebenchError
from spinebench.method import Method, Stage
from spinebench.runinfo import RunInfo, RunRequest, RunResult


class Engine:
    """Runs one prepared request end to end: alone, or as one rank of a ``torchrun`` job
    (rank 0 tracks, checkpoints, validates and tests; the others only train)."""

    def __init__(
        self,
        prepared: Prepared,
        console: Console | None = None,
        tracker: Tracker | None = None,
        dist: Distributed = SINGLE,
        resume: str | None = None,
    ) -> None:
        """``resume``: the run to continue, when the caller has looked it up already."""
        self.p = prepared
        self.dist = dist
        self.console = console or Console(stderr=True, quiet=not dist.main)
        self.config = prepared.config
        self.tracker = tracker
        self.resume = resume

    def run(self) -> RunResult:
        """Set up (every case's files are read and the method built: the last checks), then
        reach the store, hold the config's lock and train."""
        req = self.p.request
        tracker: Tracker
        run_name = run_name_of(req)
        resume_id = self.resume
        if self.dist.main:  # read only, before any work
            known = self.tracker or existing(req)
            if resume_id is None:
                resume_id = resume_target(known, req, self.config)
            if resume_id is not None:
                resume_id = same_split(known, resume_id, self.p.split.hash(), req, self.console)
        with torch_settings_kept():
            self.runtime, self.cache, method = self._setup()
            if self.dist.main:
                tracker = self.tracker or connect(req)
                lock: Any = artifacts.config_lock(self.p.config_hash)
            else:
                tracker, lock = NullTracker(resolve_uri(req.tracking_uri)), nullcontext()
            with lock:
                return self._run(tracker, method, run_name, self.dist.broadcast(resume_id))

    def _setup(self) -> tuple[Runtime, SliceCache, Method]:
        runtime = setup(self.config["train"], self.p.request.device, self.p.request.seed, self.dist)
        method = build_method(self.p)  # right after seeding: weights follow from the seed alone
        t0 = time.perf_counter()
        cache = build_cache(self.p)
        self.cache_seconds = time.perf_counter() - t0
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

    def _run(
        self, tracker: Tracker, method: Method, run_name: str, resume_id: str | None
    ) -> RunResult:
        req, cfg, main = self.p.request, self.config, self.dist.main
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
                tracker.log_inputs(artifacts.data_inputs(req, self.p.split))
                tracker.log_metrics({"data/cache_seconds": self.cache_seconds}, 0)
                tracker.set_tag(Tag.NOTE, self._note(info, None))
            if main:
                plugins.get_plugin_manager().hook.spinebench_run_started(run=info)
            run_stages(method, self._stage_env(tracker, checkpoints), state, streams, ckpt)
            if checkpoints is None:
                return RunResult(info, {}, {}, ckpt is not None, self.dist.rank)
            metrics, per_case = self._test(method, tracker, checkpoints, state)
            tracker.set_tag(Tag.NOTE, self._note(info, metrics))
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

    def _note(self, info: RunInfo, metrics: dict[str, float] | None) -> str:
        split = self.p.split
        sizes = {
            "labeled": len(split.labeled),
            "unlabeled": len(split.unlabeled),
            "val": len(split.val),
            "test": len(split.test),
        }
        return run_note(self.p.request, info.run_id or "", sizes, metrics)

    def _stage_cache(self) -> StageCache:
        cpu = self.runtime.device.type == "cpu"
        return StageCache(
            self.p.request.method,
            self.p.split.hash(),
            self.cache.root.name,
            self.runtime.threads if cpu else None,
        )

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
            Tag.TORCH_THREADS: str(self.runtime.threads),
            Tag.LIBRARIES: library_versions(),
            **({Tag.PARENT_RUN: req.parent_run} if req.parent_run else {}),
            **req.extra_tags,
        }
        sha = source_commit()
        return {**tags, Tag.GIT_COMMIT: sha} if sha else tags

    def _announce(self, info: RunInfo, state: TrainState, resumed: bool, found: bool) -> None:
        split = self.p.split
        where = "resumed from the start" if found else "new"
        if resumed:
            where = f"resumed at stage {state.stage_index} iteration {state.iteration}"
        self.console.print(f"[bold]spinebench[/] {short_summary(self.config)}")
        self.console.print(
            f"run {info.run_id} ({where}) "
            f"| split {len(split.labeled)} labeled / {len(split.unlabeled)} "
            f"unlabeled / {len(split.val)} val / {len(split.test)} test cases "
            f"| device {self.runtime.device} {self.runtime.precision}"
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
            cache=self._stage_cache() if self.p.request.reuse_stage_cache else None,
        )

    def _test(
        self, method: Method, tracker: Tracker, checkpoints: RunCheckpoints, state: TrainState
    ) -> tuple[dict[str, float], Scores]:
        """The test split, scored with the last state (``test_last/*``, ``per_case_last.csv``)
        and with the best-validation one (``test/*``, ``per_case.csv``, the final model); one
        evaluation when the last validation was the best."""
        test = self.p.split.test
        self.p.split.check_disjoint()
        last = self._evaluate(method, test)
        best = last
        final = method.stages()[-1]
        if state.best_iteration != final.iterations and checkpoints.load_best(
            method, self.runtime.device
        ):
            best = self._evaluate(method, test)
        if set(best.scores) != set(test):  # never a case of another split
            raise SpinebenchError(
                f"evaluated cases {sorted(best.scores)} are not the run's test split {list(test)}"
            )
        class_map = self.p.class_map
        metrics = summarize(best.scores, class_map, "test")
        metrics |= summarize(last.scores, class_map, "test_last")
        metrics |= coverage(best.present, class_map, "test")
        total = sum(s.iterations for s in method.stages())
        tracker.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)}, total)
        artifacts.log_results(tracker, method, best, last, self.cache, class_map, self.config)
        return metrics, best.scores

    def _evaluate(self, method: Method, case_ids: tuple[str, ...]) -> Evaluation:
        return evaluate(
            method,
            self.cache,
            case_ids,
            self.p.class_map,
            plugins.metrics(),
            self.runtime.device,
            int(self.config["eval"]["batch_size"]),
            self.runtime.autocast(),
        )


def connect(req: RunRequest) -> MlflowTracker:
    """The request's tracking store and experiment, created if new (one line when unreachable)."""
    return MlflowTracker(
        resolve_uri(req.tracking_uri), experiment_name(req.dataset, req.experiment)
    )


def existing(req: RunRequest) -> Tracker:
    """The request's experiment, read only; a tracker that knows no runs when there is none."""
    uri, name = resolve_uri(req.tracking_uri), experiment_name(req.dataset, req.experiment)
    if not store_exists(uri):
        return NullTracker(uri)
    try:
        return MlflowTracker(uri, name, create=False)
    except NoSuchExperiment:
        return NullTracker(uri)


def execute(req: RunRequest, console: Console | None = None) -> RunResult:
    """Check everything that can be checked before anything is tracked, then run: the config
    (nothing read), a tracking server's reachability (nothing written), the data folder (a
    generated dataset is built only for a valid config), then in :meth:`Engine.run` every
    file's content (while the slice cache is built) and the method; only then is a sqlite
    store created. Started by ``torchrun``, it is one rank of a data-parallel run."""
    resolved = resolve_request(req)
    dist = distributed.from_environment(pick_device(req.device).type)
    try:
        resume = None
        if dist.main:
            probe(resolve_uri(req.tracking_uri))
            resume = resume_target(existing(req), req, resolved.config)
        prepared = load_data(resolved)
        if not dist.main:
            console = Console(stderr=True, quiet=True)
        return Engine(prepared, console, None, dist, resume).run()
    finally:
        dist.close()
