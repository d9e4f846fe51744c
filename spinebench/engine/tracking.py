"""MLflow tracking, laid out as DESIGN.md says; only the engine (rank 0) talks to it.

The default store is ``sqlite:///spinebench-runs/mlflow.db`` with artifacts in
``spinebench-runs/artifacts``. MLflow is imported lazily: it is slow to import.

Opening a store is serialised per sqlite file: MLflow 3 creates and migrates a new database
without a lock, and two processes doing it at once fail ("duplicate column name", seen with
MLflow 3.17; hydraflow issue #245 reports the same), as do two creating one experiment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from filelock import FileLock

from spinebench.config import flatten
from spinebench.errors import SpinebenchError
from spinebench.paths import runs_dir

TAG = "spinebench."


def resolve_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the sqlite file in the runs dir."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def experiment_name(dataset: str, experiment: str | None) -> str:
    return experiment or f"spinebench/{dataset}"


class Tracker:
    """One MLflow run: create or resume, log, end with a status."""

    def __init__(self, uri: str, experiment: str) -> None:
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = uri
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        try:
            with _opening(uri), _fail_fast_http():
                self.client = MlflowClient(tracking_uri=uri)  # a new sqlite store is made here
                self.experiment_id = self._experiment_id(experiment)
        except Exception as exc:
            raise SpinebenchError(
                f"tracking store {uri} is unreachable ({type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0][:200]}); start the server or fix "
                "--tracking-uri"
            ) from None
        self.run_id: str | None = None

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, creating it (another process may create it at the same time)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        db = _sqlite_file(self.uri)
        location = (db.parent.resolve() / "artifacts").as_uri() if db else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def find_unfinished(self, config_hash: str) -> str | None:
        """The newest RUNNING/FAILED/KILLED run with this config hash, to resume."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG}config_hash` = '{config_hash}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs and runs[0].info.status in ("RUNNING", "FAILED", "KILLED"):
            return runs[0].info.run_id
        return None

    def find_unfinished_by_name(self, run_name: str) -> tuple[str, dict[str, str]] | None:
        """The newest unfinished run of this name and its params (to explain a refused resume)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.run_name = '{run_name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs and runs[0].info.status in ("RUNNING", "FAILED", "KILLED"):
            return runs[0].info.run_id, dict(runs[0].data.params)
        return None

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
            self.client.set_tag(resume_id, f"{TAG}resumed", "true")
            return resume_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[i : i + 100])
        return self.run_id

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_safe(k), float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 500])

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def end(self, status: str, error: str | None = None) -> None:
        if self.run_id is None:
            return
        if error:
            self.client.set_tag(self.run_id, f"{TAG}error", error[:5000])
        self.client.set_terminated(self.run_id, status=status)


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def _opening(uri: str) -> FileLock | nullcontext[None]:
    """A lock next to a sqlite store, so one process at a time creates or migrates it."""
    db = _sqlite_file(uri)
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


class NullTracker:
    """What ranks other than 0 of a distributed run track: nothing (rank 0 tracks the run)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.run_id: str | None = None

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, Any], **_: Any) -> str:
        return ""

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        pass

    def set_tag(self, key: str, value: str) -> None:
        pass

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        pass

    def end(self, status: str, error: str | None = None) -> None:
        pass
