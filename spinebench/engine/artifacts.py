"""Every file a run writes, where it goes and its format, shared with ``predict``.

Tracked artifacts (MLflow): ``config.yaml``, ``split.json``, ``class_map.json`` at the start;
``per_case.csv`` (the best-validation checkpoint), ``per_case_last.csv`` (the last one),
``overlays/*.png`` and the final model ``checkpoint/model.pt`` at the end;
``stages/<method>-<stage>-<hash>.pt`` for a cached stage. Local files under the runs folder
(``SPINEBENCH_RUNS``): ``checkpoints/<run id>/`` (resume and best-model checkpoints, see
:mod:`spinebench.engine.checkpoint`) and ``locks/<config hash>.lock``; under the cache folder:
``stages/`` (cached stage states). ``predict`` writes label maps with :func:`write_labels`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from filelock import FileLock, Timeout

from spinebench.atomic import write_atomic
from spinebench.data.classmap import ClassMap
from spinebench.data.slices import SliceCache
from spinebench.data.splits import Split
from spinebench.engine import checkpoint
from spinebench.engine.evaluate import Evaluation
from spinebench.engine.tracking import DataInput, Tracker
from spinebench.errors import ConfigError, SpinebenchError
from spinebench.method import Method
from spinebench.paths import cache_dir, runs_dir
from spinebench.runinfo import RunRequest
from spinebench.stats import nanmean

CONFIG = "config.yaml"
SPLIT = "split.json"
CLASS_MAP = "class_map.json"
PER_CASE = "per_case.csv"
PER_CASE_LAST = "per_case_last.csv"
#: Column prefix of per_case.csv: 1 where the case's truth contains the class, else 0.
PRESENT = "present"
OVERLAYS = "overlays"
STAGES = "stages"
MODEL_ARTIFACT = "checkpoint/model.pt"
#: Version of the ``model.pt`` layout; bumped when its keys change.
MODEL_FORMAT = 2

Scores = dict[str, dict[str, dict[int, float]]]
"""case id -> metric name -> class id -> value (NaN: the class is absent from both)."""


# -- the local runs and cache folders ---------------------------------------------------------


def checkpoint_dir(run_id: str) -> Path:
    """Resume and best-model checkpoints of a run (removed when it finishes)."""
    return runs_dir() / "checkpoints" / run_id


def lock_path(config_hash: str) -> Path:
    """The lock a training run of this config holds."""
    return runs_dir() / "locks" / f"{config_hash}.lock"


@contextmanager
def config_lock(config_hash: str) -> Iterator[None]:
    """Held while a run of this config trains, so two processes never share its checkpoints.

    The operating system drops the lock when its process dies, so a killed run is resumable
    at once; a live one makes a second start of the same config fail instead of corrupting it.
    """
    path = lock_path(config_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"a run with this config (hash {config_hash}) is in progress in another "
            "process on this runs folder; wait for it to finish, or change the "
            "seed or a setting"
        ) from None
    try:
        yield
    finally:
        lock.release()


def stage_cache_path(method: str, stage: str, digest: str) -> Path:
    """Where a cached stage state is kept (shared by every run with the same key)."""
    return cache_dir() / STAGES / f"{method}-{stage}-{digest}.pt"


def stage_artifact_prefix(method: str, stage: str) -> str:
    """File-name prefix of a cached stage logged as a run artifact (``stages/...``)."""
    return f"{method}-{stage}-"


# -- tracked artifacts ------------------------------------------------------------------------


def log_start(tracker: Tracker, config: dict[str, Any], split: Split, class_map: ClassMap) -> None:
    """The run's record: resolved config, split and class map."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {
            CONFIG: yaml.safe_dump(config, sort_keys=False),
            SPLIT: split.to_json(),
            CLASS_MAP: json.dumps(class_map.to_dict(), indent=2),
        }
        for name, text in files.items():
            tracker.log_artifact(write_atomic(folder / name, text))


