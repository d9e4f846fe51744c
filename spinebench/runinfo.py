"""What a run is asked for and what it reports: the records the plugin contract
(:mod:`spinebench.hookspecs`), the engine, sweeps and the command line share.

A leaf module (it imports nothing of spinebench), so the contract never depends on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunRequest:
    """What the command line (or a sweep cell) asks for."""

    method: str
    labeled: float
    dataset: str = "synthetic"
    data_dir: Path | None = None
    seed: int = 0
    profile: str = "quick"
    config_file: Path | None = None
    overrides: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    experiment: str | None = None
    device: str = "auto"
    resume: bool | None = None  # None: resume when possible; True: must resume; False: never
    #: False trains every stage even where a cached state exists (``spinebench reproduce``).
    reuse_stage_cache: bool = True
    #: Recorded with the run's own tags (``spinebench.reproduces``).
    extra_tags: dict[str, str] = field(default_factory=dict)
    #: The sweep's parent run, when the run is one of its cells (``mlflow.parentRunId``).
    parent_run: str | None = None


@dataclass
class RunInfo:
    """What observers (hooks) and callers learn about a run."""

    method: str
    dataset: str
    seed: int
    labeled: float
    profile: str
    config: dict[str, Any]
    config_hash: str
    split_hash: str
    tracking_uri: str
    experiment: str
    run_id: str | None = None


@dataclass
class RunResult:
    """A finished run: its final test metrics and per-case scores (metric -> class -> value)."""

    info: RunInfo
    metrics: dict[str, float]
    per_case: dict[str, dict[str, dict[int, float]]]
    resumed: bool
    rank: int = 0  # a torchrun rank other than 0 has trained only: no metrics to report
