"""MLflow tracking, laid out as DESIGN.md says; only the engine (rank 0) talks to it.

The default store is ``sqlite:///spinebench-runs/mlflow.db`` with artifacts in
``spinebench-runs/artifacts``. MLflow is imported lazily: it is slow to import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
        self.client = MlflowClient(tracking_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                location = None
                if uri.startswith("sqlite:///"):
                    location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location)
            else:
                self.experiment_id = exp.experiment_id
        except Exception as exc:
            raise SpinebenchError(
                f"tracking store {uri} is unreachable ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); start the server or fix --tracking-uri"
            ) from None
        self.run_id: str | None = None

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

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, Any],
              resume_id: str | None = None) -> str:
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
        import time

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


def _safe(name: str) -> str:
    """MLflow metric names allow ``/`` but not every character; class names may have spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
