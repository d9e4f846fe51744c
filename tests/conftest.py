"""Shared test isolation: every test writes runs into its own folder; the data cache is shared
per session (generation is deterministic) so tiny phantoms are built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spinebench-cache")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_cache: Path) -> Path:
    runs = tmp_path / "runs"
    monkeypatch.setenv("SPINEBENCH_RUNS", str(runs))
    monkeypatch.setenv("SPINEBENCH_CACHE", str(shared_cache))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SPINEBENCH_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return runs


TINY = [
    "--set",
    "data.cases=8",
    "--set",
    "data.image_size=32",
    "--set",
    "train.iterations=6",
    "--set",
    "train.val_every=3",
    "--set",
    "train.log_every=3",
    "--set",
    "train.checkpoint_every=3",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.unlabeled_batch_size=4",
    "--set",
    "eval.overlays=1",
]
