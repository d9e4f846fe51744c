"""What a user sees of a sweep in MLflow itself: a real two-cell sweep (interrupted in its first
cell, then run again) into a fresh store, checked through MLflow's client API, through the
leaderboard of that store, and as ``mlflow server`` shows it in headless Chromium.

MLflow 3.17's UI chooses between its GenAI pages and its runs table with a global "GenAI / Model
training" switch (remembered by the browser; ``?workflowType=machine_learning`` in the URL sets
it), not with the experiment's ``mlflow.experimentKind`` tag; the page test sets it in the URL,
as the README tells users to."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser import page_text, require_chromium
from cli_runs import TINY, cell_runs, cli, cli_env, interrupt, mlflow_server
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

EXPERIMENT = "spinebench/synthetic"
SWEEP = ["sweep", "--methods", "supervised", "--labeled", "0.25,0.5", "--seeds", "0", *TINY]
CELLS = {"supervised-l0.25-s0", "supervised-l0.5-s0"}
#: Text of MLflow's GenAI overview, which an experiment of trained models must not open on.
GENAI_OVERVIEW = ("Token Usage", "Detect Issues")


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str
    interrupted: subprocess.CompletedProcess
    #: The cell runs the interrupt killed, as they were right after it.
    killed: list[Run]
    restarted: subprocess.CompletedProcess
    leaderboard: subprocess.CompletedProcess

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def runs(self) -> list[Run]:
        """Every run of the experiment, a sweep's parent included."""
        client = self.client
        return client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Store:
    """The sweep, SIGINT (Ctrl-C) once its first cell has logged a metric, the same command
    again, then the leaderboard of the store."""
    root = tmp_path_factory.mktemp("ui")
    env = cli_env(root, shared_cache)
    interrupted = interrupt(
        SWEEP, root, env, lambda cells: any(s == "RUNNING" and n for s, n in cells)
    )
    uri = f"sqlite:///{root / 'runs' / 'mlflow.db'}"
    killed = cell_runs(MlflowClient(uri), EXPERIMENT, "attributes.status = 'KILLED'")
    restarted = cli(SWEEP, root, env)
    board = cli(
        ["leaderboard", "--check", "--seeds", "0", "--min-seeds", "1", "--out", "lb"], root, env
    )
    return Store(root, uri, interrupted, killed, restarted, board)


def _parent(runs: list[Run]) -> Run:
    (parent,) = [r for r in runs if "spinebench.method" not in r.data.tags]
    return parent


def _cells(runs: list[Run]) -> dict[str, Run]:
    return {r.info.run_name: r for r in runs if "spinebench.method" in r.data.tags}


def test_the_sweep_ran_and_its_interrupted_cell_continued(store: Store):
    assert store.interrupted.returncode == 130, store.interrupted.stderr[-2000:]
    assert store.restarted.returncode == 0, store.restarted.stderr[-2000:]
    (killed,) = store.killed
    runs = store.runs()
    parent, cells = _parent(runs), _cells(runs)
    assert set(cells) == CELLS and len(runs) == 3  # no second run for the killed cell
    again = cells[killed.info.run_name]
    assert again.info.run_id == killed.info.run_id
    assert again.info.status == "FINISHED" and again.data.tags["spinebench.resumed"] == "true"
    assert killed.data.tags["mlflow.parentRunId"] == parent.info.run_id  # the same parent
    assert again.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_experiment_is_of_trained_models_with_a_description(store: Store):
    tags = store.client.get_experiment_by_name(EXPERIMENT).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert "`test/dice`" in tags["mlflow.note.content"]


def test_the_sweep_is_one_parent_run_with_the_cells_as_children(store: Store):
    runs = store.runs()
    parent, cells = _parent(runs), _cells(runs)
    assert parent.info.run_name.startswith("sweep-") and parent.info.status == "FINISHED"
    assert "spinebench.sweep" in parent.data.tags
    note = parent.data.tags["mlflow.note.content"]
    assert "2 cells" in note and "spinebench sweep --methods supervised" in note
    for cell in cells.values():
        assert cell.data.tags["mlflow.parentRunId"] == parent.info.run_id
        tags = cell.data.tags
        assert f"- supervised l={float(tags['spinebench.labeled']):g} s=0" in note


