"""Both checkpoints and class coverage on the page: the last checkpoint's Dice beside the
selected one's ("–" for runs that predate it, never a guess), `--checkpoint best|last|both`, and
per class the number of test cases that contain it ("unknown" for runs that predate it)."""

from __future__ import annotations

import html
import statistics
from pathlib import Path

import pytest
from leaderboard_data import seeds

from spinebench.leaderboard import build_boards, write
from spinebench.leaderboard.records import record_of
from spinebench.leaderboard.tables import AVERAGING, MISSING


def _records(**cps4):
    docs = [*seeds("supervised", 0.1), *seeds("unimatch", 0.1), *seeds("cps4", 0.1, **cps4)]
    return [record_of(d) for d in docs]


def _md_line(md: str, label: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_a_run_whose_last_checkpoint_differs_from_its_best(tmp_path: Path):
    # cps4's last checkpoint beats everyone's; its selected one does not
    records = _records(level=0.56, last_shift=0.12)
    (board,) = build_boards(records)
    cps4, unimatch = board.default_row("cps4"), board.default_row("unimatch")
    cell = board.cell(cps4, 0.1)
    assert cell.stat("dice", "last").mean == pytest.approx(
        statistics.mean(r.metrics["test_last/dice"] for r in cell.runs)
    )
    assert cell.stat("dice", "last").mean > cell.stat("dice").mean
    assert board.is_best(unimatch, 0.1, "dice") and not board.is_best(cps4, 0.1, "dice")
    assert board.is_best(cps4, 0.1, "dice", "last")
    write([board], tmp_path / "both", ["md"])
    md = (tmp_path / "both" / "leaderboard.md").read_text()
    _, dice, last, *_ = _md_line(md, "cps4")
    assert not dice.startswith("**") and last.startswith("**")
    assert last.strip("*").startswith(f"{cell.stat('dice', 'last').mean:.4f} ±")

    (ranked_last,) = build_boards(records, checkpoint="last")
    assert ranked_last.columns()[0] == ("dice", "last")
    assert ranked_last.is_best(ranked_last.default_row("cps4"), 0.1, "dice")
    write([ranked_last], tmp_path / "last", ["md"])
    md = (tmp_path / "last" / "leaderboard.md").read_text()
    assert "| method | last Dice | last HD95 (mm) | last ASSD (mm) | n |" in md

    (best_only,) = build_boards(records, checkpoint="best")
    write([best_only], tmp_path / "best", ["md"])
    md = (tmp_path / "best" / "leaderboard.md").read_text()
    assert "| method | Dice | HD95 (mm) | ASSD (mm) | n |" in md and "last Dice" not in md


def test_runs_that_predate_the_last_checkpoint_show_a_dash(tmp_path: Path):
    old = [record_of(d) for d in seeds("mean_teacher", 0.1, last=False)]
    mixed = [record_of(d) for d in seeds("cps4", 0.1)[:2] + seeds("cps4", 0.1, last=False)[2:]]
    supervised = [record_of(d) for d in seeds("supervised", 0.1)]
    (board,) = build_boards([*supervised, *old, *mixed])
    write([board], tmp_path, ["md"])
    md = (tmp_path / "leaderboard.md").read_text()
    assert _md_line(md, "mean_teacher")[2] == MISSING
    assert _md_line(md, "cps4")[2].endswith("(n=2)")  # the mean of the two runs that have it
    assert board.cell(board.default_row("cps4"), 0.1).stat("dice", "last").n == 2
    # ranked on the last checkpoint, runs without one count for nothing
    (ranked_last,) = build_boards([*supervised, *old, *mixed], checkpoint="last")
    cell = ranked_last.cell(ranked_last.default_row("mean_teacher"), 0.1)
    assert cell.n("last") == 0 and cell.stat("dice", "last").n == 0


def test_per_class_table_says_how_many_test_cases_hold_each_class(tmp_path: Path):
    (board,) = build_boards(_records())
    write([board], tmp_path / "new", ["md", "html", "csv"])
    md = (tmp_path / "new" / "leaderboard.md").read_text()
    page = (tmp_path / "new" / "leaderboard.html").read_text()
    assert AVERAGING in md and html.escape(AVERAGING) in page
    assert _md_line(md, "T9")[1] == "4 of 12" and _md_line(md, "L3")[1] == "12 of 12"
    per_class = (tmp_path / "new" / "leaderboard_per_class.csv").read_text()
    assert ",T9,4 of 12," in per_class
    old = [record_of(d) for m in ("supervised", "cps4") for d in seeds(m, 0.1, coverage=False)]
    (board,) = build_boards(old)
    write([board], tmp_path / "old", ["md"])
    md = (tmp_path / "old" / "leaderboard.md").read_text()
    assert _md_line(md, "T9")[1] == "unknown"
