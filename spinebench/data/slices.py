"""The preprocessing cache: every case decoded, reoriented, normalised and resized once.

Training reads 2D slices from memory-mapped ``.npy`` files, never NIfTI. The cache is keyed by
the dataset's content fingerprint and the preprocessing config; a file lock makes concurrent
runs build it once, and a build goes to a temporary folder renamed into place when complete. A
build refused by a bad case leaves nothing behind: no cache, no lock file, no new folder.

Legal but suspicious data is warned of in one line each time the cache is used: cases whose
mask is all background, and classes the dataset's own description names but no mask holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock

from spinebench.atomic import atomic_folder
from spinebench.data.dataset import Dataset, Volume
from spinebench.errors import DataError
from spinebench.paths import cache_dir

CACHE_VERSION = "1"


@dataclass
class CaseInfo:
    """Where a case's slices are in the cache and what its native grid is."""

    start: int
    stop: int
    native_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


class SliceCache:
    """Read-only view of a built cache; ``built_now``: this process built it (else reused)."""

    def __init__(self, root: Path, built_now: bool = False) -> None:
        self.root = root
        self.built_now = built_now
        meta = json.loads((root / "meta.json").read_text())
        self.image_size: int = meta["image_size"]
        self.cases: dict[str, CaseInfo] = {
            cid: CaseInfo(c["start"], c["stop"], tuple(c["native_shape"]), tuple(c["spacing"]))
            for cid, c in meta["cases"].items()
        }
        self.images = np.load(root / "images.npy", mmap_mode="r")
        self.labels = np.load(root / "labels.npy", mmap_mode="r")
        #: Cases whose mask is all background, and the label values that occur (None: a cache
        #: built before these were recorded).
        self.background_only: tuple[str, ...] | None = _optional_tuple(meta, "background_only")
        self.present: tuple[int, ...] | None = _optional_tuple(meta, "present")

    def has_foreground(self, case_id: str) -> bool:
        """Whether the case's mask holds any class (read from the mask for an older cache)."""
        if self.background_only is not None:
            return case_id not in self.background_only
        return bool(np.asarray(self.native_label(case_id)).any())

    def slice_indices(self, case_ids: tuple[str, ...] | list[str]) -> np.ndarray:
        """All slice rows of the given cases, in case order."""
        parts = [np.arange(self.cases[c].start, self.cases[c].stop) for c in case_ids]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def native_label(self, case_id: str) -> np.ndarray:
        return np.load(self.root / "native" / f"{case_id}.npy", mmap_mode="r")


def _optional_tuple(meta: dict[str, Any], key: str) -> Any:
    return tuple(meta[key]) if key in meta else None


