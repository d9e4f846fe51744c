"""A :class:`~spinebench.engine.tracking.tags.Tracker` that records nothing: ranks other than 0
of a distributed run (rank 0 tracks the run) and the conformance kit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spinebench.engine.tracking.tags import DataInput, TrackedRun


class NullTracker:
    """Records nothing and knows no runs."""

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

    def log_inputs(self, inputs: list[DataInput]) -> None:
        pass

    def set_tag(self, key: str, value: str) -> None:
        pass

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        pass

    def end(self, status: str, error: str | None = None) -> None:
        pass

    def parent_run(self, key: str, name: str, note: str) -> str:
        return ""

    def end_run(self, run_id: str, status: str) -> None:
        pass

    def find_unfinished(self, config_hash: str) -> str | None:
        return None

    def find_unfinished_by_name(self, run_name: str) -> tuple[str, dict[str, str]] | None:
        return None

    def find_finished(self, config_hash: str) -> str | None:
        return None

    def finished_runs(self) -> dict[tuple[str, str], str]:
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
