"""The ``synthetic`` dataset: the procedural spine phantom, generated on first use.

With no ``--data-dir`` the phantom is generated into the cache (keyed by generator version,
case count and seed, under a lock so concurrent runs generate it once); with one, the folder
must hold what ``spinebench data synth`` writes (``images/`` and ``labels/`` NIfTI pairs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filelock import FileLock

from spinebench.atomic import atomic_folder
from spinebench.data.classmap import ClassMap, mrspineseg_class_map
from spinebench.data.dataset import CaseRef, Dataset, Volume, existing_file, warn_unread
from spinebench.errors import DataError
from spinebench.hookspecs import Register, hookimpl
from spinebench.paths import cache_dir


class SyntheticDataset(Dataset):
    """Without ``data_dir``, the cached phantom: its cases are known from the config, and it is
    generated only when a case is first read, so a run refused before that writes nothing."""

    def __init__(self, data_dir: Path | None, config: dict[str, Any]) -> None:
        super().__init__(data_dir, config)
        self.generated = data_dir is None
        self.count = int(config["data"]["cases"])
        self.seed = int(config["data"]["generator_seed"])
        if data_dir is None:
            self.data_dir = phantom_folder(self.count, self.seed)
        elif data_dir.exists() and not data_dir.is_dir():
            raise DataError(f"--data-dir {data_dir} is a file, not a folder; pass the folder")
        elif not data_dir.is_dir():
            raise DataError(
                f"data folder {data_dir} does not exist; create it with "
                f"`spinebench data synth --out {data_dir}` or fix --data-dir"
            )

    def class_map(self) -> ClassMap:
        return mrspineseg_class_map()

    def cases(self) -> list[CaseRef]:
        assert self.data_dir is not None
        if self.generated:
            names = [f"case_{i:03d}" for i in range(self.count)]  # as write_dataset names them
            root = self.data_dir
            files = [(n, f"{n}.nii.gz") for n in names]
            return [CaseRef(n, root / "images" / f, root / "labels" / f) for n, f in files]
        images = sorted((self.data_dir / "images").glob("*.nii.gz"))
        if images:
            warn_unread(self.data_dir / "images", ".nii.gz")
        if not images:
            raise DataError(
                f"{self.data_dir}/images holds no .nii.gz files; generate them with "
                f"`spinebench data synth --out {self.data_dir}`"
            )
        refs = []
        for image in images:
            case_id = image.name.removesuffix(".nii.gz")
            label = self.data_dir / "labels" / image.name
            if not existing_file(label):
                raise DataError(f"{image}: no mask at {label}; add it or remove the image")
            refs.append(CaseRef(case_id, image, label))
        return refs

    def load(self, case: CaseRef) -> Volume:
        if self.generated:
            ensure_generated(self.count, self.seed)
        return super().load(case)

    def fingerprint(self) -> str:
        if self.generated:
            ensure_generated(self.count, self.seed)
        return super().fingerprint()


def phantom_folder(cases: int, seed: int) -> Path:
    """Where the phantom of (version, cases, seed) is cached."""
    from spinebench.data.phantom import PHANTOM_VERSION

    return cache_dir() / "synthetic" / f"v{PHANTOM_VERSION}-n{cases}-s{seed}"


def ensure_generated(cases: int, seed: int) -> Path:
    """The cached phantom folder for (version, cases, seed), generated once under a lock."""
    from spinebench.data.phantom import write_dataset

    root = phantom_folder(cases, seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / "dataset.json").is_file():
            with atomic_folder(root) as tmp:
                write_dataset(tmp, cases=cases, seed=seed)
    return root


@hookimpl
def spinebench_register_datasets(register: Register) -> None:
    register("synthetic", SyntheticDataset)
