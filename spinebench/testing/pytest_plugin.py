"""The kit as a pytest plugin (entry point ``pytest11``): fixtures a plugin's own tests use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from spinebench.method import Method
from spinebench.testing.harness import Harness, make_harness
from spinebench.testing.kit import Report, check_method


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a plugin's tests away from the user's cache, runs and tracking server."""
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPINEBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def spinebench_conformance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Report]:
    """:func:`check_method` in an isolated environment: ``spinebench_conformance(MyMethod)``."""
    _isolate(monkeypatch, tmp_path)
    return check_method


@pytest.fixture
def spinebench_harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Harness]:
    """A :class:`Harness` factory for a plugin's own unit tests of its math:
    ``h = spinebench_harness(MyMethod); h.build().training_step(...)``."""
    _isolate(monkeypatch, tmp_path)

    def factory(method_cls: type[Method], **kwargs: Any) -> Harness:
        return make_harness(method_cls, tmp_path / "kit", **kwargs)

    return factory
