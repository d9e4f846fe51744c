"""``spinebench predict``: a tracked run's model segments NIfTI files exactly as evaluation did,
writes them on the input's grid and header, and never overwrites an input."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from fake_layouts import write_layout
from mlflow.tracking import MlflowClient

from spinebench import plugins
from spinebench.engine.artifacts import write_model
from spinebench.engine.prepare import prepare
from spinebench.engine.run import execute
from spinebench.engine.tracking import MlflowTracker
from spinebench.method import MethodContext
from spinebench.predict import Predictor
from spinebench.runinfo import RunRequest
from spinebench.stats import nanmean

TRAIN = [
    "data.image_size=32",
    "train.iterations=30",
    "train.optimizer=adamw",
    "train.lr=0.003",
    "train.val_every=10",
    "train.log_every=10",
    "train.checkpoint_every=30",
    "train.batch_size=4",
    "eval.overlays=0",
]


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    from spinebench.cli import main

    monkeypatch.setattr(sys, "argv", ["spinebench", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, dict]:
    """One supervised run on fake MRSpineSeg data stored left-posterior-superior."""
    root = tmp_path_factory.mktemp("predict")
    data, runs = root / "data", root / "runs"
    write_layout(data, "mrspineseg", cases=5, axcodes=("P", "S", "L"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPINEBENCH_RUNS", str(runs))
        mp.setenv("SPINEBENCH_CACHE", str(root / "cache"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = execute(
            RunRequest(
                method="supervised",
                labeled=1.0,
                dataset="mrspineseg",
                data_dir=data,
                overrides=TRAIN,
            )
        )
    client = MlflowClient(result.info.tracking_uri)
    table = Path(client.download_artifacts(result.info.run_id, "per_case.csv", str(root)))
    with table.open() as f:
        per_case = {row["case"]: row for row in csv.DictReader(f)}
    return data, runs, result.info.run_id, per_case


def test_predict_reproduces_the_evaluation_of_a_test_case(
    trained: tuple[Path, Path, str, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    data, runs, run_id, per_case = trained
    monkeypatch.setenv("SPINEBENCH_RUNS", str(runs))
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "predict",
        "--run",
        run_id,
        "--input",
        str(data / "MR"),
        "--output",
        str(out_dir),
    )
    assert code == 0, err
    inputs = sorted((data / "MR").glob("*.nii.gz"))
    assert sorted(p.name for p in out_dir.iterdir()) == [p.name for p in inputs]
    for src in inputs:
        assert f"{src.name} -> " in out and " s" in out  # one timed line per file
    (case_id, row), *_ = per_case.items()  # the run's test case(s)
    source = nib.load(data / "MR" / f"{case_id}.nii.gz")
    written = nib.load(out_dir / f"{case_id}.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.header.get_data_dtype() == np.uint8
    assert int(written.header["qform_code"]) == int(source.header["qform_code"])
    truth = np.asarray(nib.load(data / "Mask" / f"mask_{case_id.lower()}.nii.gz").dataobj)
    pred = np.asarray(written.dataobj)
    class_map = Predictor.from_run(run_id, None, "cpu").class_map
    dice = plugins.metrics()["dice"](pred, truth, class_map.ids, source.header.get_zooms())
    assert 0 < nanmean(list(dice.values())) == pytest.approx(float(row["dice"]), abs=1e-9)
    for cls in class_map.classes:
        expected = float(row[f"dice/{cls.name}"])
        assert (math.isnan(dice[cls.id]) and math.isnan(expected)) or (
            dice[cls.id] == pytest.approx(expected, abs=1e-9)
        ), cls.name


def test_every_method_is_rebuilt_from_its_run(
    tmp_path: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    data = tmp_path / "data"
    write_layout(data, "mrspineseg", cases=3, axcodes=("L", "A", "S"))
    uri = f"sqlite:///{isolated_env / 'mlflow.db'}"
    source = data / "MR" / "Case1.nii.gz"
    for name in sorted(plugins.methods()):
        prepared = prepare(
            RunRequest(
                method=name,
                labeled=1.0,
                dataset="mrspineseg",
                data_dir=data,
                overrides=["data.image_size=32"],
            )
        )
        ctx = MethodContext(
            prepared.class_map, 32, dict(prepared.config["method"]), prepared.config
        )
        method = prepared.method_cls(ctx)
        model = write_model(
            tmp_path / name / "model.pt", method, prepared.config, prepared.class_map
        )
        tracker = MlflowTracker(uri, "predict-methods")
        run_id = tracker.start(name, {}, {})
        tracker.log_artifact(model, "checkpoint")
        tracker.end("FINISHED")
        loaded = Predictor.from_run(run_id, uri, "cpu")
        assert type(loaded.method) is prepared.method_cls
        for key, value in method.state_dict().items():
            torch.testing.assert_close(loaded.method.state_dict()[key], value, rtol=0, atol=0)
        out_dir = tmp_path / name / "out"
        code, _, err = run_cli(
            monkeypatch,
            capsys,
            "predict",
            "--run",
            run_id,
            "--input",
            str(source),
            "--output",
            str(out_dir),
            "--tracking-uri",
            uri,
        )
        assert code == 0, f"{name}: {err}"
        written = nib.load(out_dir / source.name)
        assert written.shape == nib.load(source).shape
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, *prepared.class_map.ids}


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("same folder", "is where the inputs are"),
        ("file inside output", "is where the inputs are"),
        ("missing input", "does not exist"),
        ("not nifti", "is not a NIfTI file"),
        ("no store", "no tracking store at"),
        ("unknown run", "is not in the tracking store"),
        ("run without model", "is RUNNING: only a finished run has checkpoint/model.pt"),
    ],
)
def test_predict_refuses_bad_requests_and_writes_nothing(
    where: str,
    message: str,
    tmp_path: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    data = tmp_path / "data"
    write_layout(data, "mrspineseg", cases=3)
    before = {p: p.read_bytes() for p in (data / "MR").iterdir()}
    uri = f"sqlite:///{isolated_env / 'mlflow.db'}"
    run_id = "0" * 32  # a path problem is found before the tracking store is asked
    if where == "run without model":
        run_id = MlflowTracker(uri, "empty").start("unfinished", {}, {})
    elif where == "unknown run":
        MlflowTracker(uri, "empty")  # a store that exists, without that run
    source, output = data / "MR", tmp_path / "out"
    if where == "same folder":
        output = data / "MR"
    elif where == "file inside output":
        source, output = data / "MR" / "Case1.nii.gz", data / "MR"
    elif where == "missing input":
        source = tmp_path / "absent"
    elif where == "not nifti":
        source = tmp_path / "notes.txt"
        source.write_text("x")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "predict",
        "--run",
        run_id,
        "--input",
        str(source),
        "--output",
        str(output),
        "--tracking-uri",
        uri,
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    if where != "unknown run" and where != "run without model":
        assert not (isolated_env / "mlflow.db").exists()  # a refused command creates no store
    assert {p: p.read_bytes() for p in (data / "MR").iterdir()} == before
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
