"""Segment NIfTI volumes with the final model of a tracked run.

The run's ``checkpoint/model.pt`` (method state, resolved config, class map) is fetched from
MLflow and the method is rebuilt through the plugin registry. Each volume then goes through the
exact preprocessing of the slice cache (reorientation, normalisation, resizing) and the
prediction code of evaluation, so ``predict`` on a test case reproduces what the run scored.
Label maps are written with the input's affine and header, each file atomically.
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from spinebench import plugins
from spinebench.data.classmap import ClassMap
from spinebench.data.dataset import (
    checked_image,
    from_slice_space,
    read_nifti,
    to_slice_space,
    voxel_data,
)
from spinebench.data.slices import normalise, resize_slices
from spinebench.engine import checkpoint
from spinebench.engine.evaluate import predict_slices
from spinebench.engine.runtime import Runtime, setup
from spinebench.engine.tracking import resolve_uri
from spinebench.errors import SpinebenchError
from spinebench.method import Method, MethodContext

MODEL_ARTIFACT = "checkpoint/model.pt"
NIFTI_ENDINGS = (".nii.gz", ".nii")


def input_files(path: Path) -> list[Path]:
    """The NIfTI files to segment: ``path`` itself, or those directly inside the folder."""
    if path.is_file():
        if not path.name.endswith(NIFTI_ENDINGS):
            raise SpinebenchError(
                f"{path} is not a NIfTI file (.nii/.nii.gz); "
                "convert it or pass a folder of NIfTI files"
            )
        return [path]
    if not path.is_dir():
        raise SpinebenchError(f"--input {path} does not exist; pass a NIfTI file or a folder")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(NIFTI_ENDINGS))
    if not found:
        raise SpinebenchError(f"{path} holds no .nii/.nii.gz files; pass a folder of NIfTI files")
    return found


def output_paths(inputs: list[Path], output_dir: Path) -> list[Path]:
    """Where each label map goes (same file name); never onto an input."""
    out = output_dir.resolve()
    sources = {p.resolve() for p in inputs}
    if any(p.parent == out for p in sources):
        raise SpinebenchError(
            f"--output {output_dir} is where the inputs are; choose another "
            "folder so no input is overwritten"
        )
    targets = [out / p.name for p in inputs]
    if len(set(targets)) != len(targets):
        raise SpinebenchError("two inputs share a file name; segment them into separate folders")
    return targets


@dataclass
class Predictor:
    """A rebuilt method with the preprocessing and runtime of the run that trained it."""

    method: Method
    class_map: ClassMap
    config: dict[str, Any]
    runtime: Runtime

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str) -> Predictor:
        """Rebuild the method named in the saved config and load its weights."""
        config = state["config"]
        class_map = ClassMap.from_dict(state["class_map"])
        method_cls = plugins.lookup(plugins.methods(), config["run"]["method"], "method")
        runtime = setup(config["train"], device, int(config["run"]["seed"]))
        ctx = MethodContext(
            class_map=class_map,
            image_size=int(config["data"]["image_size"]),
            options=dict(config["method"]),
            config=config,
        )
        method = method_cls(ctx)
        method.load_state_dict(state["method"])
        return cls(method.to(runtime.device).eval(), class_map, config, runtime)

    @classmethod
    def from_run(cls, run_id: str, tracking_uri: str | None, device: str) -> Predictor:
        with tempfile.TemporaryDirectory() as tmp:
            path = download_model(run_id, resolve_uri(tracking_uri), Path(tmp))
            state = checkpoint.load_file(path)  # a damaged file is a one-line error
        return cls.from_state(state, device)

    def segment(self, image: np.ndarray, affine: np.ndarray, path: Path) -> np.ndarray:
        """Labels of a 3D image on its own voxel grid."""
        data = self.config["data"]
        image_s, _ = to_slice_space(image, affine, path)
        normalised = normalise(image_s, tuple(data["clip_percentiles"]))
        # resize_slices resizes a label alongside the image; there is none to predict from
        slices, _ = resize_slices(
            normalised, np.zeros(normalised.shape, np.uint8), int(data["image_size"])
        )
        labels = predict_slices(
            self.method,
            slices,
            image_s.shape[1:],
            self.runtime.device,
            int(self.config["eval"]["batch_size"]),
            self.runtime.autocast(),
        )
        return from_slice_space(labels, affine, path)

    def segment_file(self, source: Path, target: Path) -> tuple[int, ...]:
        """Segment one NIfTI file into ``target``; returns the volume's shape."""
        img = read_nifti(source)
        image = checked_image(voxel_data(img, source), source)
        labels = self.segment(image, img.affine, source)
        write_labels(labels, img, target)
        return image.shape


def download_model(run_id: str, uri: str, folder: Path) -> Path:
    """Fetch the run's final model artifact, or say why there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own output
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise SpinebenchError(
            f"run {run_id!r} is not in the tracking store {uri}; check --run or --tracking-uri"
        ) from None
    try:
        return Path(client.download_artifacts(run_id, MODEL_ARTIFACT, str(folder)))
    except (MlflowException, OSError):
        raise SpinebenchError(
            f"run {run_id} ({run.info.status}) has no {MODEL_ARTIFACT}; "
            "predict with a run that finished"
        ) from None


def write_labels(labels: np.ndarray, like: nib.Nifti1Image, target: Path) -> None:
    """Write ``labels`` with ``like``'s affine and header, atomically (temp file + rename)."""
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    out = type(like)(labels.astype(np.uint8), like.affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    payload = out.to_bytes()
    if target.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
