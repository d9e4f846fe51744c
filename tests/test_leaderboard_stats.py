"""Leaderboard statistics on hand-made run records (no training, no MLflow), recomputed here with
the standard library and scipy."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from leaderboard_data import CASES, record, seeds
from scipy.stats import wilcoxon

from spinebench.errors import SpinebenchError
from spinebench.leaderboard import build_boards, write
from spinebench.leaderboard.records import record_of
from spinebench.stats import holm, paired_wilcoxon


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, math.nan, 0.4]) == pytest.approx([0.8, math.nan, 0.8], nan_ok=True)
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_paired_wilcoxon_pairs_by_case_and_is_undefined_without_differences():
    a = {"x": 0.1, "y": 0.5, "z": 0.3, "w": 0.9, "only_a": 0.0}
    b = {"z": 0.35, "y": 0.4, "x": 0.2, "w": 0.7}
    expected = wilcoxon([0.9, 0.1, 0.5, 0.3], [0.7, 0.2, 0.4, 0.35]).pvalue
    assert paired_wilcoxon(a, b) == pytest.approx(expected)
    assert math.isnan(paired_wilcoxon(b, dict(b)))


def _grid(methods=("supervised", "mean_teacher", "unimatch", "cps4"), fractions=(0.1, 0.25)):
    return [record_of(d) for m in methods for f in fractions for d in seeds(m, f)]


def test_cell_statistics_and_holm_corrected_tests_match_scipy():
    records = [*_grid(), *(record_of(d) for d in seeds("supervised", 1.0, n=2))]
    (board,) = build_boards(records)
    rows = {r.method: r for r in board.main}
    cell = board.cell(rows["unimatch"], 0.25)
    dice = [r.metrics["test/dice"] for r in records if (r.method, r.labeled) == ("unimatch", 0.25)]
    assert cell.stat("dice").mean == pytest.approx(statistics.mean(dice))
    assert cell.stat("dice").std == pytest.approx(statistics.stdev(dice))
    assert cell.stat("dice").n == 3
    last = [r.metrics["test_last/dice"] for r in cell.runs]
    assert cell.stat("dice", "last").mean == pytest.approx(statistics.mean(last))
    assert board.upper is not None and len(board.upper.runs) == 2

    def pooled(method: str) -> list[float]:
        per_seed = [
            [r.per_case[c]["dice"] for c in CASES]
            for r in records
            if (r.method, r.labeled) == (method, 0.1)
        ]
        return [statistics.mean(values) for values in zip(*per_seed, strict=True)]

    others = ["mean_teacher", "unimatch", "cps4"]
    raw = [wilcoxon(pooled(m), pooled("supervised")).pvalue for m in others]
    ordered = sorted(raw)  # Holm by hand: k-th smallest times (m - k), running maximum
    adjusted = {
        p: min(1, max((3 - k) * q for k, q in enumerate(ordered[: ordered.index(p) + 1])))
        for p in raw
    }
    for method, p in zip(others, raw, strict=True):
        assert board.cell(rows[method], 0.1).p_supervised == pytest.approx(adjusted[p])
    assert math.isnan(board.cell(rows["supervised"], 0.1).p_supervised)
    l45 = board.cell(rows["cps4"], 0.1).class_stat("L4/L5")
    expected = [
        statistics.mean(v for c in CASES if not math.isnan(v := r.per_case[c]["dice/L4/L5"]))
        for r in records
        if (r.method, r.labeled) == ("cps4", 0.1)
    ]
    assert l45.mean == pytest.approx(statistics.mean(expected))
    # the class mean is the logged metric's: the mean over the cases where it is scored
    assert l45.mean == pytest.approx(
        statistics.mean(r.metrics["test/dice/L4/L5"] for r in board.cell(rows["cps4"], 0.1).runs)
    )


def test_a_rerun_seed_counts_once():
    records = _grid(methods=("supervised", "cps4"), fractions=(0.1,))
    rerun = replace(record("cps4", 0.1, 0, start=5), run_id="rerun")
    (board,) = build_boards([*records, rerun])
    cps4 = board.default_row("cps4")
    assert board.cell(cps4, 0.1).runs[0].run_id == "rerun"
    assert board.cell(cps4, 0.1).seeds == [0, 1, 2]


def test_write_refuses_what_it_cannot_show(tmp_path: Path):
    boards = build_boards(_grid(methods=("supervised", "cps4")))
    with pytest.raises(SpinebenchError, match="is no fraction of a main board"):
        write(boards, tmp_path, class_fraction=0.5)
    with pytest.raises(SpinebenchError, match="no FINISHED spinebench runs"):
        write([], tmp_path)
