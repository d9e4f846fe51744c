"""Leaderboard statistics and checks on hand-made run records (no training, no MLflow)."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from scipy.stats import wilcoxon

from spinebench.errors import SpinebenchError
from spinebench.leaderboard import RunRecord, build_boards, check, write
from spinebench.stats import holm, paired_wilcoxon

CASES = [f"case{i}" for i in range(6)]
CLASSES = ("L5", "L4", "L4/L5")
# Per-case Dice of each method (before a small per-seed shift): distinct enough to rank.
LEVEL = {"supervised": 0.50, "mean_teacher": 0.58, "unimatch": 0.61, "cps4": 0.66}


def _record(
    method: str, labeled: float, seed: int, *, variant: str = "", lr: str = "0.01", start: int = 0
) -> RunRecord:
    per_case = {}
    for i, case in enumerate(CASES):
        spread = 0.01 * i * (1 + list(LEVEL).index(method))
        dice = LEVEL[method] + spread + 0.003 * seed + labeled / 10
        per_case[case] = {
            "dice": dice,
            "dice/L5": dice + 0.05,
            "dice/L4": dice - 0.05,
            "dice/L4/L5": math.nan if i == 0 else dice,
        }
    mean = statistics.mean(c["dice"] for c in per_case.values())
    return RunRecord(
        run_id=f"{method}-{variant}-{labeled}-{seed}-{start}",
        experiment="spinebench/synthetic",
        dataset="synthetic",
        profile="quick",
        method=method,
        variant=variant,
        labeled=labeled,
        seed=seed,
        start_time=start,
        params={
            "run.method": method,
            "run.seed": str(seed),
            "run.labeled": str(labeled),
            "train.lr": lr,
            "train.threads": str(seed),
        },
        metrics={"test/dice": mean, "test/hd95": 10 - mean, "test/assd": 3 - mean},
        per_case=per_case,
        classes=CLASSES,
    )


def _grid(
    methods=("supervised", "mean_teacher", "unimatch", "cps4"),
    fractions=(0.1, 0.25),
    seeds=(0, 1, 2),
) -> list[RunRecord]:
    return [_record(m, f, s) for m in methods for f in fractions for s in seeds]


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


def test_board_statistics_tests_and_reference_rows():
    records = [*_grid(), _record("supervised", 1.0, 0), _record("supervised", 1.0, 1)]
    (board,) = build_boards(records)
    assert board.fractions == [0.1, 0.25]  # 1.0 holds only supervised: a reference row
    assert [label for label in board.rows.values()] == [
        "supervised",
        "cps4",
        "mean_teacher",
        "unimatch",
    ]
    rows = {label: key for key, label in board.rows.items()}
    cell = board.cell(rows["unimatch"], 0.25)
    dice = [r.metrics["test/dice"] for r in records if (r.method, r.labeled) == ("unimatch", 0.25)]
    assert cell.stat("dice").mean == pytest.approx(statistics.mean(dice))
    assert cell.stat("dice").std == pytest.approx(statistics.stdev(dice))
    assert cell.stat("dice").n == 3
    assert board.is_best(rows["cps4"], 0.25, "dice")
    assert board.is_best(rows["cps4"], 0.25, "hd95")  # lower is better
    assert board.lower[0] == 0.1 and board.upper[0] == 1.0
    assert len(board.upper[1].runs) == 2

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
    assert math.isnan(board.cell(rows["cps4"], 0.1).p_best)
    assert not math.isnan(board.cell(rows["supervised"], 0.1).p_best)
    l45 = board.cell(rows["cps4"], 0.1).class_stat("L4/L5")
    expected = [
        statistics.mean(r.per_case[c]["dice/L4/L5"] for c in CASES[1:])
        for r in records
        if (r.method, r.labeled) == ("cps4", 0.1)
    ]
    assert l45.mean == pytest.approx(statistics.mean(expected))


def test_rerun_seed_counts_once_and_other_settings_are_reported_apart():
    records = _grid(methods=("supervised", "cps4"), fractions=(0.1,), seeds=(0, 1))
    rerun = replace(_record("cps4", 0.1, 0, start=5), run_id="rerun")
    other_lr = [_record("cps4", 0.1, s, lr="0.05") for s in (0, 1)]
    ablation = [_record("cps4", 0.1, s, variant="no_token") for s in (0, 1)]
    (board,) = build_boards([*records, rerun, *other_lr, *ablation])
    labels = sorted(board.rows.values())
    assert labels == [
        "cps4 (train.lr=0.01)",
        "cps4 (train.lr=0.05)",
        "cps4[no_token]",
        "supervised",
    ]
    main = next(k for k, v in board.rows.items() if v == "cps4 (train.lr=0.01)")
    assert [r.run_id for r in board.cell(main, 0.1).runs] == ["rerun", "cps4--0.1-1-0"]


def test_check_names_mixed_configs_and_missing_seeds():
    records = _grid(methods=("supervised", "cps4"), seeds=(0, 1))
    assert check(records) == []
    assert check(records, seeds=[0, 1]) == []
    mixed = [*records, _record("cps4", 0.25, 2, lr="0.05")]
    problems = check(mixed)
    assert any(
        "cps4 labeled 0.25: runs differ in config other than the seed (train.lr)" in p
        for p in problems
    )
    assert any("supervised labeled 0.1: 2 of 3 seeds (missing 2)" in p for p in problems)
    missing = [r for r in records if not (r.method == "cps4" and r.labeled == 0.1)]
    assert any("cps4 labeled 0.1: 0 of 2 seeds" in p for p in check(missing))
    # train.threads is unhashed: seeds that differ only there are consistent
    assert check([replace(r, params={**r.params, "train.threads": "7"}) for r in records]) == []


def test_written_files_mark_best_and_show_reference_rows(tmp_path: Path):
    records = [
        *_grid(methods=("supervised", "cps4"), seeds=(0, 1)),
        _record("supervised", 1.0, 0),
        _record("supervised", 1.0, 1),
    ]
    written = write(build_boards(records), tmp_path, class_fraction=0.25)
    names = {p.name for p in written}
    assert {
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.html",
        "leaderboard_per_class.csv",
        "synthetic-quick-dice_vs_labeled.png",
        "synthetic-quick-per_class_dice.png",
        "synthetic-quick-per_case_dice.png",
    } <= names
    md = (tmp_path / "leaderboard.md").read_text()
    assert "*lower bound: supervised @ 0.1*" in md and "*upper bound: supervised @ 1*" in md
    assert "Per-class test Dice at labeled 0.25" in md and "| L4/L5 |" in md
    cps4 = next(line for line in md.splitlines() if line.startswith("| cps4 |"))
    assert cps4.count("**") == 2 * 3 * 2  # Dice, HD95, ASSD best in both fractions
    html = (tmp_path / "leaderboard.html").read_text()
    assert "data:image/png;base64," in html and "<script>" in html and 'class="best' in html
    with pytest.raises(SpinebenchError, match="has no runs"):
        write(build_boards(records), tmp_path, class_fraction=0.5)
    with pytest.raises(SpinebenchError, match="no FINISHED spinebench runs"):
        write([], tmp_path)
