"""The ``nnunet`` dataset: any spine data in nnU-Net's raw layout (VerSe, CTSpine1K, in-house).

nnU-Net v2: ``dataset.json`` (``labels`` as name -> value, ``file_ending``),
``imagesTr/<case>_0000<ending>`` and ``labelsTr/<case><ending>``. The Medical Segmentation
Decathlon layout (and nnU-Net v1) is read too: ``labels`` as value -> name and a ``training``
list of image/label paths. Class names are the user's; raw values map, in increasing order,
onto class ids 1..N. One input channel only, since every method trains on one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spinebench.builtin.readers import (
    NIFTI_ENDINGS,
    RemappedDataset,
    files_with,
    pair_cases,
    require_dir,
    spine_class,
)
from spinebench.data.classmap import ClassMap
from spinebench.data.dataset import CaseRef, existing_file, inside
from spinebench.errors import DataError
from spinebench.hookspecs import Register, hookimpl

LAYOUT = "dataset.json, imagesTr/<case>_0000.nii.gz and labelsTr/<case>.nii.gz"
CHANNEL = "_0000"


def read_dataset_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} not found; an nnU-Net raw dataset holds {LAYOUT}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise DataError(f"{path}: not valid JSON{where}; fix the file") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object with 'labels'")
    return meta


def parse_labels(labels: Any, origin: Path) -> dict[int, str]:
    """Foreground value -> name from v2 (name: value) or MSD/v1 (value: name) ``labels``."""
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{origin}: 'labels' is missing or empty; list the classes there")
    if "ignore" in labels:
        raise DataError(f"{origin}: the 'ignore' label is not supported; remove it")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        pairs = [(value, name) for name, value in labels.items()]
    elif all(isinstance(v, str) and k.strip().isdigit() for k, v in labels.items()):
        pairs = [(int(key), name) for key, name in labels.items()]
    else:
        raise DataError(
            f"{origin}: 'labels' must map names to integer values (nnU-Net v2) or "
            "values to names (MSD); region-based labels are not supported"
        )
    values = [v for v, _ in pairs]
    if len(set(values)) != len(values):
        raise DataError(f"{origin}: 'labels' gives a value to two classes; make them unique")
    return {value: name for value, name in sorted(pairs) if value != 0}


class NnUNetDataset(RemappedDataset):
    def __init__(self, data_dir: Path | None, config: dict[str, Any]) -> None:
        super().__init__(data_dir, config)
        self.root = require_dir(data_dir, "nnunet", LAYOUT)
        self.meta_path = self.root / "dataset.json"
        self.class_source = str(self.meta_path)
        self.meta = read_dataset_json(self.meta_path)
        self.labels = parse_labels(self.meta.get("labels"), self.meta_path)
        if not self.labels:
            raise DataError(f"{self.meta_path}: 'labels' holds only background; add the classes")
        channels = self.meta.get("channel_names", self.meta.get("modality", {"0": "image"}))
        if len(channels) != 1:
            raise DataError(
                f"{self.meta_path}: {len(channels)} input channels; spinebench "
                "trains on one, so keep one channel"
            )
        self.ending = str(self.meta.get("file_ending", ".nii.gz"))

    def class_map(self) -> ClassMap:
        classes = tuple(spine_class(i, name) for i, name in enumerate(self.labels.values(), 1))
        return ClassMap(classes=classes, scheme=f"nnunet:{self.meta.get('name', self.root.name)}")

    def raw_ids(self) -> dict[int, int]:
        return {value: i for i, value in enumerate(self.labels, 1)}

    def scheme(self) -> str:
        return f"values {sorted(self.labels)} of {self.meta_path}"

    def cases(self) -> list[CaseRef]:
        if "training" in self.meta:
            return self._listed_cases()
        ending = self.ending
        images = files_with(
            self.root / "imagesTr", CHANNEL + ending, f"images (<case>{CHANNEL}{ending})"
        )
        masks = files_with(self.root / "labelsTr", ending, f"labels (<case>{ending})")
        return pair_cases(
            images,
            masks,
            mask_for=lambda key: self.root / "labelsTr" / f"{key}{ending}",
            image_for=lambda key: self.root / "imagesTr" / f"{key}{CHANNEL}{ending}",
        )

    def _listed_cases(self) -> list[CaseRef]:
        """MSD/v1: the ``training`` list names each pair (v1 lists images without _0000)."""
        entries = self.meta["training"]
        if not isinstance(entries, list) or not entries:
            raise DataError(
                f"{self.meta_path}: 'training' must be a non-empty list of "
                "{'image': ..., 'label': ...}"
            )
        refs: list[CaseRef] = []
        seen: dict[str, int] = {}
        for number, entry in enumerate(entries, 1):
            if not isinstance(entry, dict) or not {"image", "label"} <= entry.keys():
                raise DataError(
                    f"{self.meta_path}: training entry {entry!r} needs 'image' and 'label'"
                )
            image = inside(self.root, entry["image"])
            label = inside(self.root, entry["label"])
            ending = next((e for e in NIFTI_ENDINGS if image.name.endswith(e)), image.suffix)
            channel0 = image.with_name(image.name[: -len(ending)] + CHANNEL + ending)
            if not existing_file(image) and existing_file(channel0):
                image = channel0
            if not existing_file(image):
                raise DataError(
                    f"{image}: listed in {self.meta_path.name} but missing; "
                    "add it or remove its training entry"
                )
            if not existing_file(label):
                raise DataError(
                    f"{image}: no mask at {label}; add it or remove its "
                    f"training entry in {self.meta_path.name}"
                )
            case_id = label.name[: -len(ending)] if label.name.endswith(ending) else label.stem
            if case_id in seen:  # one case twice could be trained on and tested
                raise DataError(
                    f"{self.meta_path}: training entries {seen[case_id]} and {number} are both "
                    f"case {case_id!r}; remove the repeated entry"
                )
            seen[case_id] = number
            refs.append(CaseRef(case_id, image, label))
        return sorted(refs, key=lambda r: r.case_id)


@hookimpl
def spinebench_register_datasets(register: Register) -> None:
    register("nnunet", NnUNetDataset)
