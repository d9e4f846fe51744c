"""Re-run a tracked run from its record and compare every test metric with the original.

The record is what the run logged: ``config.yaml`` (the whole resolved config, so the same
settings whatever the defaults are now), its split hash, seed and code version. The new run
goes into a separate experiment (``<experiment>/reproduce``), trains every stage afresh (a
cached stage is not reused), uses the torch thread count the original trained with (a config's
``train.threads=0`` means "every core", which differs between machines, and CPU reductions
depend on the count) and is tagged ``spinebench.reproduces``. On the CPU with the same
spinebench version and thread count every test metric must come out bit-identical.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from spinebench import __version__
from spinebench.engine.artifacts import CONFIG
from spinebench.engine.tracking import MlflowTracker, Tag, TrackedRun, resolve_uri, source_commit
from spinebench.errors import SpinebenchError
from spinebench.runinfo import RunRequest, RunResult


@dataclass(frozen=True)
class Difference:
    """A test metric (or the split) whose reproduced value is not the original's."""

    name: str
    original: float | str | None
    reproduced: float | str | None


@dataclass
class Reproduction:
    original: TrackedRun
    result: RunResult
    differences: list[Difference]
    compared: int

    @property
    def identical(self) -> bool:
        return not self.differences


def record_of(run_id: str, tracking_uri: str | None) -> tuple[TrackedRun, dict, str]:
    """The finished run, its resolved config and the tracking URI it lives in."""
    uri = resolve_uri(tracking_uri)
    tracker = MlflowTracker(uri, None, create=False)
    run = tracker.get_run(run_id)
    if run is None or Tag.METHOD not in run.tags:
        raise SpinebenchError(
            f"run {run_id!r} is not a spinebench run in {uri}; check the run id or --tracking-uri"
        )
    if run.status != "FINISHED":
        raise SpinebenchError(
            f"run {run_id} is {run.status}: it has no test metrics to compare; reproduce a "
            "finished run"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.download(run_id, CONFIG, Path(tmp))
        if path is None:
            raise SpinebenchError(f"run {run_id} has no {CONFIG} artifact; it cannot be re-run")
        config = yaml.safe_load(path.read_text())
    return run, config, uri


def recorded_threads(run: TrackedRun) -> int | None:
    """The torch thread count the run trained with (``None`` for runs that predate the tag)."""
    value = run.tags.get(Tag.TORCH_THREADS, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def record_warnings(run: TrackedRun) -> list[str]:
    """Where the code or the settings that made the run differ from what re-runs it now."""
    out = []
    if recorded_threads(run) is None:
        out.append(
            f"run {run.run_id} does not record its torch thread count ({Tag.TORCH_THREADS}); "
            "it is re-run with its config's train.threads, and CPU metrics are bit-identical "
            "only at the same count"
        )
    made_with = run.tags.get(Tag.VERSION)
    if made_with != __version__:
        out.append(
            f"run {run.run_id} was made with spinebench {made_with}, this is {__version__}: "
            "metrics may differ"
        )
    commit, now = run.tags.get(Tag.GIT_COMMIT), source_commit()
    if commit and now and commit != now:
        out.append(f"run {run.run_id} was made at commit {commit[:12]}, this is {now[:12]}")
    return out


def reproduce(
    run_id: str,
    tracking_uri: str | None = None,
    device: str = "auto",
    execute: Callable[[RunRequest], RunResult] | None = None,
) -> Reproduction:
    """Re-run ``run_id`` from its record and compare; ``execute`` defaults to the engine's."""
    if execute is None:
        from spinebench.engine.run import execute as engine_execute

        execute = engine_execute
    run, config, uri = record_of(run_id, tracking_uri)
    threads = recorded_threads(run)
    if threads is not None:
        config["train"]["threads"] = threads
    r = config["run"]
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / CONFIG
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        result = execute(
            RunRequest(
                method=r["method"],
                labeled=float(r["labeled"]),
                dataset=r["dataset"],
                data_dir=Path(config["data"]["dir"]) if config["data"]["dir"] else None,
                seed=int(r["seed"]),
                profile=r["profile"],
                config_file=config_file,
                tracking_uri=uri,
                experiment=f"{run.experiment}/reproduce",
                device=device,
                resume=False,
                reuse_stage_cache=False,
                extra_tags={Tag.REPRODUCES: run_id},
            )
        )
    return Reproduction(run, result, *compare(run, result))


#: The metrics a reproduction must match: both checkpoints' test scores.
COMPARED = ("test/", "test_last/")


def compare(run: TrackedRun, result: RunResult) -> tuple[list[Difference], int]:
    """Every ``test/*`` and ``test_last/*`` metric of either run, and the split, that is not
    the same."""
    differences = []
    names = sorted(
        {k for k in run.metrics if k.startswith(COMPARED)}
        | {k for k, v in result.metrics.items() if k.startswith(COMPARED) and not math.isnan(v)}
    )
    for name in names:
        a, b = run.metrics.get(name), result.metrics.get(name)
        if a != b:
            differences.append(Difference(name, a, b))
    split = run.tags.get(Tag.SPLIT_HASH)
    if split != result.info.split_hash:
        differences.append(Difference("split", split, result.info.split_hash))
    return differences, len(names)
