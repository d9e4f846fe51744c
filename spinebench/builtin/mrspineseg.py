"""The ``mrspineseg`` dataset: MRSpineSeg (Pang et al., 2021) as released for its challenge.

Layout: ``MR/CaseN.nii.gz`` images with ``Mask/mask_caseN.nii.gz`` masks, in the data folder or
in its ``train/`` sub-folder. Masks already carry the 19-class scheme (1 S, 2-10 L5..T9,
11-19 L5/S..T9/T10), so label values are class ids and any other value is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spinebench.builtin.readers import files_with, pair_cases, require_dir
from spinebench.data.classmap import ClassMap, mrspineseg_class_map
from spinebench.data.dataset import CaseRef, Dataset
from spinebench.errors import DataError
from spinebench.hookspecs import Register, hookimpl

LAYOUT = "MR/CaseN.nii.gz and Mask/mask_caseN.nii.gz (or train/MR and train/Mask)"


class MRSpineSegDataset(Dataset):
    def __init__(self, data_dir: Path | None, config: dict[str, Any]) -> None:
        super().__init__(data_dir, config)
        root = require_dir(data_dir, "mrspineseg", LAYOUT)
        if not (root / "MR").is_dir() and (root / "train" / "MR").is_dir():
            root = root / "train"
        if not (root / "MR").is_dir():
            raise DataError(
                f"{root} holds no MR/ folder (nor train/MR/); MRSpineSeg's layout is {LAYOUT}"
            )
        self.root = root

    def class_map(self) -> ClassMap:
        return mrspineseg_class_map()

    def cases(self) -> list[CaseRef]:
        images = files_with(self.root / "MR", ".nii.gz", "images (CaseN.nii.gz)")
        masks = {
            name.removeprefix("mask_").capitalize(): path
            for name, path in files_with(
                self.root / "Mask", ".nii.gz", "masks (mask_caseN.nii.gz)"
            ).items()
        }
        return pair_cases(
            images,
            masks,
            mask_for=lambda key: self.root / "Mask" / f"mask_{key.lower()}.nii.gz",
            image_for=lambda key: self.root / "MR" / f"{key}.nii.gz",
        )


@hookimpl
def spinebench_register_datasets(register: Register) -> None:
    register("mrspineseg", MRSpineSegDataset)
