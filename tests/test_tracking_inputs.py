"""Dataset inputs under concurrency: two sweep workers that log the same dataset at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from spinebench.engine.tracking import MlflowTracker
from spinebench.engine.tracking.tags import DataInput

# what MLflow's SQL store raised in a two-worker sweep (tests/test_sweep_progress.py, CI 2026-12-07)
RACE = (
    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, "
    "datasets.digest"
)
VAL = DataInput("synthetic-val", "0123456789abcdef", "/data", "val", {"cases": 9})


def _tracker(tmp_path: Path, first_error: str) -> tuple[MlflowTracker, list[str]]:
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "race")
    tracker.start("run", {}, {})
    calls: list[str] = []
    real = tracker.client.log_inputs

    def racing(run_id: str, datasets: Any) -> None:
        calls.append(run_id)
        if len(calls) == 1:  # the other worker inserted it between MLflow's lookup and insert
            raise MlflowException(first_error)
        real(run_id, datasets=datasets)

    tracker.client.log_inputs = racing  # type: ignore[method-assign]
    return tracker, calls


def test_a_dataset_inserted_by_another_run_at_the_same_moment_is_linked(tmp_path: Path):
    tracker, calls = _tracker(tmp_path, RACE)
    tracker.log_inputs([VAL])
    assert len(calls) == 2
    (linked,) = tracker.client.get_run(tracker.run_id).inputs.dataset_inputs
    assert (linked.dataset.name, linked.dataset.digest) == (VAL.name, VAL.digest)


def test_any_other_store_error_is_not_swallowed(tmp_path: Path):
    tracker, calls = _tracker(tmp_path, "database is locked")
    with pytest.raises(MlflowException, match="database is locked"):
        tracker.log_inputs([VAL])
    assert len(calls) == 1
