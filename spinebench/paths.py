"""Where spinebench writes: the runs folder (tracking, checkpoints) and the data cache, and the
check every command makes before it writes a folder: a refused path is one line, never a
traceback halfway through the work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from spinebench.errors import SpinebenchError


def runs_dir() -> Path:
    """``SPINEBENCH_RUNS`` or ``./spinebench-runs``: the default tracking store and checkpoints."""
    return Path(os.environ.get("SPINEBENCH_RUNS", "spinebench-runs")).resolve()


def cache_dir() -> Path:
    """``SPINEBENCH_CACHE`` or ``~/.cache/spinebench``: generated data and preprocessed slices."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spinebench"
    return Path(os.environ.get("SPINEBENCH_CACHE", default)).resolve()


def check_writable(folder: Path, name: str, fix: str) -> None:
    """Refuse a folder a command would write into when it is a file, lies under a file or a
    broken link, or cannot take a new file (a read-only disk, ``/proc``). ``name`` says where
    the path came from (``--out``, ``SPINEBENCH_RUNS``), ``fix`` what to do. Creates nothing:
    the probe file is anonymous and gone when closed."""
    path = Path(os.path.abspath(folder))
    shown = f"{name} {folder}"
    if path.exists() and not path.is_dir():
        raise SpinebenchError(f"{shown} is a file, not a folder; {fix}")
    existing = path
    while not existing.exists():
        if os.path.lexists(existing):
            raise SpinebenchError(f"{shown}: {existing} is a broken symbolic link; {fix}")
        existing = existing.parent
    if not existing.is_dir():
        raise SpinebenchError(f"{shown} is under {existing}, which is a file; {fix}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpinebenchError(
            f"{shown} cannot be written: {existing} takes no new files ({reason}); {fix}"
        ) from None


def check_work_folders() -> None:
    """The runs folder and the data cache a training command writes into, checked before it
    starts (each named by its environment variable when that set it)."""
    for variable, folder in (("SPINEBENCH_RUNS", runs_dir()), ("SPINEBENCH_CACHE", cache_dir())):
        given = variable in os.environ
        check_writable(
            folder,
            variable if given else f"the default {variable.split('_')[1].lower()} folder",
            f"point {variable} at a writable folder",
        )