def log_results(
    tracker: Tracker,
    method: Method,
    best: Evaluation,
    last: Evaluation,
    cache: SliceCache,
    class_map: ClassMap,
    config: dict[str, Any],
) -> None:
    """The test split's per-case scores of both checkpoints, overlays of the first cases and
    the final model (``method`` holds the best-validation state)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tracker.log_artifact(write_per_case_csv(folder / PER_CASE, best, class_map))
        tracker.log_artifact(write_per_case_csv(folder / PER_CASE_LAST, last, class_map))
        count = int(config["eval"]["overlays"])
        for png in save_overlays(folder / OVERLAYS, cache, best.preds, class_map, count):
            tracker.log_artifact(png, OVERLAYS)
        model = write_model(folder / Path(MODEL_ARTIFACT).name, method, config, class_map)
        tracker.log_artifact(model, str(Path(MODEL_ARTIFACT).parent))


def data_inputs(req: RunRequest, split: Split) -> list[DataInput]:
    """The run's data as MLflow dataset inputs, one per part of the split: the name says the
    dataset and profile, the digest fingerprints that part's cases (train: which of them are
    labeled too), the profile counts them. MLflow keeps one dataset per name and digest in an
    experiment, shared by every run that logs it, so nothing run-specific goes in the profile."""
    name = f"{req.dataset} ({req.profile})"
    source = str(Path(req.data_dir).resolve()) if req.data_dir else req.dataset
    parts = {
        "train": {"cases": len(split.train), "labeled": len(split.labeled)},
        "val": {"cases": len(split.val)},
        "test": {"cases": len(split.test)},
    }
    ids = {
        "train": [*split.labeled, "--unlabeled--", *split.unlabeled],
        "val": split.val,
        "test": split.test,
    }
    return [
        DataInput(
            name=name,
            digest=hashlib.sha256("\n".join(ids[part]).encode()).hexdigest()[:16],
            source=source,
            context=part,
            profile=counts,
        )
        for part, counts in parts.items()
    ]


# -- the final model --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFile:
    """What ``model.pt`` holds: the method's state, the resolved config and the class map."""

    state: dict[str, Any]
    config: dict[str, Any]
    class_map: ClassMap


def write_model(path: Path, method: Method, config: dict[str, Any], class_map: ClassMap) -> Path:
    """Tensors and plain containers only, so reading it can never run code."""
    payload = {
        "format": MODEL_FORMAT,
        "method": method.state_dict(),
        "config": config,
        "class_map": class_map.to_dict(),
    }
    return write_atomic(path, lambda f: torch.save(payload, f))


def read_model(path: Path, shown_as: str | None = None) -> ModelFile:
    """Load ``model.pt`` safely; ``shown_as`` names it in errors (e.g. the run's artifact)."""
    data = checkpoint.load_file(path, shown_as=shown_as)
    name = shown_as or str(path)
    if data.get("format") != MODEL_FORMAT or not {"method", "config", "class_map"} <= set(data):
        raise SpinebenchError(
            f"{name} is a model file of format {data.get('format', 1)}, this spinebench reads "
            f"format {MODEL_FORMAT}; rerun the training run with this version "
            "(`spinebench reproduce RUN_ID`)"
        )
    return ModelFile(data["method"], data["config"], ClassMap.from_dict(data["class_map"]))


# -- per-case scores and overlays -------------------------------------------------------------


def write_per_case_csv(path: Path, result: Evaluation, class_map: ClassMap) -> Path:
    """One row per case: the foreground mean of each metric, each class's value, then whether
    the case's truth contains each class (``present/<class>``, 1 or 0)."""
    per_case = result.scores
    metric_names = list(next(iter(per_case.values())).keys())
    classes = class_map.classes
    header = ["case", *metric_names]
    header += [f"{m}/{c.name}" for m in metric_names for c in classes]
    header += [f"{PRESENT}/{c.name}" for c in classes]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    for cid, scores in per_case.items():
        row: list[object] = [cid]
        row += [nanmean(scores[m].values()) for m in metric_names]
        row += [scores[m][c.id] for m in metric_names for c in classes]
        row += [int(result.present[cid][c.id]) for c in classes]
        writer.writerow(row)
    return write_atomic(path, text.getvalue())


def save_overlays(
    folder: Path,
    cache: SliceCache,
    preds: dict[str, np.ndarray],
    class_map: ClassMap,
    count: int,
) -> list[Path]:
    """Middle-slice PNGs (image, truth, prediction) of the first ``count`` cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20", class_map.num_classes)
    written = []
    for cid in list(preds)[:count]:
        info = cache.cases[cid]
        mid = (info.stop - info.start) // 2
        truth = np.asarray(cache.native_label(cid)[mid])
        pred = preds[cid][mid]
        image = np.array(cache.images[info.start + mid])
        image = F.interpolate(
            torch.from_numpy(image)[None, None],
            size=truth.shape,
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
        for ax, title, lab in zip(
            axes, ("image", "ground truth", "prediction"), (None, truth, pred), strict=True
        ):
            ax.imshow(image, cmap="gray")
            if lab is not None:
                ax.imshow(
                    np.ma.masked_equal(lab, 0),
                    cmap=cmap,
                    vmin=0,
                    vmax=class_map.num_classes - 1,
                    alpha=0.5,
                    interpolation="nearest",
                )
            ax.set_title(f"{cid}: {title}", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        plt.close(fig)
        written.append(write_atomic(folder / f"overlay_{cid}.png", png.getvalue()))
    return written


# -- label maps written by predict ------------------------------------------------------------


def write_labels(labels: np.ndarray, like: nib.Nifti1Image, target: Path) -> Path:
    """``labels`` as uint8 NIfTI with ``like``'s affine and header, written atomically."""
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    out = type(like)(labels.astype(np.uint8), like.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    payload = out.to_bytes()
    if target.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6)
    return write_atomic(target, payload)
