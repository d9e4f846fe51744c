"""Which row a run lands in, and what may be bold: a store like the README's (five methods, a
variant equal to today's default, an older default, ablations, budget studies, one-seed rows),
as hand-made record documents (no training, no MLflow)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
from leaderboard_data import document, readme_like, record, seeds
from scipy.stats import wilcoxon
from spinebench_cps4.method import CPS4

from spinebench.leaderboard import build_boards, check, write
from spinebench.leaderboard.records import record_of
from spinebench.stats import holm

STUDIES = {
    "supervised[it4000]",
    "mean_teacher[it4000]",
    "cps4 (method.pseudo_label=fused)",
    "cps4[agree]",
    "cps4[no_token_loss]",
}


@pytest.fixture(scope="module")
def readme_board():
    (board,) = build_boards([record_of(d) for d in readme_like()])
    return board


@pytest.fixture(scope="module")
def readme_page(readme_board, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("readme-page")
    write([readme_board], out, ["md", "csv"])
    return out


def _md_tables(md: str) -> list[list[str]]:
    """Each markdown table as its lines, in page order."""
    tables, current = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _line(table: list[str], label: str) -> str:
    return next(line for line in table if line.startswith(f"| {label} |"))


def test_main_board_holds_one_row_per_method_at_its_defaults(readme_board):
    board = readme_board
    assert [r.label for r in board.main] == [
        "supervised",
        "clipseg",
        "cps4",
        "mean_teacher",
        "unimatch",
    ]
    assert board.fractions == [0.05, 0.2]  # 1.0 holds only supervised: the upper bound
    cps4 = board.default_row("cps4")
    # the sweep variant `reliable` sets today's default: it is the plain cps4 row at 0.05
    assert {r.variant for r in board.cell(cps4, 0.05).runs} == {"reliable"}
    assert {r.variant for r in board.cell(cps4, 0.2).runs} == {""}
    assert {r.label for r in board.studies} == STUDIES
    assert board.upper is not None and board.upper.seeds == [0, 1, 2]
    assert all(r.labeled == 1.0 for r in board.upper.runs)


def test_one_name_per_setting_in_every_file(readme_page):
    with (readme_page / "leaderboard.csv").open(newline="") as f:
        lines = list(csv.DictReader(f))
    names: dict[str, set[str]] = {}
    for line in lines:
        names.setdefault(line["setting"], set()).add(line["row"])
    assert all(len(v) == 1 for v in names.values())  # a setting has one name ...
    labels = [next(iter(v)) for v in names.values()]
    assert len(labels) == len(set(labels))  # ... and a name one setting
    assert {ln["row"] for ln in lines if ln["table"] == "studies"} == STUDIES
    cps4 = {(ln["table"], ln["labeled"]) for ln in lines if ln["row"] == "cps4"}
    assert cps4 == {("main", "0.05"), ("main", "0.2")}
    md = (readme_page / "leaderboard.md").read_text()
    assert "reliable" not in md and "method.pseudo_label=reliable" not in md


def test_the_page_opens_with_the_main_board_and_repeats_no_lower_bound(readme_page):
    md = (readme_page / "leaderboard.md").read_text()
    tables = _md_tables(md)
    first = tables[0]
    assert first[0].startswith("| method | Dice | last Dice |")
    labels = [line.split(" | ")[0].strip("| *") for line in first[2:]]
    assert labels == [
        "supervised (lower bound)",
        "clipseg",
        "cps4",
        "mean_teacher",
        "unimatch",
        "upper bound: supervised @ 1",
    ]
    assert "lower bound:" not in md  # the supervised row of each fraction is its lower bound
    at_005, at_02 = (
        _line(tables[0], "supervised (lower bound)"),
        _line(tables[1], "supervised (lower bound)"),
    )
    assert at_005.split(" | ")[1] != at_02.split(" | ")[1]
    assert md.index("### Methods at their defaults") < md.index("### Studies")


def test_no_row_below_the_full_seed_count_is_bold(readme_board, readme_page):
    board = readme_board
    mean_teacher = board.default_row("mean_teacher")
    cell = board.cell(mean_teacher, 0.05)
    assert cell.seeds == [0]
    highest = max(c.stat("dice").mean for (r, f), c in board.cells.items() if r.main and f == 0.05)
    assert cell.stat("dice").mean == highest  # the one-seed outlier has the top Dice ...
    assert not board.is_best(mean_teacher, 0.05, "dice")  # ... and is not the best
    assert board.is_best(board.default_row("unimatch"), 0.05, "dice")
    md = (readme_page / "leaderboard.md").read_text()
    tables = _md_tables(md)
    assert "**" not in _line(tables[0], "mean_teacher")
    assert " | 1 | " in _line(tables[0], "mean_teacher")  # shown with its n
    per_class = next(t for t in tables if t[0].startswith("| class |"))
    column = per_class[0].split(" | ").index("mean_teacher (n=1)")
    assert all("**" not in line.split(" | ")[column] for line in per_class[2:])
    studies = next(t for t in tables if t[0].startswith("| setting |"))
    assert "**" not in _line(studies, "cps4[agree]")
    bold = [line for table in tables for line in table if "**" in line]
    assert bold and all(" | 1 | " not in line for line in bold)


def test_a_full_seed_row_with_no_other_to_beat_is_not_called_best():
    # supervised with three seeds beside one-seed rows: alone among the full rows, so bold
    # would only say which row was rerun, not which method is better
    docs = [*seeds("supervised", 0.05, level=0.5), document("unimatch", 0.05, 0, level=0.7)]
    (board,) = build_boards([record_of(d) for d in docs])
    assert not any(board.is_best(r, 0.05, "dice") for r in board.main)
    docs += seeds("unimatch", 0.05, level=0.7)[1:]  # two full rows: now one is the best
    (board,) = build_boards([record_of(d) for d in docs])
    assert board.is_best(board.default_row("unimatch"), 0.05, "dice")


def test_min_seeds_sets_the_full_seed_count(readme_board):
    records = [record_of(d) for d in readme_like()]
    (board,) = build_boards(records, min_seeds=1)
    assert board.is_best(board.default_row("mean_teacher"), 0.05, "dice")


def test_rows_tied_with_the_best_are_the_ones_the_test_cannot_separate(readme_board, readme_page):
    board = readme_board
    best = board.default_row("unimatch")
    others = [r for r in board.main if r != best]

    def pooled(row):
        cell = board.cell(row, 0.05)
        return [
            sum(r.per_case[c]["dice"] for r in cell.runs) / len(cell.runs)
            for c in sorted(cell.runs[0].per_case)
        ]

    adjusted = holm([wilcoxon(pooled(r), pooled(best)).pvalue for r in others])
    tied = {r.label for r, p in zip(others, adjusted, strict=True) if p >= 0.05}
    assert tied == {"cps4"}  # a real tie and real differences, so the test is not vacuous
    md = (readme_page / "leaderboard.md").read_text()
    first = _md_tables(md)[0]
    for row in others:
        label = "supervised (lower bound)" if row.method == "supervised" else row.label
        assert ("≈" in _line(first, label)) == (row.label in tied), row.label
        assert board.cell(row, 0.05).p_best == pytest.approx(adjusted[others.index(row)])


def test_an_older_default_an_option_added_later_and_shared_keys(tmp_path: Path):
    base = [*seeds("supervised", 0.1), *seeds("cps4", 0.1)]
    older = seeds("cps4", 0.1, sets={"method.pseudo_label": "fused"}, start=1)
    before_option = seeds("cps4", 0.1, drop=("method.w_pseudo",), start=2)
    (board,) = build_boards([record_of(d) for d in base + older + before_option])
    assert [r.label for r in board.main] == ["supervised", "cps4"]
    assert {r.label for r in board.studies} == {
        "cps4 (method.pseudo_label=fused)",
        "cps4 (method.w_pseudo=(unset))",
    }
    # an option the method declares as added later, at the value older runs behaved under
    # (cps4.vlm_min_reliability 0.0): runs made before it are still its defaults
    assert "vlm_min_reliability" in CPS4.options_added
    before_floor = seeds("cps4", 0.1, drop=("method.vlm_min_reliability",), start=3)
    (board,) = build_boards([record_of(d) for d in base + before_floor])
    assert [r.label for r in board.main] == ["supervised", "cps4"] and not board.studies
    assert board.cell(board.default_row("cps4"), 0.1).n("best") == 3  # newest run per seed
    floor = seeds("cps4", 0.1, sets={"method.vlm_min_reliability": "0.5"}, start=4)
    (board,) = build_boards([record_of(d) for d in base + floor])
    assert [r.label for r in board.studies] == ["cps4 (method.vlm_min_reliability=0.5)"]
    # a key every run shares (a grid's common set: list) keeps the runs on the main board
    small = {"data.image_size": "32"}
    shared = [*seeds("supervised", 0.1, sets=small), *seeds("cps4", 0.1, sets=small)]
    (board,) = build_boards([record_of(d) for d in shared])
    assert [r.label for r in board.main] == ["supervised", "cps4"] and not board.studies
    assert board.shared == {"data.image_size": "32"}
    write([board], tmp_path, ["md"])
    assert (
        "Every run on this board shares: data.image_size=32."
        in (tmp_path / "leaderboard.md").read_text()
    )
    # ... but not when only some runs have it: then it is a study
    (board,) = build_boards([record_of(d) for d in [*shared, *seeds("supervised", 0.1)]])
    assert [r.label for r in board.main] == ["supervised"]
    assert {r.label for r in board.studies} == {
        "supervised (data.image_size=32)",
        "cps4 (data.image_size=32)",
    }


def test_a_study_on_another_base_is_also_tested_against_that_base(tmp_path: Path):
    """cps4 on UniMatch asks whether the VLM helps UniMatch: its study is paired with
    UniMatch's main row (and, as every study, with cps4's defaults), each in its own Holm
    family; a setting naming cps4's own base is not a base study."""
    assert CPS4.base_option == "base"
    docs = [*seeds("supervised", 0.1), *seeds("unimatch", 0.1), *seeds("cps4", 0.1)]
    docs += seeds("cps4", 0.1, sets={"method.base": "unimatch"}, level=0.61)
    docs += seeds("cps4", 0.1, sets={"method.base": "unimatch", "method.conf_thresh": "0.9"})
    docs += seeds("cps4", 0.1, sets={"method.pseudo_label": "teacher"})
    (board,) = build_boards([record_of(d) for d in docs])
    by_label = {r.label: r for r in board.studies}
    assert {label: r.base for label, r in by_label.items()} == {
        "cps4 (method.base=unimatch)": "unimatch",
        "cps4 (method.base=unimatch, method.conf_thresh=0.9)": "unimatch",
        "cps4 (method.pseudo_label=teacher)": None,
    }
    reference = board.cell(board.default_row("unimatch"), 0.1).pooled_cases()
    on_base = [r for r in board.studies if r.base == "unimatch"]
    raw = []
    for row in on_base:
        cases = board.cell(row, 0.1).pooled_cases()
        common = sorted(cases.keys() & reference.keys())
        raw.append(wilcoxon([cases[c] for c in common], [reference[c] for c in common]).pvalue)
    for row, p in zip(on_base, holm(raw), strict=True):
        assert board.cell(row, 0.1).p_base == pytest.approx(p)
    teacher = next(r for r in board.studies if r.base is None)
    assert math.isnan(board.cell(teacher, 0.1).p_base)
    assert not math.isnan(board.cell(teacher, 0.1).p_default)  # still tested against defaults
    write([board], tmp_path, ["md", "csv"])
    (studies,) = [
        t for t in _md_tables((tmp_path / "leaderboard.md").read_text()) if "setting" in t[0]
    ]
    assert studies[0].rstrip().endswith("| p vs defaults | p vs base |")
    assert [line.split(" | ")[0] for line in studies[2:5]] == [
        "| *cps4*",
        "| *unimatch*",
        "| cps4 (method.base=unimatch)",
    ]
    assert "(unimatch) |" in _line(studies, "cps4 (method.base=unimatch)")
    assert _line(studies, "cps4 (method.pseudo_label=teacher)").rstrip().endswith("|  |")
    with (tmp_path / "leaderboard.csv").open() as f:
        rows = {r["row"]: r for r in csv.DictReader(f) if r["table"] == "studies"}
    assert rows["cps4 (method.base=unimatch)"]["base"] == "unimatch"
    assert float(rows["cps4 (method.base=unimatch)"]["p_vs_base"]) == pytest.approx(
        board.cell(on_base[0], 0.1).p_base
    )
    assert rows["cps4 (method.pseudo_label=teacher)"]["p_vs_base"] == ""


