"""Dataset readers: a dataset lists cases and loads each as a volume in slice space.

Slice space is the one orientation every method trains in: axis 0 runs left to right (one
sagittal slice per index), axis 1 runs superior to inferior (row 0 is the top of the image) and
axis 2 runs posterior to anterior. It is derived from the image's affine, never guessed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

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

    #: Where the class names come from when the user wrote them (nnU-Net's ``dataset.json``):
    #: then a class that no mask holds is warned of. None for a fixed scheme, where a class
    #: absent from one dataset is normal.
    class_source: str | None = None

    def __init__(self, data_dir: Path | None, config: dict[str, Any]) -> None:
        self.data_dir = data_dir
        self.config = config

    def class_map(self) -> ClassMap:
        raise NotImplementedError

    def cases(self) -> list[CaseRef]:
        raise NotImplementedError

    def load(self, case: CaseRef) -> Volume:
        """Read one case into slice space (default: NIfTI image and label)."""
        return load_pair(case)

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
    """Load a NIfTI header, failing with one line for a missing, unreadable or unoriented file."""
    if not existing_file(path):
        raise DataError(f"{path}: file not found; check the data folder layout")
    try:
        img = cast(nib.Nifti1Image, nib.load(str(path)))
    except Exception as exc:
        raise DataError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}); re-export or remove it"
        ) from None
    header = img.header
    if "qform_code" in header and not header["qform_code"] and not header["sform_code"]:
        # nibabel would fall back to a pixdim-only affine: a guess at the orientation.
        raise DataError(
            f"{path}: orientation unknown (qform_code and sform_code are 0); "
            "re-export it with its qform/sform set"
        )
    return img


def voxel_data(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """The voxels of a loaded header (scaled as stored), failing with one line when truncated."""
    try:
        return np.asarray(img.dataobj)
    except Exception as exc:
        raise DataError(
            f"{path}: truncated or unreadable data ({type(exc).__name__}); re-export or remove it"
        ) from None


def nifti_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine of a NIfTI file (the default reader of :func:`load_pair`)."""
    img = read_nifti(path)
    return voxel_data(img, path), img.affine


def checked_image(array: np.ndarray, path: Path) -> np.ndarray:
    """An image as a finite 3D float32 volume (a trailing singleton 4th axis is dropped).

    A constant image is legal but holds no anatomy: it trains on nothing, so it is warned of.
    """
    image = np.asarray(array, dtype=np.float32)
    if image.ndim == 4 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise DataError(f"{path}: contains NaN or Inf voxels; clean the image")
    if image.size and image.min() == image.max():
        warnings.warn(
            f"{path}: every voxel is {float(image.flat[0]):g}: a constant image holds no "
            "anatomy; check the export or remove the case",
            stacklevel=2,
        )
    return image


def checked_label(array: np.ndarray, path: Path) -> np.ndarray:
    """A mask as integer class values; fractional values (a mask resampled with linear
    interpolation) would be rounded into the wrong class, so they are an error."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    values = np.asarray(array, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: the mask contains NaN or Inf; clean the mask")
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise DataError(
            f"{path}: mask values must be whole class numbers, found {float(fractional[0]):g}; "
            "re-export the mask with nearest-neighbour interpolation"
        )
    return values.astype(np.int64)


def kind_of(path: Path) -> str:
    """What stands at an existing ``path``, for messages: "a folder", "a named pipe (FIFO)"..."""
    mode = path.stat().st_mode
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "a file")


def existing_file(path: Path) -> bool:
    """Whether ``path`` is a file. Something else standing where a file is expected (a folder,
    a named pipe, a broken or looping symbolic link) is an error that says what stands there,
    not a file that silently is not there (reading a pipe would wait forever)."""
    if path.exists() and not path.is_file():
        raise DataError(
            f"{path}: is {kind_of(path)}, not a file; replace it with the file or remove it"
        )
    if not path.is_symlink():
        return path.is_file()
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python 3.11 reports a loop as RuntimeError
        raise DataError(f"{path}: symbolic link loop; fix or remove the link") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"{path}: symbolic link loop; fix or remove the link") from None
        raise DataError(
            f"{path}: symbolic link to a missing file ({os.readlink(path)}); fix or remove the link"
        ) from None
    return target.is_file()


#: File endings of volumes some tool writes; a reader warns of those it leaves unread.
VOLUME_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".mgz", ".hdr", ".img")


def warn_unread(folder: Path, ending: str) -> None:
    """One warning for the volumes in ``folder`` that a reader of ``*ending`` files skips (a
    case exported as ``.nii`` among ``.nii.gz``): legal, but the case silently would not exist."""
    try:
        names = sorted(
            p.name
            for p in folder.iterdir()
            if not p.name.startswith(".")
            and p.name.endswith(VOLUME_ENDINGS)
            and not p.name.endswith(ending)
        )
    except OSError:
        return
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        warnings.warn(
            f"{folder}: {len(names)} file(s) not read ({shown}): only *{ending} files are read "
            "there; convert or rename them to include those cases",
            stacklevel=2,
        )


Reader = Callable[[Path], tuple[np.ndarray, np.ndarray]]


def load_pair(case: CaseRef, read: Reader = nifti_arrays) -> Volume:
    """Read image and label with ``read``, check they match, and reorient both to slice space."""
    raw, affine = read(case.image)
    image = checked_image(raw, case.image)
    if case.label is None:
        raise DataError(f"{case.image}: no label file for case {case.case_id}")
    label_raw, label_affine = read(case.label)
    if label_raw.ndim == 4 and label_raw.shape[-1] == 1:
        label_raw = label_raw[..., 0]
    if label_raw.shape != image.shape:
        raise DataError(
            f"{case.label}: shape {label_raw.shape} differs from its image "
            f"{image.shape}; resample the mask onto the image grid"
        )
    if not np.allclose(label_affine, affine, atol=1e-3):
        raise DataError(
            f"{case.label}: affine differs from its image's; "
            "resample or copy the image header onto the mask"
        )
    label = checked_label(label_raw, case.label)
    image_s, spacing = to_slice_space(image, affine, case.image)
    label_s, _ = to_slice_space(label, affine, case.image)
    return Volume(case.case_id, image_s, label_s, spacing)


def inside(data_dir: Path, path: str | Path) -> Path:
    """``data_dir / path``, refused when it leaves ``data_dir``.

    Readers call it on every path a manifest (``dataset.json``) names, so a downloaded dataset
    cannot make spinebench read files elsewhere ('..', absolute paths). The check is on the
    normalised text, not on resolved links, so a data folder reached through a symlink works.
    """
    root = Path(os.path.abspath(data_dir))
    target = Path(os.path.abspath(root / path))
    if target != root and root not in target.parents:
        raise DataError(
            f"{path}: points outside the data folder {data_dir}; manifest paths must be "
            "relative to it (no '..', no absolute paths)"
        )
    return target
