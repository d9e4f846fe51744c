"""What the real-data readers share: folder checks, image/mask pairing, ITK files, label
remapping onto contiguous class ids, and class names turned into kinds and prompts.

Every failure is a :class:`~spinebench.errors.DataError` of one line that names the file and
the fix; nothing here writes into the data folder.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from spinebench.data.classmap import SpineClass
from spinebench.data.dataset import (
    CaseRef,
    Dataset,
    Reader,
    Volume,
    existing_file,
    load_pair,
    nifti_arrays,
    warn_unread,
)
from spinebench.errors import DataError

NIFTI_ENDINGS = (".nii.gz", ".nii")

_LEVEL = r"(?:C[1-7]|T(?:1[0-3]|[1-9])|L[1-6]|S[1-5]?|Co)"
_VERTEBRA = re.compile(rf"{_LEVEL}")
_DISC = re.compile(rf"{_LEVEL}\s*[/-]\s*{_LEVEL}")
_KIND_WORDS = (
    ("disc", "disc"),
    ("ivd", "disc"),
    ("canal", "canal"),
    ("sacrum", "sacrum"),
    ("vertebra", "vertebra"),
)


def spine_class(class_id: int, name: str) -> SpineClass:
    """A class whose kind and prompt follow from its name.

    A bare level code ("L3", "L3/L4") is ambiguous to a text encoder, so its prompt spells out
    the structure ("L3 vertebra", "L3/L4 intervertebral disc"); any other name is kept as the
    prompt (underscores read as spaces). MRSpineSeg's names give its published class map.
    """
    if name == "S":
        return SpineClass(class_id, name, "sacrum", "sacrum")
    if _VERTEBRA.fullmatch(name):
        return SpineClass(class_id, name, "vertebra", f"{name} vertebra")
    if _DISC.fullmatch(name):
        return SpineClass(class_id, name, "disc", f"{name} intervertebral disc")
    lowered = name.lower()
    kind = next((k for word, k in _KIND_WORDS if word in lowered), "other")
    return SpineClass(class_id, name, kind, name.replace("_", " "))


def require_dir(data_dir: Path | None, dataset: str, layout: str) -> Path:
    """The data folder, which the user must give for a real dataset."""
    if data_dir is None:
        raise DataError(f"dataset {dataset!r} needs --data-dir: the folder holding {layout}")
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"--data-dir {data_dir} is a file, not a folder; pass the folder holding {layout}"
        )
    if not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist; fix --data-dir (it must hold {layout})"
        )
    return data_dir


def files_with(folder: Path, ending: str, what: str) -> dict[str, Path]:
    """Files of ``folder`` ending in ``ending`` by name without it; a missing folder is an
    error, other volumes there are warned of (:func:`warn_unread`)."""
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; the {what} go there")
    warn_unread(folder, ending)
    return {
        p.name[: -len(ending)]: p for p in sorted(folder.glob(f"*{ending}")) if existing_file(p)
    }


def pair_cases(
    images: dict[str, Path],
    masks: dict[str, Path],
    mask_for: Callable[[str], Path],
    image_for: Callable[[str], Path],
) -> list[CaseRef]:
    """One case per key present in both; an image without a mask, or the reverse, is an error."""
    for key in sorted(images.keys() - masks.keys()):
        raise DataError(f"{images[key]}: no mask at {mask_for(key)}; add it or remove the image")
    for key in sorted(masks.keys() - images.keys()):
        raise DataError(
            f"{masks[key]}: mask without an image (expected {image_for(key)}); "
            "add the image or remove the mask"
        )
    if not images:
        raise DataError(
            f"no images found (expected e.g. {image_for('<case>')}); "
            "check --data-dir and the folder layout"
        )
    return [CaseRef(key, images[key], masks[key]) for key in sorted(images)]


def itk_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in index order and the RAS+ affine of an ITK-readable file (.mha, .nrrd, ...).

    ITK describes space in LPS; flipping the first two world axes gives nibabel's RAS+.
    """
    import SimpleITK as sitk

    if not existing_file(path):
        raise DataError(f"{path}: file not found; check the data folder layout")
    try:
        with _c_stderr_silenced():  # ITK's MetaIO writes its own lines before our one-line error
            img = sitk.ReadImage(str(path))
            array = sitk.GetArrayFromImage(img)
    except RuntimeError as exc:
        reason = next((line for line in str(exc).splitlines() if line.strip()), "read failed")
        raise DataError(
            f"{path}: truncated or unreadable image ({reason.strip()[:120]}); "
            "re-export or remove it"
        ) from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: expected a scalar 3D image, got {img.GetDimension()}D with "
            f"{img.GetNumberOfComponentsPerPixel()} component(s)"
        )
    lps = np.eye(4)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return array.transpose(2, 1, 0), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null: C++ libraries write to it directly (std::cerr),
    past Python's sys.stderr. Python's own stderr stream is flushed first and restored after."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI through nibabel, anything else through SimpleITK."""
    return nifti_arrays(path) if path.name.endswith(NIFTI_ENDINGS) else itk_arrays(path)


def remap_labels(volume: Volume, ids: dict[int, int], origin: Path, scheme: str) -> Volume:
    """Raw mask values onto class ids (0 stays background); an unknown value is an error."""
    values, inverse = np.unique(volume.label, return_inverse=True)
    unknown = [int(v) for v in values if v != 0 and int(v) not in ids]
    if unknown:
        raise DataError(
            f"{origin}: label values {unknown[:8]} are outside the class map "
            f"({scheme}); fix the mask or the dataset's class names"
        )
    lut = np.array([ids.get(int(v), 0) for v in values], dtype=np.int64)
    return replace(volume, label=lut[inverse].reshape(volume.label.shape))


class RemappedDataset(Dataset):
    """A reader whose masks carry their own label values, mapped here onto ids 1..N."""

    #: Reads one image or mask file into (voxels, affine).
    reader: Reader = staticmethod(read_arrays)

    def raw_ids(self) -> dict[int, int]:
        """Class id of every raw foreground value that may occur in a mask."""
        raise NotImplementedError

    def scheme(self) -> str:
        """The raw label scheme, for error messages."""
        raise NotImplementedError

    def load(self, case: CaseRef) -> Volume:
        volume = load_pair(case, self.reader)
        return remap_labels(volume, self.raw_ids(), case.label or case.image, self.scheme())
