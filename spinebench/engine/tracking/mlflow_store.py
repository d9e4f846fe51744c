"""The :class:`~spinebench.engine.tracking.tags.Tracker` over MLflow (with the store checks of
:mod:`~spinebench.engine.tracking.stores`, the only modules that import ``mlflow``). MLflow is
imported lazily: it is slow to import."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spinebench.config import params_of
from spinebench.engine.tracking.notes import experiment_note
from spinebench.engine.tracking.stores import (
    check_sqlite_store,
    check_uri,
    fail_fast_http,
    opening,
    sqlite_file,
    store_exists,
    unreachable,
)
from spinebench.engine.tracking.tags import (
    EXPERIMENT_KIND,
    UNFINISHED,
    DataInput,
    NoSuchExperiment,
    Tag,
    TrackedRun,
)
from spinebench.errors import SpinebenchError

#: MLflow's limits on a param value and a tag value (characters).
PARAM_LIMIT, TAG_LIMIT = 6000, 5000


#: What MLflow's SQL store says when two runs insert the same (experiment, name, digest)
#: dataset at once.
DATASET_RACE = "UNIQUE constraint failed: datasets."


class MlflowTracker:
    """:class:`Tracker` over MLflow. ``experiment=None`` reads every experiment of the store;
    ``create=False`` (the read-only commands) neither creates a store nor an experiment nor
    changes an experiment's tags."""

    def __init__(self, uri: str, experiment: str | None, *, create: bool = True) -> None:
        check_uri(uri)
        if not create and not store_exists(uri):
            raise SpinebenchError(
                f"no tracking store at {uri}; run `spinebench run` or `spinebench sweep` "
                "first, or pass --tracking-uri"
            )
        db = sqlite_file(uri)
        if db is not None:
            check_sqlite_store(db, uri)
        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own output
        self.uri = uri
        self.create = create
        mlflow.set_tracking_uri(uri)
        try:
            with opening(uri), fail_fast_http():
                self.client = MlflowClient(tracking_uri=uri)  # a new sqlite store is made here
                self.experiments = self._experiments(experiment, create)
        except SpinebenchError:
            raise
        except Exception as exc:
            raise unreachable(uri, exc) from None
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
            if create:
                self._label(exp.experiment_id, name, exp.tags)
            return {exp.experiment_id: name}
        if not create:
            raise NoSuchExperiment(
                f"experiment {name!r} does not exist at {self.uri}; check --experiment"
            )
        db = sqlite_file(self.uri)
        location = (db.parent.resolve() / "artifacts").as_uri() if db else None
        try:  # another process may create it at the same time
            exp_id = self.client.create_experiment(name, artifact_location=location)
        except Exception:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
        self._label(exp_id, name, {})
        return {exp_id: name}

    def _label(self, exp_id: str, name: str, tags: dict[str, str]) -> None:
        """MLflow's UI opens an experiment of this kind on its runs, with this description."""
        wanted = {Tag.EXPERIMENT_KIND: EXPERIMENT_KIND, Tag.NOTE: experiment_note(name)}
        for key, value in wanted.items():
            if key not in tags:
                self.client.set_experiment_tag(exp_id, key, value)

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

        flat = [Param(k, v[:PARAM_LIMIT]) for k, v in params_of(params).items()]
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

    def log_inputs(self, inputs: list[DataInput]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        datasets = [
            DatasetInput(
                Dataset(
                    name=d.name,
                    digest=d.digest,
                    source_type="local",
                    source=json.dumps({"uri": d.source}),
                    profile=json.dumps(d.profile),
                ),
                tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)],
            )
            for d in inputs
        ]
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_inputs(self._own(), datasets=datasets)
        except MlflowException as exc:
            if DATASET_RACE not in str(exc):
                raise
            # another run of this experiment (a sweep's other worker) inserted the same dataset
            # between MLflow's lookup and its insert; the insert was rolled back, and a second
            # call finds that dataset and links it to this run
            self.client.log_inputs(self._own(), datasets=datasets)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self._own(), key, value[:TAG_LIMIT] if key != Tag.NOTE else value)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self._own(), str(path), folder)

    def end(self, status: str, error: str | None = None) -> None:
        if self.run_id is None:
            return
        if error:
            self.client.set_tag(self.run_id, Tag.ERROR, error[:TAG_LIMIT])
        self.client.set_terminated(self.run_id, status=status)

    # -- a sweep's parent run ------------------------------------------------------------------
    def parent_run(self, key: str, name: str, note: str) -> str:
        found = self._newest(f"tags.`{Tag.SWEEP}` = '{key}'")
        if found is not None:
            run_id: str = found.info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {Tag.SWEEP: key, Tag.NOTE: note}
            run_id = self.client.create_run(
                self.experiment_id, run_name=name, tags=tags
            ).info.run_id
        return run_id

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

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

    def finished_runs(self) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for run in self.runs("FINISHED"):  # oldest first: the newest wins
            digest = run.tags.get(Tag.CONFIG_HASH)
            if digest:
                out[(digest, run.tags.get(Tag.SPLIT_HASH, ""))] = run.run_id
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


def _safe(name: str) -> str:
    """MLflow metric names allow ``/`` but not every character; class names may have spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
