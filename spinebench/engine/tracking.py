"""MLflow tracking, laid out as DESIGN.md says: the only module that imports ``mlflow``.

Everything else reaches the store through :class:`Tracker`: the engine logs one run, sweeps
look up finished cells, the leaderboard reads finished runs and their ``per_case.csv``, predict
and reproduce fetch a run's record and artifacts. :class:`NullTracker` is the same interface
for what must not track (ranks other than 0 of a distributed run, the conformance kit).

The default store is ``sqlite:///spinebench-runs/mlflow.db`` with artifacts in
``spinebench-runs/artifacts``. MLflow is imported lazily: it is slow to import. Opening a store
is serialised per sqlite file: MLflow 3 creates and migrates a new database without a lock, and
two processes doing it at once fail ("duplicate column name", seen with MLflow 3.17; hydraflow
issue #245 reports the same), as do two creating one experiment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from spinebench.config import flatten
from spinebench.errors import SpinebenchError
from spinebench.paths import runs_dir


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
    GIT_COMMIT = "mlflow.source.git.commit"

    @staticmethod
    def stage_cache(stage: str) -> str:
        """``hit`` or ``miss`` of a stage's cache."""
        return f"spinebench.stage_cache.{stage}"

    @staticmethod
    def stage_source(stage: str) -> str:
        """The file or run a stage was loaded from (``Stage.load_from``)."""
        return f"spinebench.stage_source.{stage}"


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
    def set_tag(self, key: str, value: str) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def end(self, status: str, error: str | None = None) -> None: ...

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

    def finished_runs(self) -> dict[str, str]:
        """Config hash -> the newest FINISHED run with it."""
        ...

    def runs(self, status: str = "FINISHED") -> list[TrackedRun]:
        """Every spinebench run with ``status``, oldest first."""
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


def source_commit() -> str | None:
    """The git commit of the installed source tree (``Tag.GIT_COMMIT``), when it is a checkout."""
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
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def resolve_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the sqlite file in the runs dir."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{runs_dir() / 'mlflow.db'}"


def experiment_name(dataset: str, experiment: str | None) -> str:
    return experiment or f"spinebench/{dataset}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def store_exists(uri: str) -> bool:
    """False only for a sqlite store whose file is missing (a server is checked on use)."""
    db = sqlite_file(uri)
    return db is None or db.is_file()


def probe(uri: str) -> None:
    """Fail with one line when the store cannot be reached or created; leaves nothing behind
    (a sqlite store is created only once the run's data has been checked)."""
    db = sqlite_file(uri)
    if db is not None:
        _check_creatable(db, uri)
        return
    if uri.startswith("file:") or "://" not in uri:
        return
    from mlflow.tracking import MlflowClient

    try:
        with _fail_fast_http():
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise _unreachable(uri, exc) from None


