"""The phantom as a dataset on disk, the form every reader and the cache consume.

``case_seed`` derives each case's seed from the dataset's seed and the case's index, and
``write_dataset`` writes the cases as byte-reproducible gzipped NIfTI pairs plus a dataset.json
written last, whose presence marks a complete folder. It is kept apart from generation so the
arrays carry no file-format dependency: nibabel is imported only when something is written.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.atomic import write_atomic
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.data.phantom.generate import PHANTOM_VERSION, generate_case


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset: independent of the number of cases written."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 with qform and sform set; mtime 0 keeps files byte-reproducible."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(array.dtype)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def write_dataset(
    out_dir: Path, cases: int, seed: int = 0, **case_kwargs: Any
) -> list[tuple[Path, Path]]:
    """Write ``cases`` phantoms as NIfTI pairs plus dataset.json; returns (image, label) paths.

    dataset.json is written last, so its presence means the folder is complete.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(cases):
        case = generate_case(case_seed(seed, i), **case_kwargs)
        image_path = out_dir / "images" / f"case_{i:03d}.nii.gz"
        label_path = out_dir / "labels" / f"case_{i:03d}.nii.gz"
        write_atomic(image_path, _nifti_bytes(case.image.astype(np.float32), case.affine))
        write_atomic(label_path, _nifti_bytes(case.label.astype(np.uint8), case.affine))
        pairs.append((image_path, label_path))
    meta = {
        "generator": "spinebench-phantom",
        "version": PHANTOM_VERSION,
        "cases": cases,
        "seed": seed,
        "class_map": mrspineseg_class_map().to_dict(),
    }
    write_atomic(out_dir / "dataset.json", (json.dumps(meta, indent=2) + "\n").encode())
    return pairs