def test_a_method_whose_plugin_is_missing_is_a_study_not_a_guess():
    foreign = [document("supervised", 0.1, s, sets={"run.method": "newmethod"}) for s in range(3)]
    for doc in foreign:
        doc["tags"]["spinebench.method"] = "newmethod"
    (board,) = build_boards([record_of(d) for d in [*seeds("supervised", 0.1), *foreign]])
    assert [r.label for r in board.main] == ["supervised"]
    assert [r.label for r in board.studies] == [
        "newmethod (defaults unknown: plugin not installed)"
    ]
    assert board.unknown_defaults == ("newmethod",)


def test_check_names_a_variant_of_two_settings_and_missing_seeds():
    records = [record_of(d) for d in readme_like()]
    problems = check(records)
    assert any(
        re.search(r"mean_teacher labeled 0.05: 1 of 3 seeds \(missing 1, 2\)", p) for p in problems
    )
    assert any("cps4[agree] labeled 0.05: 1 of 3 seeds" in p for p in problems)
    complete = [r for r in records if r.method != "mean_teacher" and r.variant != "agree"]
    assert check(complete) == []
    clash = [
        record("cps4", 0.05, s, sets={"train.lr": "0.1"}, variant="no_token_loss") for s in range(3)
    ]
    problems = check(complete + clash)
    assert any("cps4[no_token_loss]: runs of 2 different settings" in p for p in problems)
