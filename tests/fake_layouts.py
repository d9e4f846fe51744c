"""Tiny fake spine datasets written in each supported layout, in any orientation.

Every case is drawn in slice space (axis 0 left->right, 1 superior->inferior, 2
posterior->anterior) as a stack of structures from the bottom up: sacrum, then disc k and
vertebra k for k = 1, 2, ... (vertebra 1 = L5, disc 1 = L5/S), plus a spinal canal behind the
bodies. Each layout maps the structures onto its own raw label values and the arrays are
written with an affine that keeps their anatomy, so a correct reader gets the drawing back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

SHAPE = (6, 32, 32)
SPACING = (4.0, 0.8, 0.6)  # left-right, superior-inferior, posterior-anterior, in mm
SACRUM, CANAL = ("sacrum", 0), ("canal", 0)
Structure = tuple[str, int]  # ("vertebra", k), ("disc", k), SACRUM or CANAL


@dataclass
class Case:
    """One drawn case in slice space: image and, per voxel, the structure's index in ``parts``."""

    image: np.ndarray
    part: np.ndarray  # -1 = background
    parts: list[Structure]


def draw_case(seed: int, levels: int = 3) -> Case:
    """Sacrum at the bottom, ``levels`` disc/vertebra pairs above it, and a canal behind."""
    rng = np.random.default_rng(seed)
    part = np.full(SHAPE, -1, dtype=np.int64)
    parts: list[Structure] = [SACRUM]
    bottom = 31 - int(rng.integers(0, 3))
    rows = [(SACRUM, bottom - 4, bottom)]
    top = bottom - 4
    for k in range(1, levels + 1):
        rows.append((("disc", k), top - 2, top))
        rows.append((("vertebra", k), top - 6, top - 2))
        parts += [("disc", k), ("vertebra", k)]
        top -= 6
    intensity = {"sacrum": 250.0, "disc": 600.0, "vertebra": 350.0, "canal": 800.0}
    image = rng.normal(100.0, 15.0, SHAPE).astype(np.float32)
    for structure, lo, hi in rows:
        index = parts.index(structure)
        part[1:5, lo:hi, 14:26] = index
        image[1:5, lo:hi, 14:26] += intensity[structure[0]]
    parts.append(CANAL)
    part[2:4, top : bottom - 4, 8:12] = len(parts) - 1
    image[2:4, top : bottom - 4, 8:12] += intensity["canal"]
    return Case(image * float(rng.uniform(0.5, 2.0)), part, parts)


def labels_of(case: Case, raw: Callable[[Structure], int]) -> np.ndarray:
    """The case's label volume under a layout's raw values (0 for unlabeled structures)."""
    lut = np.array([raw(s) for s in case.parts] + [0], dtype=np.int64)
    return lut[case.part]  # index -1 picks the trailing 0


