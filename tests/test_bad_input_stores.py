"""Only our stores (issue 27): a tracking store spinebench did not make (another application's
sqlite database, an MLflow store of another schema, an empty file) is byte-identical after
every command, read-only commands create none, and a store's odd runs give one line each."""

from __future__ import annotations

import re
import sqlite3
import sys
import warnings
from contextlib import closing
from pathlib import Path

import pytest
from conftest import TINY
from mlflow.tracking import MlflowClient
from test_bad_input import BASE, FAST, _foreign_sqlite, _tree

from spinebench.cli import main
from spinebench.engine.tracking import MlflowTracker


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


def _tiny_nifti(path: Path) -> Path:
    import nibabel as nib
    import numpy as np

    affine = np.diag([0.8, 0.8, 4.0, 1.0])
    img = nib.Nifti1Image(np.random.default_rng(0).normal(size=(32, 32, 4)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


def _old_schema_store(path: Path) -> None:
    """An MLflow store with one spinebench-tagged run, left at an older schema revision."""
    client = MlflowClient(f"sqlite:///{path}")
    exp = client.create_experiment("spinebench/synthetic")
    run = client.create_run(exp, tags={"spinebench.method": "supervised"})
    client.set_terminated(run.info.run_id, "FINISHED")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("update alembic_version set version_num = '0584bdc529eb'")
        conn.commit()


STORE_COMMANDS: dict[str, list[str]] = {
    "run": [*BASE, "--tracking-uri", "{uri}"],
    "sweep": ["sweep", "--methods", "supervised", "--labeled", "0.5", *TINY, *FAST,
              "--tracking-uri", "{uri}"],
    "leaderboard": ["leaderboard", "--tracking-uri", "{uri}", "--out", "{tmp}/board"],
    "predict": ["predict", "--run", "0" * 32, "--input", "{tmp}/scan.nii.gz",
                "--output", "{tmp}/labels", "--tracking-uri", "{uri}"],
    "reproduce": ["reproduce", "0" * 32, "--tracking-uri", "{uri}"],
}  # fmt: skip
STORES = {
    "another application's database": "is another application's database (tables users)",
    "an MLflow store of an older schema": "has MLflow schema 0584bdc529eb, and MLflow",
    "an empty file": "no tracking store at",
}


@pytest.mark.parametrize("store", list(STORES))
@pytest.mark.parametrize("command", list(STORE_COMMANDS))
def test_a_store_spinebench_did_not_make_is_byte_identical_after_every_command(
    command: str, store: str, inputs: Path, isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    db = inputs / "other-app.db"
    if store == "another application's database":
        _foreign_sqlite(inputs, monkeypatch)
    elif store == "an MLflow store of an older schema":
        _old_schema_store(db)
    else:
        db.write_bytes(b"")
    if store == "an empty file" and command in ("run", "sweep"):
        pytest.skip("an empty file is a new store to a training command")
    _tiny_nifti(inputs / "scan.nii.gz")
    before, tree = db.read_bytes(), _tree(isolated_env.parent)
    capsys.readouterr()  # what MLflow logged while the test made the store is not the command's
    fill = {"uri": f"sqlite:///{db}", "tmp": inputs}
    argv = [a.format(**fill) for a in STORE_COMMANDS[command]]
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    monkeypatch.setattr(sys, "argv", ["spinebench", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and STORES[store] in err, err
    assert db.read_bytes() == before
    assert _tree(isolated_env.parent) == tree  # no lock beside it, no runs or output folder


def test_list_touches_no_store(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _tree(isolated_env.parent)
    for what in ("methods", "datasets", "metrics", "plugins"):
        monkeypatch.setattr(sys, "argv", ["spinebench", "list", what])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 0, capsys.readouterr().err
    assert _tree(isolated_env.parent) == tree


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("FINISHED", "finished but its checkpoint/model.pt artifact is missing (deleted from "
                     "the store?); train it again with `spinebench reproduce"),
        ("KILLED", "is KILLED: only a finished run has checkpoint/model.pt; rerun its command"),
    ],
)  # fmt: skip
def test_predict_says_why_a_run_has_no_model(
    status: str, message: str, inputs: Path, isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    uri = f"sqlite:///{isolated_env / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "spinebench/synthetic")
    run_id = tracker.start("supervised-l0.5-s0", {"spinebench.method": "supervised"}, {})
    tracker.end(status)
    scan = _tiny_nifti(inputs / "scan.nii.gz")
    monkeypatch.setattr(sys, "argv", ["spinebench", "predict", "--run", run_id, "--input",
                                      str(scan), "--output", str(inputs / "labels")])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.strip().splitlines() == [
        f"error: run {run_id} {message}" + err.split(message, 1)[-1].rstrip()
    ], err
    assert not (inputs / "labels").exists()


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ({"spinebench.method": "supervised", "spinebench.dataset": "synthetic",
          "spinebench.seed": "0"}, "no tag spinebench.labeled"),
        ({"spinebench.method": "supervised", "spinebench.dataset": "synthetic",
          "spinebench.labeled": "half", "spinebench.seed": "0"},
         "spinebench.labeled is 'half', not a number"),
    ],
)  # fmt: skip
def test_a_run_whose_tags_name_no_cell_is_left_out_of_the_leaderboard_in_one_line(
    tags: dict[str, str], problem: str, inputs: Path, isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    uri = f"sqlite:///{isolated_env / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "spinebench/synthetic")
    run_id = tracker.start("hand-made", tags, {})
    tracker.end("FINISHED")
    monkeypatch.setattr(sys, "argv", ["spinebench", "leaderboard", "--tracking-uri", uri,
                                      "--out", str(inputs / "board")])  # fmt: skip
    left_out = (
        f"1 finished run(s) left out of the leaderboard, their tags do not say which cell they "
        f"belong to: {run_id} ({problem}); set the tags or delete the runs"
    )
    # In a shell the warning is one `warning:` line; under pytest it is caught as a warning.
    with (
        pytest.warns(UserWarning, match=re.escape(left_out)),
        pytest.raises(SystemExit) as exit_info,
    ):
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.strip().splitlines() == [
        "error: no FINISHED spinebench runs found; run `spinebench sweep` first"
        + err.split("run `spinebench sweep` first", 1)[-1].rstrip(),
    ], err
    assert not (inputs / "board").exists()
