"""What spinebench records about a run and how it reaches a store: every tag name, a tracked
run as the store returns it, and the :class:`Tracker` interface the rest of spinebench uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from spinebench.errors import SpinebenchError


class Tag:
    """Every tag name spinebench writes or reads, defined once."""

    PREFIX = "spinebench."
    METHOD = "spinebench.method"
    DATASET = "spinebench.dataset"
    LABELED = "spinebench.labeled"
    SEED = "spinebench.seed"
    SPLIT_HASH = "spinebench.split_hash"
    CONFIG_HASH = "spinebench.config_hash"
    VERSION = "spinebench.version"
    PLUGIN = "spinebench.plugin"
    PROFILE = "spinebench.profile"
    VARIANT = "spinebench.variant"
    DATA_CACHE = "spinebench.data_cache"
    RESUMED = "spinebench.resumed"
    ERROR = "spinebench.error"
    REPRODUCES = "spinebench.reproduces"
    TORCH_THREADS = "spinebench.torch_threads"
    LIBRARIES = "spinebench.libraries"
    #: On a sweep's parent run: the digest of its cells, so a rerun finds the same parent.
    SWEEP = "spinebench.sweep"
    GIT_COMMIT = "mlflow.source.git.commit"
    #: MLflow's own conventions, which its UI reads.
    NOTE = "mlflow.note.content"
    PARENT_RUN = "mlflow.parentRunId"
    EXPERIMENT_KIND = "mlflow.experimentKind"

    @staticmethod
    def stage_cache(stage: str) -> str:
        """``hit`` or ``miss`` of a stage's cache."""
        return f"spinebench.stage_cache.{stage}"

    @staticmethod
    def stage_source(stage: str) -> str:
        """The file or run a stage was loaded from (``Stage.load_from``)."""
        return f"spinebench.stage_source.{stage}"


#: The experiment kind MLflow's UI opens on the runs table (not the GenAI overview).
EXPERIMENT_KIND = "custom_model_development"
UNFINISHED = ("RUNNING", "FAILED", "KILLED")


class NoSuchExperiment(SpinebenchError):
    """A store opened for reading does not hold the named experiment."""


@dataclass(frozen=True)
class TrackedRun:
    """A run as the store records it."""

    run_id: str
    experiment: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class DataInput:
    """One part of a run's data as an MLflow dataset input (the UI's Dataset column):
    ``context`` is train, val or test; ``profile`` holds the case counts."""

    name: str
    digest: str
    source: str
    context: str
    profile: dict[str, Any] = field(default_factory=dict)


class Tracker(Protocol):
    """One experiment of a tracking store (or every experiment, for reading), and the run this
    process logs to."""

    uri: str
    run_id: str | None

    # -- the run this process logs ------------------------------------------------------------
    def start(
        self,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        resume_id: str | None = None,
    ) -> str: ...
    def log_metrics(self, values: dict[str, float], step: int) -> None: ...
    def log_inputs(self, inputs: list[DataInput]) -> None: ...
    def set_tag(self, key: str, value: str) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def end(self, status: str, error: str | None = None) -> None: ...

    # -- a sweep's parent run ------------------------------------------------------------------
    def parent_run(self, key: str, name: str, note: str) -> str:
        """The parent run of the sweep whose cells hash to ``key`` (created when new), set
        RUNNING: its cells are its children."""
        ...

    def end_run(self, run_id: str, status: str) -> None: ...

    # -- queries -------------------------------------------------------------------------------
    def find_unfinished(self, config_hash: str) -> str | None:
        """The newest RUNNING/FAILED/KILLED run with this config hash, to resume."""
        ...

    def find_unfinished_by_name(self, run_name: str) -> tuple[str, dict[str, str]] | None:
        """The newest unfinished run of this name and its params (to explain a refused resume)."""
        ...

    def find_finished(self, config_hash: str) -> str | None:
        """The newest FINISHED run with this config hash."""
        ...

    def finished_runs(self) -> dict[tuple[str, str], str]:
        """(config hash, split hash) -> the newest FINISHED run with them."""
        ...

    def runs(self, status: str = "FINISHED") -> list[TrackedRun]:
        """Every spinebench run with ``status``, oldest first (never a sweep's parent)."""
        ...

    def get_run(self, run_id: str) -> TrackedRun | None: ...
    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every ``(step, value)`` logged for ``key``, in step order."""
        ...

    def tag_run(self, run_id: str, key: str, value: str) -> None: ...
    def list_artifacts(self, run_id: str, folder: str) -> list[str]: ...
    def download(self, run_id: str, artifact: str, folder: Path) -> Path | None:
        """The artifact's local copy in ``folder``, or None when the run has no such file."""
        ...