def oriented(array: np.ndarray, axcodes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (slice space) stored in ``axcodes`` order, with the affine that says so."""
    base = np.zeros((4, 4))
    base[0, 0] = SPACING[0]  # axis 0 towards R: +x
    base[2, 1] = -SPACING[1]  # axis 1 towards I: -z
    base[1, 2] = SPACING[2]  # axis 2 towards A: +y
    base[:3, 3] = (-12.0, -9.0, 14.0)
    base[3, 3] = 1.0
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "I", "A")),
        nib.orientations.axcodes2ornt(tuple(axcodes)),
    )
    out = nib.orientations.apply_orientation(array, ornt)
    return np.ascontiguousarray(out), base @ nib.orientations.inv_ornt_aff(ornt, array.shape)


def permuted(
    array: np.ndarray, affine: np.ndarray, order: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The same image with its voxel axes permuted and the affine's columns permuted to match."""
    out = affine.copy()
    out[:, :3] = affine[:, list(order)]
    return np.ascontiguousarray(array.transpose(order)), out


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def write_mha(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """ITK stores (z, y, x) arrays and an LPS geometry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    sitk.WriteImage(img, str(path), True)


def _store(
    array: np.ndarray, axcodes: Sequence[str], perm: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    out, affine = oriented(array, axcodes)
    return permuted(out, affine, perm) if perm is not None else (out, affine)


def mrspineseg_raw(s: Structure) -> int:
    kind, k = s
    return {"sacrum": 1, "vertebra": 1 + k, "disc": 10 + k, "canal": 0}[kind]


def spider_raw(s: Structure, levels: int = 3) -> int:
    """SPIDER: vertebrae 1.. (top one partly visible: 100 + k), canal 100, discs 200 + k."""
    kind, k = s
    if kind == "vertebra":
        return 100 + k if k == levels else k
    return {"sacrum": 0, "disc": 200 + k, "canal": 100}[kind]


NNUNET_LABELS = {
    "background": 0,
    "S": 1,
    "L5": 2,
    "L4": 3,
    "L3": 4,
    "L5/S1": 5,
    "L4/L5": 6,
    "L3/L4": 7,
    "spinal canal": 8,
}
# MSD style: value -> name, with gaps (raw values are not class ids)
MSD_LABELS = {
    "0": "background",
    "1": "sacrum",
    "3": "vertebrae_L5",
    "4": "vertebrae_L4",
    "5": "vertebrae_L3",
    "10": "disc",
    "20": "spinal_canal",
}


def nnunet_raw(s: Structure) -> int:
    kind, k = s
    return {"sacrum": 1, "vertebra": 1 + k, "disc": 4 + k, "canal": 8}[kind]


def msd_raw(s: Structure) -> int:
    kind, k = s
    return {"sacrum": 1, "vertebra": 2 + k, "disc": 10, "canal": 20}[kind]


RAW = {"mrspineseg": mrspineseg_raw, "spider": spider_raw, "nnunet": nnunet_raw, "msd": msd_raw}


def write_layout(
    root: Path,
    layout: str,
    cases: int = 5,
    axcodes: Sequence[str] = ("P", "S", "L"),
    perm: Sequence[int] | None = None,
    series: Sequence[str] = ("t2",),
) -> dict[str, Case]:
    """Write ``cases`` fake cases in ``layout``; returns the drawings by case id."""
    drawn: dict[str, Case] = {}
    for n in range(1, cases + 1):
        case = draw_case(seed=n)
        image, affine = _store(case.image, axcodes, perm)
        label, _ = _store(labels_of(case, RAW[layout]).astype(np.uint8), axcodes, perm)
        if layout == "mrspineseg":
            write_nifti(root / "MR" / f"Case{n}.nii.gz", image, affine)
            write_nifti(root / "Mask" / f"mask_case{n}.nii.gz", label, affine)
            drawn[f"Case{n}"] = case
        elif layout == "spider":
            for s in series:
                write_mha(root / "images" / f"{n}_{s}.mha", image.astype(np.int16), affine)
                write_mha(root / "masks" / f"{n}_{s}.mha", label, affine)
                drawn[f"{n}_{s}"] = case
        elif layout == "nnunet":
            write_nifti(root / "imagesTr" / f"spine_{n:03d}_0000.nii.gz", image, affine)
            write_nifti(root / "labelsTr" / f"spine_{n:03d}.nii.gz", label, affine)
            drawn[f"spine_{n:03d}"] = case
        elif layout == "msd":
            write_nifti(root / "imagesTr" / f"spine_{n:03d}.nii.gz", image, affine)
            write_nifti(root / "labelsTr" / f"spine_{n:03d}.nii.gz", label, affine)
            drawn[f"spine_{n:03d}"] = case
    if layout == "nnunet":
        meta = {
            "channel_names": {"0": "T2"},
            "labels": NNUNET_LABELS,
            "numTraining": cases,
            "file_ending": ".nii.gz",
            "name": "FakeSpine",
        }
        (root / "dataset.json").write_text(json.dumps(meta))
    if layout == "msd":
        training = [
            {"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"}
            for cid in drawn
        ]
        meta = {
            "name": "FakeSpine",
            "modality": {"0": "MRI"},
            "labels": MSD_LABELS,
            "training": training,
        }
        (root / "dataset.json").write_text(json.dumps(meta))
    return drawn
