"""Dataset readers: a dataset lists cases and loads each as a volume in slice space.

Slice space is the one orientation every method trains in: axis 0 runs left to right (one
sagittal slice per index), axis 1 runs superior to inferior (row 0 is the top of the image) and
axis 2 runs posterior to anterior. It is derived from the image's affine, never guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np

from spinebench.data.classmap import ClassMap
from spinebench.errors import DataError

SLICE_AXCODES = ("R", "I", "A")


@dataclass(frozen=True)
class CaseRef:
    """One patient: an id, its image file and its label file (None for unlabeled-only data)."""

    case_id: str
    image: Path
    label: Path | None


@dataclass
class Volume:
    """A case in slice space: image float32 and integer label of shape (slices, rows, cols)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


class Dataset:
    """Base class of dataset plugins. Subclasses list cases and read them."""

    #: Whether the labels of unlabeled training cases may be shown as ``pseudo/dice``
    #: diagnostics (true for data with full ground truth, as all built-in readers have).
    has_hidden_truth: ClassVar[bool] = True

    def __init__(self, data_dir: Path | None, config: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.config = config

    def class_map(self) -> ClassMap:
        raise NotImplementedError

    def cases(self) -> list[CaseRef]:
        raise NotImplementedError

    def load(self, case: CaseRef) -> Volume:
        """Read one case into slice space (default: NIfTI image and label)."""
        return load_nifti_pair(case)

    def fingerprint(self) -> str:
        """Content key of the data for the preprocessing cache: names, sizes and mtimes."""
        h = hashlib.sha256()
        for case in self.cases():
            for path in (case.image, case.label):
                if path is not None:
                    st = path.stat()
                    h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()[:16]


def slice_transform(affine: np.ndarray, path: Path) -> np.ndarray:
    """Orientation transform from an image's voxel axes to slice space."""
    try:
        source = nib.orientations.io_orientation(affine)
    except Exception as exc:
        raise DataError(f"{path}: orientation cannot be read from the affine ({exc})") from None
    if np.isnan(source).any():
        raise DataError(
            f"{path}: orientation cannot be determined from its affine; "
            "fix the header (qform/sform) so each axis has a direction"
        )
    return nib.orientations.ornt_transform(source, nib.orientations.axcodes2ornt(SLICE_AXCODES))


def to_slice_space(array: np.ndarray, affine: np.ndarray, path: Path) -> tuple[np.ndarray, tuple]:
    """Reorient ``array`` to slice space; returns it with the voxel spacing in that order."""
    transform = slice_transform(affine, path)
    out = nib.orientations.apply_orientation(array, transform)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(float(zooms[int(axis)]) for axis in np.argsort(transform[:, 0]))
    return np.ascontiguousarray(out), spacing


def from_slice_space(array: np.ndarray, affine: np.ndarray, path: Path) -> np.ndarray:
    """Inverse of :func:`to_slice_space`: back to the image's own voxel order."""
    source = nib.orientations.io_orientation(affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(SLICE_AXCODES), source)
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, back))


def read_nifti(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI header, failing with one line for a missing or unreadable file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the data folder layout")
    try:
        return nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}); "
                        "re-export or remove it") from None


def load_nifti_pair(case: CaseRef) -> Volume:
    """Read image and label, check they match, and reorient both to slice space."""
    img = read_nifti(case.image)
    try:
        image = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise DataError(f"{case.image}: truncated or unreadable data ({type(exc).__name__}); "
                        "re-export or remove it") from None
    if image.ndim == 4 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise DataError(f"{case.image}: expected a 3D volume, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise DataError(f"{case.image}: contains NaN or Inf voxels; clean the image")
    if case.label is None:
        raise DataError(f"{case.image}: no label file for case {case.case_id}")
    lab = read_nifti(case.label)
    try:
        label_raw = np.asarray(lab.dataobj)
    except Exception as exc:
        raise DataError(f"{case.label}: truncated or unreadable data ({type(exc).__name__}); "
                        "re-export or remove it") from None
    if label_raw.shape != image.shape:
        raise DataError(f"{case.label}: shape {label_raw.shape} differs from its image "
                        f"{image.shape}; resample the mask onto the image grid")
    if not np.allclose(lab.affine, img.affine, atol=1e-3):
        raise DataError(f"{case.label}: affine differs from its image's; "
                        "resample or copy the image header onto the mask")
    label = np.rint(label_raw).astype(np.int64)
    image_s, spacing = to_slice_space(image, img.affine, case.image)
    label_s, _ = to_slice_space(label, img.affine, case.image)
    return Volume(case.case_id, image_s, label_s, spacing)
