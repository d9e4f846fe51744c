"""Sweep grids and the command lines of ``sweep`` and ``leaderboard``: user mistakes are one
line and exit 2, found before any cell is prepared or any store is read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spinebench.cli import main
from spinebench.errors import SpinebenchError
from spinebench.sweep import make_grid


def test_grid_file_lists_variants_and_command_line_replaces_lists(tmp_path: Path):
    grid_file = tmp_path / "grid.yaml"
    text = (
        "methods: [supervised, cps4]\nlabeled: [0.05, 0.1]\nseeds: [0, 1]\n"
        "set: [train.iterations=10]\n"
        "variants:\n  - {name: no_token, methods: [cps4], set: [cps4.token_loss=false]}\n"
    )
    grid_file.write_text(text)
    grid = make_grid(grid_file)
    assert grid.overrides == ("train.iterations=10",)
    cells = grid.cells()
    assert len(cells) == 2 * 2 * (2 + 1)
    assert [c.name for c in cells[:3]] == [
        "supervised l=0.05 s=0",
        "cps4 l=0.05 s=0",
        "cps4[no_token] l=0.05 s=0",
    ]
    grid_file.write_text("methods: a\nlabeled: 0.1\nset: model.channels=[8,16,32,64,128]\n")
    assert make_grid(grid_file).overrides == ("model.channels=[8,16,32,64,128]",)
    grid_file.write_text(text)
    narrowed = make_grid(grid_file, methods="cps4", seeds="3")
    assert {c.seed for c in narrowed.cells()} == {3} and len(narrowed.cells()) == 4


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("labeled: [0.1]\n", {}, "no methods to sweep"),
        ("methods: [a]\nlabeled: [0.1, 0.1]\n", {}, "lists a value twice"),
        ("methods: [a]\nlabeled: [many]\n", {}, "must hold floats"),
        ("methods: [a]\nlabeled: [0.1]\nseed: [1]\n", {}, "unknown grid keys ['seed']"),
        ("methods: [a]\nlabeled: [0.1]\nvariants: [{set: [x=1]}]\n", {}, "needs a name"),
        (
            "methods: [a]\nlabeled: [0.1]\nvariants: [{name: v, methods: [b]}]\n",
            {},
            "not in the sweep",
        ),
        ("methods: [a]\n", {"labeled": "0.1,"}, "empty entry"),
    ],
)
def test_bad_grids_are_one_line_errors(tmp_path: Path, text, kwargs, message):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(text)
    with pytest.raises(SpinebenchError, match=message.replace("[", r"\[")):
        make_grid(grid_file, **kwargs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "--labeled", "0.1"], "no methods to sweep"),
        (["sweep", "--methods", "supervised"], "no labeled to sweep"),
        (
            ["sweep", "--methods", "supervised", "--labeled", "0.1", "--executor", "dask"],
            "--executor 'dask' is unknown",
        ),
        (
            ["sweep", "--methods", "supervised", "--labeled", "0.1", "--workers", "0"],
            "must be at least 1",
        ),
        (
            ["sweep", "--methods", "supervised", "--labeled", "0.1", "--ray-address", "x:1"],
            "--ray-address needs --executor ray",
        ),
        (
            [
                "sweep",
                "--methods",
                "supervised",
                "--labeled",
                "0.1",
                "--executor",
                "ray",
                "--workers",
                "2",
            ],
            "--workers is for --executor local",
        ),
        (["sweep", "--methods", "supervisd", "--labeled", "0.1"], "unknown method"),
        (["sweep", "--methods", "supervised", "--labeled", "0,0.1"], "outside (0, 1]"),
        (
            ["sweep", "--methods", "supervised", "--labeled", "0.1", "--seeds", "a"],
            "must hold ints",
        ),
        (
            ["sweep", "--methods", "supervised", "--labeled", "0.1", "--grid", "/no/grid.yaml"],
            "does not exist",
        ),
        (["leaderboard", "--tracking-uri", "sqlite:////no/such/mlflow.db"], "no tracking store"),
        (["leaderboard", "--format", "pdf"], "--format pdf is unknown"),
        (["leaderboard", "--check", "--seeds", "0,x"], "comma-separated integers"),
    ],
)
def test_bad_command_lines_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args, message
):
    monkeypatch.setattr(sys, "argv", ["spinebench", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
