"""Segment NIfTI volumes with the final model of a tracked run.

The run's ``checkpoint/model.pt`` (method state, resolved config, class map; its format is
:mod:`spinebench.engine.artifacts`') is fetched from the tracking store and the method is
rebuilt through the plugin registry. Each volume then goes through the
exact preprocessing of the slice cache (reorientation, normalisation, resizing) and the
prediction code of evaluation, so ``predict`` on a test case reproduces what the run scored.
Label maps are written with the input's affine and header. Every input is checked before the
model is loaded, and the label maps appear together when all are done: a failure leaves the
output folder as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spinebench import plugins
from spinebench.data.classmap import ClassMap
from spinebench.data.dataset import (
    checked_image,
    from_slice_space,
    kind_of,
    read_nifti,
    slice_transform,
    to_slice_space,
    voxel_data,
)
from spinebench.data.slices import normalise, resize_slices
from spinebench.engine.artifacts import MODEL_ARTIFACT, ModelFile, read_model, write_labels
from spinebench.engine.evaluate import predict_slices
from spinebench.engine.runtime import Runtime, setup
from spinebench.engine.tracking import MlflowTracker, resolve_uri
from spinebench.errors import SpinebenchError
from spinebench.method import Method, MethodContext
from spinebench.paths import check_writable

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
    if os.path.lexists(path) and not path.is_dir():
        what = kind_of(path) if path.exists() else "a broken symbolic link"
        raise SpinebenchError(f"--input {path} is {what}; pass a NIfTI file or a folder")
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
    if out in sources:
        raise SpinebenchError(
            f"--output {output_dir} is the input file; pass a folder for the label maps"
        )
    check_writable(output_dir, "--output", "pass a folder for the label maps")
    if any(p.parent == out for p in sources):
        raise SpinebenchError(
            f"--output {output_dir} is where the inputs are; choose another "
            "folder so no input is overwritten"
        )
    targets = [out / p.name for p in inputs]
    if len(set(targets)) != len(targets):
        raise SpinebenchError("two inputs share a file name; segment them into separate folders")
    return targets


def check_input(path: Path) -> tuple[int, ...]:
    """Everything about one input that could stop a prediction halfway: a readable, oriented,
    finite 3D volume (read in full, so a truncated file is found now); returns its shape."""
    img = read_nifti(path)
    image = checked_image(voxel_data(img, path), path)
    slice_transform(img.affine, path)
    return image.shape


@contextmanager
def staged_outputs(output_dir: Path) -> Iterator[Path]:
    """A hidden folder to write every label map into; when the block succeeds they move into
    ``output_dir`` (created then, if new) together, and on any failure they are removed, so
    ``output_dir`` holds all of this command's label maps or none of them."""
    out = output_dir.resolve()
    fresh = not out.exists()
    where = out.parent if fresh else out
    where.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=where, prefix=".spinebench-predict-", suffix=".tmp"))
    try:
        yield stage
        if fresh:
            os.replace(stage, out)
        else:
            for item in sorted(stage.iterdir()):
                os.replace(item, out / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@dataclass
class Predictor:
    """A rebuilt method with the preprocessing and runtime of the run that trained it."""

    method: Method
    class_map: ClassMap
    config: dict[str, Any]
    runtime: Runtime

    @classmethod
    def from_model(cls, model: ModelFile, device: str) -> Predictor:
        """Rebuild the method named in the saved config and load its weights."""
        config, class_map = model.config, model.class_map
        method_cls = plugins.lookup(plugins.methods(), config["run"]["method"], "method")
        runtime = setup(config["train"], device, int(config["run"]["seed"]))
        ctx = MethodContext(
            class_map=class_map,
            image_size=int(config["data"]["image_size"]),
            options=dict(config["method"]),
            config=config,
        )
        method = method_cls(ctx)
        method.load_state_dict(model.state)
        return cls(method.to(runtime.device).eval(), class_map, config, runtime)

    @classmethod
    def from_run(cls, run_id: str, tracking_uri: str | None, device: str) -> Predictor:
        uri = resolve_uri(tracking_uri)
        tracker = MlflowTracker(uri, None, create=False)
        run = tracker.get_run(run_id)
        if run is None:
            raise SpinebenchError(
                f"run {run_id!r} is not in the tracking store {uri}; check --run or --tracking-uri"
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = tracker.download(run_id, MODEL_ARTIFACT, Path(tmp))
            if path is None and run.status == "FINISHED":
                raise SpinebenchError(
                    f"run {run_id} finished but its {MODEL_ARTIFACT} artifact is missing "
                    f"(deleted from the store?); train it again with `spinebench reproduce "
                    f"{run_id}` and predict with the new run"
                )
            if path is None:
                raise SpinebenchError(
                    f"run {run_id} is {run.status}: only a finished run has {MODEL_ARTIFACT}; "
                    "rerun its command to finish it, or pass a finished run"
                )
            # a damaged or planted file is a one-line error naming the run's artifact
            model = read_model(path, shown_as=f"artifact {MODEL_ARTIFACT} of run {run_id}")
        return cls.from_model(model, device)

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