def normalise(image: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Percentile clip then z-score over the whole volume (robust to bright fat and noise)."""
    lo, hi = np.percentile(image, percentiles)
    clipped = np.clip(image, lo, hi)
    std = float(clipped.std())
    return ((clipped - clipped.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def resize_slices(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize each slice in-plane to ``size`` x ``size`` (bilinear image, nearest label)."""
    img = torch.from_numpy(np.ascontiguousarray(image))[:, None]
    lab = torch.from_numpy(np.ascontiguousarray(label.astype(np.float32)))[:, None]
    img = F.interpolate(
        img, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    lab = F.interpolate(lab, size=(size, size), mode="nearest-exact")
    return img[:, 0].numpy().astype(np.float32), lab[:, 0].numpy().astype(np.uint8)


def cache_key(dataset_name: str, dataset: Dataset, config: dict[str, Any]) -> str:
    data = config["data"]
    payload = json.dumps(
        {
            "version": CACHE_VERSION,
            "dataset": dataset_name,
            "fingerprint": dataset.fingerprint(),
            "classes": dataset.class_map().to_dict(),
            "image_size": data["image_size"],
            "clip": data["clip_percentiles"],
            "sequence": data["sequence"],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _check_labels(volume: Volume, n_classes: int, origin: str) -> None:
    values = np.unique(volume.label)
    bad = values[(values < 0) | (values >= n_classes)]
    if bad.size:
        raise DataError(
            f"{origin}: label values {bad.tolist()[:8]} are outside the class map "
            f"(0..{n_classes - 1}); fix the mask or the dataset's class names"
        )


def build_or_load(dataset_name: str, dataset: Dataset, config: dict[str, Any]) -> SliceCache:
    """Return the cache for this dataset and preprocessing, building it under a lock if needed."""
    root = cache_dir() / "slices" / f"{dataset_name}-{cache_key(dataset_name, dataset, config)}"
    new_folders = _missing(root.parent)
    lock_file = Path(f"{root}.lock")
    lock_was_there = os.path.lexists(lock_file)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_file)):
            built_now = not (root / "meta.json").is_file()
            if built_now:
                try:
                    _build(root, dataset, config)
                except BaseException:
                    if not lock_was_there:  # unlinked while held: a waiter retries on a new file
                        lock_file.unlink(missing_ok=True)
                    raise
    except BaseException:
        for folder in new_folders:  # innermost first; a folder another process uses stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    cache = SliceCache(root, built_now)
    warn_suspicious(cache, dataset)
    return cache


def _missing(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    out = []
    while not os.path.lexists(folder) and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def _listed(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def warn_suspicious(cache: SliceCache, dataset: Dataset) -> None:
    """One warning line per legal-but-suspicious finding of the build: cases whose mask is
    all background (they teach nothing supervised and score nothing), and classes that the
    dataset's own description names but no mask holds (a typo there, or the wrong masks)."""
    empty = list(cache.background_only or ())
    if empty:
        warnings.warn(
            f"{len(empty)} of {len(cache.cases)} cases have a mask that is all background "
            f"({_listed(empty)}); check their label files",
            stacklevel=3,
        )
    source = dataset.class_source
    if source is None or cache.present is None:
        return
    classes = dataset.class_map().classes
    missing = [f"{c.name} ({c.id})" for c in classes if c.id not in cache.present]
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(classes)} classes named in {source} occur in no mask: "
            f"{_listed(missing)}; check its class list and the masks",
            stacklevel=3,
        )


def warn_background_only_labeled(cache: SliceCache, labeled: Sequence[str]) -> None:
    """A warning when labeled cases hold no foreground: the split is drawn by case, not by
    content, so a run's only labeled case can be an empty mask, and its supervised loss then
    sees background only (the draw stays as it is: it must not depend on the masks)."""
    empty = [c for c in labeled if not cache.has_foreground(c)]
    if empty:
        warnings.warn(
            f"{len(empty)} of the {len(labeled)} labeled cases have a mask that is all "
            f"background ({_listed(empty)}): the supervised loss sees no structure in them; "
            "check their label files or use another seed or labeled fraction",
            stacklevel=2,
        )


def _build(root: Path, dataset: Dataset, config: dict[str, Any]) -> None:
    """Preprocess every case into a temporary folder that becomes ``root`` only when all
    passed, so a bad case leaves no cache behind."""
    with atomic_folder(root) as tmp:
        _build_into(tmp, dataset, config)


def _build_into(tmp: Path, dataset: Dataset, config: dict[str, Any]) -> None:
    start_time = time.perf_counter()
    (tmp / "native").mkdir(parents=True)
    size = int(config["data"]["image_size"])
    pct = tuple(config["data"]["clip_percentiles"])
    n_classes = dataset.class_map().num_classes
    cases = dataset.cases()
    if not cases:
        raise DataError(f"no cases found in {dataset.data_dir}; check the folder layout")
    # One case in memory at a time: each is preprocessed into its own file, then copied
    # into the two memory-mapped arrays, so memory does not grow with the dataset.
    parts = tmp / "parts"
    parts.mkdir()
    meta_cases, row, any_label = {}, 0, False
    present: set[int] = set()
    background_only = []
    for case in cases:
        vol = dataset.load(case)
        _check_labels(vol, n_classes, str(case.label or case.image))
        values = {int(v) for v in np.unique(vol.label)} - {0}
        present |= values
        if not values:
            background_only.append(case.case_id)
        img, lab = resize_slices(normalise(vol.image, pct), vol.label, size)
        any_label = any_label or bool(lab.any())
        np.save(parts / f"{case.case_id}.image.npy", img)
        np.save(parts / f"{case.case_id}.label.npy", lab)
        np.save(tmp / "native" / f"{case.case_id}.npy", vol.label.astype(np.uint8))
        meta_cases[case.case_id] = {
            "start": row,
            "stop": row + img.shape[0],
            "native_shape": list(vol.label.shape),
            "spacing": list(vol.spacing),
        }
        row += img.shape[0]
    if not any_label:
        raise DataError(f"every mask in {dataset.data_dir} is empty; check the label files")
    for kind in ("image", "label"):
        first = np.load(parts / f"{cases[0].case_id}.{kind}.npy", mmap_mode="r")
        out = np.lib.format.open_memmap(
            tmp / f"{kind}s.npy", mode="w+", dtype=first.dtype, shape=(row, size, size)
        )
        for case_id, where in meta_cases.items():
            out[where["start"] : where["stop"]] = np.load(parts / f"{case_id}.{kind}.npy")
        out.flush()
        del out
    shutil.rmtree(parts)
    meta = {
        "image_size": size,
        "cases": meta_cases,
        "build_seconds": round(time.perf_counter() - start_time, 3),
        "background_only": background_only,
        "present": sorted(present),
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
