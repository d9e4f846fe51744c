"""Atomic, verified checkpoints.

A save writes a uniquely named temporary file, fsyncs it, records its SHA-256 in the digest file
of its name, then renames it into place (the former ``last.pt`` becomes ``prev.pt``). A file is
intact when its digest is recorded, and a digest is recorded before its file appears and kept
until two newer ones exist, so a kill or a full disk at any instant leaves the newest completed
checkpoint (or the one before) loadable, and a corrupt or truncated one is detected and skipped.
Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot execute code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from spinebench.atomic import write_atomic
from spinebench.errors import SpinebenchError

KEEP_DIGESTS = 3


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest_file(folder: Path, name: str) -> Path:
    """``last`` and ``prev`` share one digest file: ``prev.pt`` is a renamed ``last.pt``."""
    return folder / f"{'last' if name == 'prev' else name}.sha256"


def _recorded(folder: Path, name: str) -> list[str]:
    path = _digest_file(folder, name)
    return path.read_text().split() if path.is_file() else []


def save(state: dict[str, Any], folder: Path, name: str = "last") -> Path:
    """Atomically write ``state`` as ``folder/<name>.pt``; a former ``last`` becomes ``prev``.

    Concurrent savers of the same name (two runs caching one stage) never share a temporary
    file. An ``OSError`` (full disk, lost mount) leaves the previous checkpoint in place and
    becomes a one-line error.
    """
    path = folder / f"{name}.pt"

    def record_and_rotate(tmp: Path) -> None:
        digests = [*_recorded(folder, name), _sha256(tmp)][-KEEP_DIGESTS:]
        write_atomic(_digest_file(folder, name), "\n".join(digests), fsync=True)
        if name == "last" and path.exists():
            os.replace(path, folder / "prev.pt")

    try:
        write_atomic(
            path, lambda f: torch.save(state, f), fsync=True, before_replace=record_and_rotate
        )
    except OSError as exc:
        raise SpinebenchError(
            f"cannot write checkpoint {path} ({exc.strerror or exc}); the previous checkpoint "
            "is kept: free disk space, then rerun the same command to resume"
        ) from None
    return path


def is_intact(path: Path) -> bool:
    """Whether ``path`` is a checkpoint whose content matches a recorded digest."""
    return path.is_file() and _sha256(path) in _recorded(path.parent, path.stem)


def load_file(
    path: Path, map_location: str | torch.device = "cpu", *, shown_as: str | None = None
) -> dict[str, Any]:
    """Load any checkpoint file safely: tensors and plain containers only, never code.

    ``shown_as`` names the file in errors when ``path`` is a local copy (a run's artifact).
    """
    name = shown_as or str(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        why = [ln for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        raise SpinebenchError(
            f"{name} was refused: it holds objects other than tensors and plain containers "
            f"({(why or ['unsafe content'])[0].strip()[:160]}); spinebench never writes such "
            "files, so delete it"
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise SpinebenchError(
            f"{name} is not a readable checkpoint ({type(exc).__name__}: "
            f"{str(exc).split('. ')[0][:120]}); it is truncated or not a torch file: delete it"
        ) from None


def load_latest(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest intact checkpoint in ``folder``, or None; warns when falling back."""
    for name in ("last", "prev"):
        path = folder / f"{name}.pt"
        if not path.exists():
            continue
        if is_intact(path):
            return load_file(path, map_location)
        warnings.warn(
            f"checkpoint {path} is corrupt or truncated (its digest is not recorded); "
            "using the previous one",
            stacklevel=2,
        )
    return None
