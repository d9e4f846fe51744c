"""The ``spider`` dataset: SPIDER lumbar spine MR (van der Graaf et al., Sci Data 11:264, 2024).

Layout (the Zenodo release, record 10159290): ``images/<patient>_<series>.mha`` with a mask of
the same name in ``masks/``; ``<series>`` is ``t1``, ``t2`` or ``t2_SPACE`` and
``data.sequence`` (t1 | t2 | space) picks one, so a case is one patient.

Mask values (grand-challenge.org/algorithms/spider-baseline-iis): 1-25 vertebrae numbered from
the bottom (L5 = 1), 100 spinal canal, 101-125 the same vertebrae where only partly in view,
201-225 intervertebral discs numbered from the bottom (L5/S1 = 201). Partly visible vertebrae
count as their vertebra. Only values that occur in the chosen series enter the class map,
ordered vertebrae (bottom up), canal, discs (bottom up); finding them reads every mask once,
so the result is cached under the data's fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.atomic import write_atomic
from spinebench.builtin.readers import (
    RemappedDataset,
    files_with,
    itk_arrays,
    pair_cases,
    require_dir,
    spine_class,
)
from spinebench.data.classmap import ClassMap
from spinebench.data.dataset import CaseRef
from spinebench.errors import ConfigError, DataError
from spinebench.hookspecs import Register, hookimpl
from spinebench.paths import cache_dir

LAYOUT = "images/<patient>_<t1|t2|t2_SPACE>.mha and masks/ with the same names"
SERIES = {"t1": "t1", "t2": "t2", "space": "t2_SPACE"}
CANAL = 100
PARTIAL_OFFSET = 100  # 101-125: vertebra 1-25 partly outside the field of view
DISC_OFFSET = 200
SCHEME = "SPIDER: 1-25 vertebrae, 100 canal, 101-125 partial vertebrae, 201-225 discs"
# Vertebrae from the bottom of a lumbar scan: L5 is 1, C1 is 24.
_FROM_BOTTOM = (
    ["L5", "L4", "L3", "L2", "L1"]
    + [f"T{n}" for n in range(12, 0, -1)]
    + [f"C{n}" for n in range(7, 0, -1)]
)


def vertebra_name(number: int) -> str:
    """SPIDER's vertebra ``number`` (1 = L5) as a level code."""
    if number == 0:
        return "S1"
    return _FROM_BOTTOM[number - 1] if number <= len(_FROM_BOTTOM) else f"vertebra {number}"


def class_name(value: int) -> str:
    """Name of a raw SPIDER value (partial vertebrae already folded onto 1-25)."""
    if value == CANAL:
        return "spinal canal"
    if value > DISC_OFFSET:
        below = value - DISC_OFFSET
        return f"{vertebra_name(below)}/{vertebra_name(below - 1)}"
    return vertebra_name(value)


def fold(values: set[int], origin: Path) -> set[int]:
    """Raw foreground values with partial vertebrae folded onto theirs; others are errors."""
    vertebrae, partial = set(range(1, 26)), set(range(101, 126))
    discs = set(range(DISC_OFFSET + 1, DISC_OFFSET + 26))
    unknown = sorted(values - vertebrae - partial - discs - {0, CANAL})
    if unknown:
        raise DataError(
            f"{origin}: label values {unknown[:8]} are outside the class map "
            f"({SCHEME}); fix the mask"
        )
    return {v - PARTIAL_OFFSET if v in partial else v for v in values if v}


class SpiderDataset(RemappedDataset):
    reader = staticmethod(itk_arrays)

    def __init__(self, data_dir: Path | None, config: dict[str, Any]) -> None:
        super().__init__(data_dir, config)
        self.root = require_dir(data_dir, "spider", LAYOUT)
        sequence = str(config["data"]["sequence"]).lower()
        if sequence not in SERIES:
            raise ConfigError(
                f"data.sequence {sequence!r} is not a SPIDER series; use one of {', '.join(SERIES)}"
            )
        self.series = SERIES[sequence]
        self._values: list[int] | None = None

    def cases(self) -> list[CaseRef]:
        suffix = f"_{self.series}".lower()
        images = files_with(self.root / "images", ".mha", "images (<patient>_<series>.mha)")
        masks = files_with(self.root / "masks", ".mha", "masks (same names as the images)")
        chosen = {k: p for k, p in images.items() if k.lower().endswith(suffix)}
        if images and not chosen:
            found = sorted({k.split("_", 1)[-1] for k in images})
            raise DataError(
                f"{self.root / 'images'} holds no {self.series} series (found "
                f"{', '.join(found)}); pick one with --set data.sequence=..."
            )
        return pair_cases(
            chosen,
            {k: p for k, p in masks.items() if k.lower().endswith(suffix)},
            mask_for=lambda key: self.root / "masks" / f"{key}.mha",
            image_for=lambda key: self.root / "images" / f"{key}.mha",
        )

    def values(self) -> list[int]:
        """Folded raw values present in the chosen series' masks, cached by data fingerprint."""
        if self._values is None:
            store = cache_dir() / "spider-labels" / f"{self.fingerprint()}.json"
            if store.is_file():
                self._values = json.loads(store.read_text())
            else:
                present: set[int] = set()
                for case in self.cases():
                    assert case.label is not None
                    mask, _ = itk_arrays(case.label)
                    present |= fold({int(v) for v in np.unique(mask)}, case.label)
                if not present:
                    raise DataError(
                        f"every mask in {self.root / 'masks'} is empty; check the label files"
                    )
                self._values = sorted(present)
                write_atomic(store, json.dumps(self._values))
        return self._values

    def class_map(self) -> ClassMap:
        classes = tuple(spine_class(i, class_name(v)) for i, v in enumerate(self.values(), 1))
        return ClassMap(classes=classes, scheme=f"spider-{self.series}")

    def raw_ids(self) -> dict[int, int]:
        ids = {v: i for i, v in enumerate(self.values(), 1)}
        ids.update({v + PARTIAL_OFFSET: ids[v] for v in self.values() if 1 <= v <= 25})
        return ids

    def scheme(self) -> str:
        return SCHEME


@hookimpl
def spinebench_register_datasets(register: Register) -> None:
    register("spider", SpiderDataset)
