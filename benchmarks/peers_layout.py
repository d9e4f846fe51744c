"""The phantom in SSL4MIS's ACDC layout, so its 2D training scripts read the very slices
spinebench trains on (same cases, same labeled subset, same preprocessing and image size).

What SSL4MIS reads, at commit 06df604 (``code/dataloaders/dataset.py``):

- ``<root>/train_slices.list``, one slice name a line (l.41-44); its first ``labeled_slice``
  entries are the labeled ones (``code/train_mean_teacher_2D.py`` l.119-123), so the slices of
  the labeled cases come first;
- ``<root>/data/slices/<name>.h5`` with datasets ``image`` (float, H x W) and ``label``
  (integer, H x W) (l.60, l.63-64);
- ``<root>/val.list`` and ``<root>/data/<case>.h5`` volumes of the same keys, slices first
  (D x H x W), for its validation every 200 iterations (l.46-49, l.62; ``code/val_2D.py``).

Slices are written at the benchmark's image size, so the script's own resize to
``--patch_size`` (``RandomGenerator``, dataset.py l.161-163) keeps them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.data.slices import SliceCache
from spinebench.data.splits import Split


@dataclass(frozen=True)
class Layout:
    """Where the phantom was written and the counts the peer's command line needs."""

    root: Path
    labeled_cases: int
    labeled_slices: int
    train_slices: int
    val_cases: int


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise SystemExit(
            "writing SSL4MIS's h5 layout needs h5py: pip install 'spinebench[peers]'"
        ) from None
    return h5py


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    """One SSL4MIS sample file: datasets ``image`` (float32) and ``label`` (uint8)."""
    with _h5py().File(path, "w") as f:
        f.create_dataset("image", data=image.astype(np.float32))
        f.create_dataset("label", data=label.astype(np.uint8))


def write_layout(root: Path, cache: SliceCache, split: Split) -> Layout:
    """Write the training slices (labeled cases first) and the validation volumes."""
    slices = root / "data" / "slices"
    slices.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for case in (*split.labeled, *split.unlabeled):
        for k, row in enumerate(cache.slice_indices([case])):
            name = f"{case}_slice_{k}"
            write_h5(slices / f"{name}.h5", cache.images[row], cache.labels[row])
            names.append(name)
    labeled = len(cache.slice_indices(list(split.labeled)))
    (root / "train_slices.list").write_text("".join(f"{n}\n" for n in names))
    for case in split.val:
        rows = cache.slice_indices([case])
        write_h5(root / "data" / f"{case}.h5", cache.images[rows], cache.labels[rows])
    (root / "val.list").write_text("".join(f"{c}\n" for c in split.val))
    return Layout(root, len(split.labeled), labeled, len(names), len(split.val))
