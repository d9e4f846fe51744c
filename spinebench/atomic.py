"""Atomic file and folder writes: the one way spinebench puts a result on disk.

A reader sees the old content or the new, never half of it: data goes to a uniquely named
temporary file (or folder) beside the target, which is renamed into place only when complete.
A crash, a kill or a full disk leaves the target as it was and no temporary behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def write_atomic(
    path: Path,
    data: bytes | str | Callable[[IO[bytes]], None],
    *,
    fsync: bool = False,
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``data`` (bytes, text, or a function that writes into a binary file) to ``path``.

    ``fsync``: flush the file and its folder to the disk before returning (checkpoints that
    must survive a power loss); without it the rename alone is atomic for other processes.
    ``before_replace(tmp)`` runs once the complete temporary file exists and before it takes
    ``path``'s place (a checkpoint records its digest there).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
        if fsync:
            sync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sync_folder(folder: Path) -> None:
    """fsync a folder, so the renames inside it are on the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_folder(root: Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling that replaces ``root`` when the block succeeds.

    On an exception the temporary folder is removed and ``root`` is left untouched.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    try:
        yield tmp
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