def _unreachable(uri: str, exc: Exception) -> SpinebenchError:
    """The one-line error for a store that did not answer: its first line of complaint."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return SpinebenchError(
        f"tracking store {uri} is unreachable ({type(exc).__name__}: {first}); start the "
        "server or fix --tracking-uri"
    )


def _check_creatable(db: Path, uri: str) -> None:
    """A sqlite store exists, or its nearest existing folder takes a new file."""
    folder = db if db.exists() else db.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if db.exists():
            return
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SpinebenchError(
            f"tracking store {uri} is unreachable (cannot create it under {folder}: "
            f"{exc.strerror or exc}); fix --tracking-uri or MLFLOW_TRACKING_URI"
        ) from None


class MlflowTracker:
    """:class:`Tracker` over MLflow. ``experiment=None`` reads every experiment of the store;
    ``create=False`` refuses a sqlite store that does not exist instead of creating it."""

    def __init__(self, uri: str, experiment: str | None, *, create: bool = True) -> None:
        if not create and not store_exists(uri):
            raise SpinebenchError(
                f"no tracking store at {uri}; run `spinebench run` or `spinebench sweep` "
                "first, or pass --tracking-uri"
            )
        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own output
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        try:
            with _opening(uri), _fail_fast_http():
                self.client = MlflowClient(tracking_uri=uri)  # a new sqlite store is made here
                self.experiments = self._experiments(experiment, create)
        except SpinebenchError:
            raise
        except Exception as exc:
            raise _unreachable(uri, exc) from None
        self.run_id: str | None = None

    @property
    def experiment_id(self) -> str:
        """The experiment runs are logged to (a tracker for one experiment)."""
        if len(self.experiments) != 1:
            raise RuntimeError("this tracker reads several experiments; name one to log to")
        return next(iter(self.experiments))

    def _experiments(self, name: str | None, create: bool) -> dict[str, str]:
        """Experiment id -> name: the named one (created if allowed), or every experiment."""
        if name is None:
            return {e.experiment_id: e.name for e in self.client.search_experiments()}
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return {exp.experiment_id: name}
        if not create:
            raise NoSuchExperiment(
                f"experiment {name!r} does not exist at {self.uri}; check --experiment"
            )
        db = sqlite_file(self.uri)
        location = (db.parent.resolve() / "artifacts").as_uri() if db else None
        try:  # another process may create it at the same time
            return {self.client.create_experiment(name, artifact_location=location): name}
        except Exception:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return {exp.experiment_id: name}

    # -- the run -------------------------------------------------------------------------------
    def start(
        self,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        resume_id: str | None = None,
    ) -> str:
        if resume_id:
            self.run_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            self.client.set_tag(resume_id, Tag.RESUMED, "true")
            return resume_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[i : i + 100])
        return self.run_id

    def _own(self) -> str:
        if self.run_id is None:
            raise RuntimeError("start() the run before logging to it")
        return self.run_id

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_safe(k), float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self._own(), metrics=metrics[i : i + 500])

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self._own(), key, value)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self._own(), str(path), folder)

    def end(self, status: str, error: str | None = None) -> None:
        if self.run_id is None:
            return
        if error:
            self.client.set_tag(self.run_id, Tag.ERROR, error[:5000])
        self.client.set_terminated(self.run_id, status=status)

    # -- queries -------------------------------------------------------------------------------
    def _search(self, filter_string: str, **kwargs: Any) -> Iterator[Any]:
        token = None
        while True:
            page = self.client.search_runs(
                list(self.experiments), filter_string, page_token=token, **kwargs
            )
            yield from page
            token = page.token
            if not token or kwargs.get("max_results", 1000) < 1000:
                return

    def _newest(self, filter_string: str) -> Any:
        found = list(
            self._search(filter_string, order_by=["attributes.start_time DESC"], max_results=1)
        )
        return found[0] if found else None

    def find_unfinished(self, config_hash: str) -> str | None:
        run = self._newest(f"tags.`{Tag.CONFIG_HASH}` = '{config_hash}'")
        return run.info.run_id if run is not None and run.info.status in UNFINISHED else None

    def find_unfinished_by_name(self, run_name: str) -> tuple[str, dict[str, str]] | None:
        run = self._newest(f"attributes.run_name = '{run_name}'")
        if run is not None and run.info.status in UNFINISHED:
            return run.info.run_id, dict(run.data.params)
        return None

    def find_finished(self, config_hash: str) -> str | None:
        run = self._newest(
            f"tags.`{Tag.CONFIG_HASH}` = '{config_hash}' and attributes.status = 'FINISHED'"
        )
        return run.info.run_id if run is not None else None

    def finished_runs(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for run in self.runs("FINISHED"):  # oldest first: the newest wins
            digest = run.tags.get(Tag.CONFIG_HASH)
            if digest:
                out[digest] = run.run_id
        return out

    def runs(self, status: str = "FINISHED") -> list[TrackedRun]:
        found = self._search(
            f"attributes.status = '{status}'",
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )
        return [r for r in map(self._record, found) if Tag.METHOD in r.tags]

    def _record(self, run: Any) -> TrackedRun:
        return TrackedRun(
            run_id=run.info.run_id,
            experiment=self.experiments.get(run.info.experiment_id, run.info.experiment_id),
            status=run.info.status,
            start_time=run.info.start_time or 0,
            tags=dict(run.data.tags),
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
        )

    def get_run(self, run_id: str) -> TrackedRun | None:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        if run.info.experiment_id not in self.experiments:
            exp = self.client.get_experiment(run.info.experiment_id)
            self.experiments = {**self.experiments, exp.experiment_id: exp.name}
        return self._record(run)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        history = self.client.get_metric_history(run_id, key)
        return sorted((m.step, m.value) for m in history)

    def tag_run(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def list_artifacts(self, run_id: str, folder: str) -> list[str]:
        try:
            return [a.path for a in self.client.list_artifacts(run_id, folder)]
        except Exception:  # no such run or folder
            return []

    def download(self, run_id: str, artifact: str, folder: Path) -> Path | None:
        from mlflow.exceptions import MlflowException

        folder.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, artifact, str(folder)))
        except (MlflowException, OSError):
            return None


class NullTracker:
    """A :class:`Tracker` that records nothing and knows no runs: ranks other than 0 of a
    distributed run (rank 0 tracks the run) and the conformance kit."""

    def __init__(self, uri: str = "") -> None:
        self.uri = uri
        self.run_id: str | None = None

    def start(
        self,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        resume_id: str | None = None,
    ) -> str:
        return ""

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        pass

    def set_tag(self, key: str, value: str) -> None:
        pass

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        pass

    def end(self, status: str, error: str | None = None) -> None:
        pass

    def find_unfinished(self, config_hash: str) -> str | None:
        return None

    def find_unfinished_by_name(self, run_name: str) -> tuple[str, dict[str, str]] | None:
        return None

    def find_finished(self, config_hash: str) -> str | None:
        return None

    def finished_runs(self) -> dict[str, str]:
        return {}

    def runs(self, status: str = "FINISHED") -> list[TrackedRun]:
        return []

    def get_run(self, run_id: str) -> TrackedRun | None:
        return None

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return []

    def tag_run(self, run_id: str, key: str, value: str) -> None:
        pass

    def list_artifacts(self, run_id: str, folder: str) -> list[str]:
        return []

    def download(self, run_id: str, artifact: str, folder: Path) -> Path | None:
        return None


def _opening(uri: str) -> FileLock | nullcontext[None]:
    """A lock next to a sqlite store, so one process at a time creates or migrates it."""
    db = sqlite_file(uri)
    if db is None:
        return nullcontext()
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{db}.lock")


@contextmanager
def _fail_fast_http() -> Iterator[None]:
    """One try with a short timeout while probing the store: MLflow's defaults (7 retries with
    backoff, 120 s timeout) would make a wrong ``--tracking-uri`` hang for minutes."""
    probe = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in probe}
    os.environ.update(probe)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _safe(name: str) -> str:
    """MLflow metric names allow ``/`` but not every character; class names may have spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