def test_each_cell_logs_its_split_as_dataset_inputs(store: Store):
    digests: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for cell in _cells(store.runs()).values():
        inputs = {
            tag.value: i
            for i in cell.inputs.dataset_inputs
            for tag in i.tags
            if tag.key == "mlflow.data.context"
        }
        assert sorted(inputs) == ["test", "train", "val"]
        assert len(cell.inputs.dataset_inputs) == 3  # logged once, though the cell resumed
        assert {i.dataset.name for i in inputs.values()} == {"synthetic (quick)"}
        sizes = re.search(
            r"Split \(cases\): (\d+) labeled, (\d+) unlabeled, (\d+) val, (\d+) test\.",
            cell.data.tags["mlflow.note.content"],
        )
        assert sizes, cell.data.tags["mlflow.note.content"]
        labeled, unlabeled, val, test = map(int, sizes.groups())
        profiles = {part: json.loads(i.dataset.profile) for part, i in inputs.items()}
        assert profiles == {
            "train": {"cases": labeled + unlabeled, "labeled": labeled},
            "val": {"cases": val},
            "test": {"cases": test},
        }
        for part, i in inputs.items():
            digests[part].add(i.dataset.digest)
    # MLflow keeps one dataset per digest: the cells share their val and test cases, not the
    # labeled ones
    assert {part: len(found) for part, found in digests.items()} == {
        "train": 2,
        "val": 1,
        "test": 1,
    }


def test_every_run_has_a_description_and_no_empty_dict_parameter(store: Store):
    for run in store.runs():
        assert run.data.tags.get("mlflow.note.content", "").strip(), run.info.run_name
        assert "{}" not in run.data.params.values(), run.info.run_name
    for name, cell in _cells(store.runs()).items():
        params = cell.data.params
        assert (params["run.method"], params["run.seed"]) == ("supervised", "0")
        assert f"labeled {params['run.labeled']}, seed 0" in cell.data.tags["mlflow.note.content"]
        assert "| best-validation checkpoint |" in cell.data.tags["mlflow.note.content"], name


def test_the_leaderboard_has_one_row_per_cell_and_never_the_parent(store: Store):
    assert store.leaderboard.returncode == 0, store.leaderboard.stderr[-2000:]
    with (store.root / "lb" / "leaderboard.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    cells = _cells(store.runs())
    expected = {
        (c.info.run_id, float(c.data.tags["spinebench.labeled"]), c.data.metrics["test/dice"])
        for c in cells.values()
    }
    got = {(r["run_ids"], float(r["labeled"]), float(r["dice_mean"])) for r in rows}
    assert [(r["table"], r["row"], r["n_seeds"]) for r in rows] == [("main", "supervised", "1")] * 2
    assert got == expected


def test_mlflow_ui_shows_the_runs_under_their_sweep_and_a_run_description(
    store: Store, tmp_path: Path
):
    require_chromium()
    runs = store.runs()
    parent, cells = _parent(runs), _cells(runs)
    cell = cells["supervised-l0.25-s0"]
    exp_id = cell.info.experiment_id
    with mlflow_server(store.uri, tmp_path) as url:
        experiment = page_text(f"{url}/#/experiments/{exp_id}?workflowType=machine_learning")
        by_name = page_text(
            f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
            "&orderByKey=attributes.run_name&orderByAsc=true"
        )
        run_page = page_text(f"{url}/#/experiments/{exp_id}/runs/{cell.info.run_id}")
    # the runs table, with the experiment's description above it, not the GenAI overview
    assert "spinebench runs of spinebench/synthetic" in experiment, experiment[:3000]
    assert not [text for text in GENAI_OVERVIEW if text in experiment]
    # by date (the default order) the cells are folded under their sweep's row
    assert parent.info.run_name in experiment
    assert not [name for name in CELLS if name in experiment]
    assert "3 matching runs" in experiment
    # sorted by name every run has its row, the cells with their data in the Dataset column
    assert all(name in by_name for name in CELLS), by_name[:3000]
    for run in cells.values():
        (train,) = [
            i.dataset
            for i in run.inputs.dataset_inputs
            if {(t.key, t.value) for t in i.tags} == {("mlflow.data.context", "train")}
        ]
        assert f"synthetic (quick) ({train.digest}) train" in by_name
    # a cell's page: its description (the results table) and its sweep
    assert "supervised-l0.25-s0" in run_page, run_page[:3000]
    assert "labeled 0.25, seed 0, synthetic (quick profile)" in run_page
    assert "best-validation checkpoint" in run_page
    assert f"Parent run {parent.info.run_name}" in run_page
