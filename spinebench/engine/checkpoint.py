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
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(folder: Path, stem: str, write: Any) -> Path:
    """Write through ``write(file)`` into a fresh temporary file in ``folder``; fsync it."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def save(state: dict[str, Any], folder: Path, name: str = "last") -> Path:
    """Atomically write ``state`` as ``folder/<name>.pt``; a former ``last`` becomes ``prev``.

    Concurrent savers of the same name (two runs caching one stage) never share a temporary
    file. An ``OSError`` (full disk, lost mount) leaves the previous checkpoint in place and
    becomes a one-line error.
    """
    path = folder / f"{name}.pt"
    temporary: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = _write_synced(folder, name, lambda f: torch.save(state, f))
        temporary.append(tmp)
        digests = [*_recorded(folder, name), _sha256(tmp)][-KEEP_DIGESTS:]
        sidecar = _write_synced(folder, name, lambda f: f.write("\n".join(digests).encode()))
        temporary.append(sidecar)
        os.replace(sidecar, _digest_file(folder, name))
        if name == "last" and path.exists():
            os.replace(path, folder / "prev.pt")
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as exc:
        raise SpinebenchError(
            f"cannot write checkpoint {path} ({exc.strerror or exc}); the previous checkpoint "
            "is kept: free disk space, then rerun the same command to resume"
        ) from None
    finally:
        for leftover in temporary:
            leftover.unlink(missing_ok=True)
    return path


def is_intact(path: Path) -> bool:
    """Whether ``path`` is a checkpoint whose content matches a recorded digest."""
    return path.is_file() and _sha256(path) in _recorded(path.parent, path.stem)


def load_file(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load any checkpoint file safely: tensors and plain containers only, never code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        why = [ln for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        raise SpinebenchError(
            f"{path} was refused: it holds objects other than tensors and plain containers "
            f"({(why or ['unsafe content'])[0].strip()[:160]}); spinebench never writes such "
            "files, so delete it"
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise SpinebenchError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: "
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
