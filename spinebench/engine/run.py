"""One tracked run: resolve the config, prepare data, train every stage, evaluate, record.

A run is identified by its config hash: an unfinished run with the same hash is resumed (same
MLflow run, from the latest intact checkpoint) unless ``resume=False``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from filelock import FileLock, Timeout
from rich.console import Console

from spinebench import __version__, plugins
from spinebench.config import (
    config_hash,
    flatten,
    load_yaml_file,
    parse_overrides,
    resolve,
    short_summary,
)
from spinebench.data.classmap import ClassMap
from spinebench.data.dataset import Dataset
from spinebench.data.slices import SliceCache, build_or_load
from spinebench.data.splits import Split, check_fraction, make_split
from spinebench.data.streams import TrainStreams
from spinebench.engine import checkpoint, distributed
from spinebench.engine.distributed import SINGLE, Distributed
from spinebench.engine.evaluate import (
    evaluate,
    save_overlays,
    summarize,
    write_per_case_csv,
)
from spinebench.engine.progress import StageProgress
from spinebench.engine.runtime import (
    Runtime,
    pick_device,
    seed_everything,
    setup,
    stage_seed,
    torch_settings_kept,
)
from spinebench.engine.tracking import (
    TAG,
    NullTracker,
    Tracker,
    experiment_name,
    resolve_uri,
)
from spinebench.engine.trainer import (
    Interrupted,
    StageContext,
    StopFlag,
    TrainState,
    restore,
    run_stage,
    save_checkpoint,
)
from spinebench.errors import ConfigError, SpinebenchError
from spinebench.method import Method, MethodContext, Stage
from spinebench.paths import cache_dir, runs_dir


@dataclass
class RunRequest:
    """What the command line (or a sweep cell) asks for."""

    method: str
    labeled: float
    dataset: str = "synthetic"
    data_dir: Path | None = None
    seed: int = 0
    profile: str = "quick"
    config_file: Path | None = None
    overrides: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    experiment: str | None = None
    device: str = "auto"
    resume: bool | None = None  # None: resume when possible; True: must resume; False: never


@dataclass
class RunInfo:
    """What observers (hooks) and callers learn about a run."""

    method: str
    dataset: str
    seed: int
    labeled: float
    profile: str
    config: dict[str, Any]
    config_hash: str
    split_hash: str
    tracking_uri: str
    experiment: str
    run_id: str | None = None


@dataclass
class Resolved:
    """A request whose names and config are valid; no data read, nothing written yet."""

    request: RunRequest
    method_cls: type[Method]
    dataset_cls: type[Dataset]
    config: dict[str, Any]


@dataclass
class Prepared:
    """A resolved run before anything is trained or tracked."""

    request: RunRequest
    method_cls: type[Method]
    dataset: Dataset
    class_map: ClassMap
    split: Split
    config: dict[str, Any]
    config_hash: str


@dataclass
class RunResult:
    info: RunInfo
    metrics: dict[str, float]
    per_case: dict[str, dict[str, dict[int, float]]]
    resumed: bool
    rank: int = 0  # a torchrun rank other than 0 has trained only: no metrics to report


def prepare(req: RunRequest) -> Prepared:
    """Validate everything the user gave before any work starts."""
    return load_data(resolve_request(req))


def resolve_request(req: RunRequest) -> Resolved:
    """The checks that need no data and write nothing: names, fraction, device, config."""
    check_fraction(req.labeled)
    if req.seed < 0:
        raise ConfigError(f"--seed {req.seed} is negative; use 0 or a positive integer")
    pick_device(req.device)
    method_cls = plugins.lookup(plugins.methods(), req.method, "method")
    dataset_cls = plugins.lookup(plugins.datasets(), req.dataset, "dataset")
    file_config = load_yaml_file(req.config_file) if req.config_file else {}
    overrides = parse_overrides(req.overrides, req.method)
    if req.data_dir is not None:
        overrides["data.dir"] = str(Path(req.data_dir).resolve())
    config = resolve(
        method=req.method,
        method_options=method_cls.options,
        method_defaults=method_cls.default_config(req.profile),
        profile=req.profile,
        file_config=file_config,
        overrides=overrides,
        run={"dataset": req.dataset, "labeled": req.labeled, "seed": req.seed},
    )
    return Resolved(req, method_cls, dataset_cls, config)


def load_data(resolved: Resolved) -> Prepared:
    """Open the dataset (a generated one is built here) and split its cases."""
    req, config = resolved.request, resolved.config
    data_dir = Path(config["data"]["dir"]) if config["data"]["dir"] else None
    dataset = resolved.dataset_cls(data_dir, config)
    class_map = dataset.class_map()
    if not class_map.is_contiguous():
        raise SpinebenchError(
            f"dataset {req.dataset!r} must map its labels to 1..N (got ids {class_map.ids})"
        )
    d = config["data"]
    split = make_split(
        [c.case_id for c in dataset.cases()],
        labeled=req.labeled,
        seed=req.seed,
        split_seed=d["split_seed"],
        val_fraction=d["val_fraction"],
        test_fraction=d["test_fraction"],
    )
    return Prepared(
        req, resolved.method_cls, dataset, class_map, split, config, config_hash(config)
    )


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _plugin_of(method: str) -> str:
    for info in plugins.list_plugins():
        if "spinebench_register_methods" in info.hooks:
            registered: dict[str, type] = {}
            impl = getattr(
                plugins.get_plugin_manager().get_plugin(info.name),
                "spinebench_register_methods",
                None,
            )
            if impl is not None:
                impl(register=lambda n, c, r=registered: r.__setitem__(n, c))
            if method in registered:
                return f"{info.distribution}=={info.version}"
    return "unknown"


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

    # -- data and model ---------------------------------------------------------------------
    def _setup(self) -> tuple[Runtime, SliceCache, Method]:
        runtime = setup(self.config["train"], self.p.request.device, self.p.request.seed, self.dist)
        t0 = time.perf_counter()
        cache = build_or_load(self.p.request.dataset, self.p.dataset, self.config)
        self.cache_seconds = time.perf_counter() - t0
        ctx = MethodContext(
            class_map=self.p.class_map,
            image_size=int(self.config["data"]["image_size"]),
            options=dict(self.config["method"]),
            config=self.config,
        )
        method = self.p.method_cls(ctx)
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

    def _validate(self, method: Method, stage: Stage) -> dict[str, float]:
        """Scores on the val split (rank 0 only: the others wait at the next step)."""
        metric_fns = plugins.metrics()
        if stage.segments:
            scores, _ = evaluate(
                method,
                self.cache,
                self.p.split.val,
                self.p.class_map,
                {"dice": metric_fns["dice"]},
                self.runtime.device,
                int(self.config["eval"]["batch_size"]),
                self.runtime.autocast(),
            )
            return {"val/dice": summarize(scores, self.p.class_map, "val")["val/dice"]}
        rows = self.cache.slice_indices(self.p.split.val)
        totals: dict[str, float] = {}
        n = 0
        bs = int(self.config["eval"]["batch_size"])
        method.eval()
        with torch.no_grad():
            for start in range(0, len(rows), bs):
                idx = rows[start : start + bs]
                images = torch.from_numpy(np.array(self.cache.images[idx]))[:, None].to(
                    self.runtime.device
                )
                labels = torch.from_numpy(self.cache.labels[idx].astype("int64")).to(
                    self.runtime.device
                )
                with self.runtime.autocast()():
                    values = method.validate_stage(stage, images, labels)
                for k, v in values.items():
                    totals[k] = totals.get(k, 0.0) + float(v) * len(idx)
                n += len(idx)
        method.train()
        return {f"val/{stage.prefix}{k}": v / max(n, 1) for k, v in totals.items()}

    # -- stage cache ------------------------------------------------------------------------
    def _stage_cache_path(self, stage: Stage) -> Path | None:
        if stage.cache_key is None:
            return None
        payload = json.dumps(
            {
                "key": stage.cache_key,
                "split": self.p.split.hash(),
                "data": self.cache.root.name,
                "method": self.p.request.method,
                "stage": stage.name,
            },
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
        return cache_dir() / "stages" / f"{self.p.request.method}-{stage.name}-{digest}.pt"

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        req = self.p.request
        if self.dist.main:  # an unreachable store is an error before any training
            tracker = self.tracker or connect(req)
            lock: Any = config_lock(self.p.config_hash)
        else:
            tracker, lock = NullTracker(resolve_uri(req.tracking_uri)), nullcontext()
        with lock, torch_settings_kept():
            return self._run(tracker)

    def _run(self, tracker: Tracker | NullTracker) -> RunResult:
        req, cfg, main = self.p.request, self.config, self.dist.main
        uri, exp = tracker.uri, experiment_name(req.dataset, req.experiment)
        run_name = f"{req.method}-l{req.labeled:g}-s{req.seed}"
        resume_id = self.dist.broadcast(
            self._resume_target(tracker, run_name) if main else None  # type: ignore[arg-type]
        )
        self.runtime, self.cache, method = self._setup()
        info = RunInfo(
            req.method,
            req.dataset,
            req.seed,
            req.labeled,
            req.profile,
            cfg,
            self.p.config_hash,
            self.p.split.hash(),
            uri,
            exp,
        )
        checkpoints = runs_dir() / "checkpoints"
        ckpt = None
        if resume_id and main:  # read by rank 0 and sent: other nodes need no shared folder
            where = "cpu" if self.dist.enabled else self.runtime.device
            ckpt = checkpoint.load_latest(checkpoints / resume_id, where)
        ckpt = self.dist.broadcast(ckpt)
        streams = self._streams(ckpt["state"]["stage_index"] if ckpt else 0)
        state = restore(method, ckpt, streams) if ckpt else TrainState()
        tags = {
            f"{TAG}method": req.method,
            f"{TAG}dataset": req.dataset,
            f"{TAG}labeled": str(req.labeled),
            f"{TAG}seed": str(req.seed),
            f"{TAG}split_hash": self.p.split.hash(),
            f"{TAG}version": __version__,
            f"{TAG}plugin": _plugin_of(req.method),
            f"{TAG}profile": req.profile,
            f"{TAG}config_hash": self.p.config_hash,
        }
        sha = _git_sha()
        if sha:
            tags["mlflow.source.git.commit"] = sha
        info.run_id = self.dist.broadcast(tracker.start(run_name, tags, cfg, resume_id=resume_id))
        tracker.set_tag(f"{TAG}data_cache", "built" if self.cache.built_now else "reused")
        ckpt_dir = checkpoints / info.run_id
        self.console.print(f"[bold]spinebench[/] {short_summary(cfg)}")
        where = (
            f"resumed at stage {state.stage_index} iteration {state.iteration}"
            if ckpt
            else "resumed from the start"
            if resume_id
            else "new"
        )
        self.console.print(
            f"run {info.run_id} ({where}) "
            f"| split {len(self.p.split.labeled)} labeled / {len(self.p.split.unlabeled)} "
            f"unlabeled / {len(self.p.split.val)} val / {len(self.p.split.test)} test cases "
            f"| device {self.runtime.device} {self.runtime.precision}"
        )
        try:
            if ckpt is None:  # a run killed before its first checkpoint logs them again
                self._log_start_artifacts(tracker)
            if main:
                plugins.get_plugin_manager().hook.spinebench_run_started(run=info)
            self._train(method, state, streams, tracker, ckpt_dir, ckpt)
            if not main:
                return RunResult(info, {}, {}, ckpt is not None, self.dist.rank)
            metrics, per_case = self._test(method, tracker, ckpt_dir)
            plugins.get_plugin_manager().hook.spinebench_run_finished(run=info, results=metrics)
        except (Interrupted, KeyboardInterrupt) as exc:
            tracker.end("KILLED", f"interrupted: {exc}")
            raise
        except BaseException as exc:
            tracker.end("FAILED", "".join(traceback.format_exception_only(exc)).strip())
            raise
        tracker.end("FINISHED")
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the final model is a tracked artifact
        return RunResult(info, metrics, per_case, resumed=ckpt is not None)

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

    def _log_start_artifacts(self, tracker: Tracker) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "config.yaml"
            cfg_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            split_path = Path(tmp) / "split.json"
            split_path.write_text(self.p.split.to_json())
            classes = Path(tmp) / "class_map.json"
            classes.write_text(json.dumps(self.p.class_map.to_dict(), indent=2))
            for path in (cfg_path, split_path, classes):
                tracker.log_artifact(path)
        tracker.log_metrics({"data/cache_seconds": self.cache_seconds}, 0)

    def _streams(self, stage_index: int) -> TrainStreams:
        seed = stage_seed(self.p.request.seed, stage_index)
        return TrainStreams(
            self.cache, self.p.split, self.config, seed, self.runtime.device, self.dist.shard
        )

    def _train(
        self,
        method: Method,
        state: TrainState,
        streams: TrainStreams,
        tracker: Tracker | NullTracker,
        ckpt_dir: Path,
        ckpt: dict[str, Any] | None,
    ) -> None:
        stages = method.stages()
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"method {self.p.request.method!r} declares duplicate stages {names}")
        first = state.stage_index
        offset = sum(s.iterations for s in stages[:first])
        with StopFlag() as stop, StageProgress(self.console) as progress:
            for index in range(first, len(stages)):
                stage = stages[index]
                resume = ckpt if index == first and state.iteration else None
                if resume is None:  # its randomness never depends on how earlier stages ran
                    seed_everything(stage_seed(self.p.request.seed, index))
                    streams = self._streams(index)
                cache_path = self._stage_cache_path(stage)
                if state.iteration == 0 and self._load_stage(method, stage, cache_path, tracker):
                    pass
                elif state.iteration == 0 and stage.load_from:
                    if self.dist.main:  # sent to the other ranks by sync_module
                        path = self._stage_source(stage, tracker)  # type: ignore[arg-type]
                        method.load_stage_state_dict(
                            stage, checkpoint.load_file(path, self.runtime.device)
                        )
                    self.dist.sync_module(method)
                    tracker.set_tag(f"{TAG}stage_source.{stage.name}", stage.load_from)
                    self.console.print(f"stage {stage.name}: loaded from {stage.load_from}")
                else:
                    ctx = StageContext(
                        streams,
                        self.runtime,
                        self.config["train"],
                        ckpt_dir,
                        tracker.log_metrics,
                        lambda s: self._validate(method, s),
                        progress,
                        stop,
                        offset,
                        self.dist,
                    )
                    run_stage(method, stage, state, ctx, resume)
                    if cache_path is not None and self.dist.main:
                        checkpoint.save(
                            method.stage_state_dict(stage), cache_path.parent, cache_path.stem
                        )
                        tracker.set_tag(f"{TAG}stage_cache.{stage.name}", "miss")
                        tracker.log_artifact(cache_path, "stages")
                offset += stage.iterations
                state.stage_index, state.iteration = index + 1, 0
                state.done_stages.append(stage.name)
                if self.dist.main:
                    save_checkpoint(method, state, None, None, streams, ckpt_dir)
        if state.skipped_steps:
            tracker.log_metrics({"train/skipped_nonfinite_steps": state.skipped_steps}, offset)

    def _load_stage(
        self,
        method: Method,
        stage: Stage,
        cache_path: Path | None,
        tracker: Tracker | NullTracker,
    ) -> bool:
        """Load a cached stage (rank 0 reads it, the others receive it)."""
        hit = self.dist.broadcast(cache_path is not None and cache_path.is_file())
        if not hit:
            return False
        if self.dist.main:
            state = checkpoint.load_file(cache_path, self.runtime.device)  # type: ignore[arg-type]
            method.load_stage_state_dict(stage, state)
        self.dist.sync_module(method)
        tracker.set_tag(f"{TAG}stage_cache.{stage.name}", "hit")
        self.console.print(f"stage {stage.name}: loaded from cache {cache_path.name}")
        return True

    def _stage_source(self, stage: Stage, tracker: Tracker) -> Path:
        """A stage state given as a file, or as the run id of a run that logged one."""
        source = str(stage.load_from)
        path = Path(source).expanduser()
        if path.is_file():
            return path
        try:
            artifacts = tracker.client.list_artifacts(source, "stages")
        except Exception:
            artifacts = []
        match = [
            a.path
            for a in artifacts
            if Path(a.path).name.startswith(f"{self.p.request.method}-{stage.name}-")
        ]
        if not match:
            raise ConfigError(
                f"stage {stage.name!r} source {source!r} is neither a file nor a "
                f"run id with a cached '{stage.name}' stage in {tracker.uri}; "
                "pass a .pt path or the id of a run that trained this stage"
            )
        return Path(tracker.client.download_artifacts(source, match[0], tempfile.mkdtemp()))

    def _test(
        self, method: Method, tracker: Tracker, ckpt_dir: Path
    ) -> tuple[dict[str, float], dict[str, dict[str, dict[int, float]]]]:
        best = ckpt_dir / "best.pt"
        if best.is_file():
            method.load_state_dict(checkpoint.load_file(best, self.runtime.device)["method"])
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
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / "per_case.csv"
            write_per_case_csv(csv_path, scores, self.p.class_map)
            tracker.log_artifact(csv_path)
            for png in save_overlays(
                Path(tmp) / "overlays",
                self.cache,
                preds,
                self.p.class_map,
                int(self.config["eval"]["overlays"]),
            ):
                tracker.log_artifact(png, "overlays")
            model_path = Path(tmp) / "model.pt"
            torch.save(
                {
                    "method": method.state_dict(),
                    "config": self.config,
                    "class_map": self.p.class_map.to_dict(),
                },
                model_path,
            )
            tracker.log_artifact(model_path, "checkpoint")
        return metrics, scores


def connect(req: RunRequest) -> Tracker:
    """The request's tracking store and experiment (a one-line error when unreachable)."""
    return Tracker(resolve_uri(req.tracking_uri), experiment_name(req.dataset, req.experiment))


@contextmanager
def config_lock(config_hash: str) -> Iterator[None]:
    """Held while a run of this config trains, so two processes never share its checkpoints.

    The operating system drops the lock when its process dies, so a killed run is resumable
    at once; a live one makes a second start of the same config fail instead of corrupting it.
    """
    path = runs_dir() / "locks" / f"{config_hash}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"a run with this config (hash {config_hash}) is in progress in another "
            "process on this runs folder; wait for it to finish, or change the "
            "seed or a setting"
        ) from None
    try:
        yield
    finally:
        lock.release()


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
