"""Atomic, verified checkpoints.

Each save writes a temporary file, fsyncs it, renames it over ``last.pt`` (the previous one is
kept as ``prev.pt``) and records its SHA-256 in a sidecar, so a crash or a full disk never leaves
a torn checkpoint in place, and a corrupt one is detected and the previous one used instead.
Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot execute code.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(state: dict[str, Any], folder: Path, name: str = "last") -> Path:
    """Atomically write ``state`` as ``folder/<name>.pt``; the former one becomes ``prev``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    tmp = folder / f"{name}.pt.tmp"
    try:
        with tmp.open("wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        digest = _sha256(tmp)
        if path.exists() and name == "last":
            os.replace(path, folder / "prev.pt")
            sidecar = folder / "last.sha256"
            if sidecar.exists():
                os.replace(sidecar, folder / "prev.sha256")
        os.replace(tmp, path)
        _write_atomic(folder / f"{name}.sha256", digest.encode())
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _verified(path: Path) -> bool:
    sidecar = path.with_suffix(".sha256")
    return path.is_file() and sidecar.is_file() and sidecar.read_text().strip() == _sha256(path)


def load_file(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load any checkpoint file safely (tensors and plain containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest intact checkpoint in ``folder``, or None; warns when falling back."""
    for name in ("last", "prev"):
        path = folder / f"{name}.pt"
        if not path.exists():
            continue
        if _verified(path):
            return load_file(path, map_location)
        log.warning("checkpoint %s is corrupt or truncated (hash mismatch); trying the previous "
                    "one", path)
    return None
