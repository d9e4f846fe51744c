"""Where spinebench writes: the runs folder (tracking, checkpoints) and the data cache."""

from __future__ import annotations

import os
from pathlib import Path


def runs_dir() -> Path:
    """``SPINEBENCH_RUNS`` or ``./spinebench-runs``: the default tracking store and checkpoints."""
    return Path(os.environ.get("SPINEBENCH_RUNS", "spinebench-runs")).resolve()


def cache_dir() -> Path:
    """``SPINEBENCH_CACHE`` or ``~/.cache/spinebench``: generated data and preprocessed slices."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spinebench"
    return Path(os.environ.get("SPINEBENCH_CACHE", default)).resolve()
