"""The tables of a leaderboard page, independent of the file format: what each cell says,
which is best, which is tied with the best. Markdown and HTML render these same tables, so
every name and number reads the same in both."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from spinebench.leaderboard.boards import (
    ALPHA,
    BASELINE,
    Board,
    BoardCell,
    Row,
    studies_group,
)
from spinebench.leaderboard.records import Checkpoint
from spinebench.stats import Stat

MISSING = "–"
#: Appended to the Dice of a row whose per-case Dice is not significantly different from the
#: best row's.
TIE = "≈"
#: Methods per per-class table: more are split over several tables (the page must fit 1400 px).
CLASS_COLUMNS = 6
_DIGITS = {"dice": 4, "hd95": 2, "assd": 2}
_NAME = {"dice": "Dice", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}

CONVENTIONS = (
    "Test split; mean ± sample std (ddof=1) over seeds; n = seeds. Dice is the checkpoint "
    "selected on the validation split; 'last' is the last checkpoint ('–' for runs that "
    "predate its test). Best of a column in bold, chosen only among rows with the board's full "
    f"seed count; {TIE} = per-case Dice not significantly different from the best row's. p: "
    "two-sided paired Wilcoxon signed-rank test on per-case Dice (each case averaged over the "
    f"seeds), Holm-corrected within each labeled fraction and family; alpha {ALPHA}; '–' = "
    "not applicable or no case differs. HD95/ASSD in mm. Only FINISHED runs; runs of different "
    "settings are never averaged. Every number re-derives with `spinebench reproduce RUN_ID...` "
    "(run ids: column `run_ids` of leaderboard.csv)."
)
AVERAGING = (
    "A class absent from both prediction and truth is excluded from a case's mean; present in "
    "only one: Dice 0, distances the image diagonal; the mean is over test cases of each case's "
    "foreground mean. A class's own Dice is the mean over the test cases where it is scored."
)


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None  # the number a sortable column sorts by (None: text)
    best: bool = False


@dataclass(frozen=True)
class Line:
    label: str
    cells: tuple[Cell, ...]
    reference: bool = False  # a bound or a method's main row beside its studies
    hint: str = ""  # what the setting differs in (a tooltip in HTML)


@dataclass(frozen=True)
class Table:
    kind: str  # main, studies or per-class
    caption: str
    header: tuple[str, ...]
    lines: tuple[Line, ...]


def fmt_stat(stat: Stat, metric: str) -> str:
    if stat.n == 0:
        return MISSING
    digits = _DIGITS[metric]
    if math.isnan(stat.std):
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def fmt_p(p: float) -> str:
    return MISSING if math.isnan(p) else f"{p:.3g}"


def column_name(metric: str, checkpoint: Checkpoint, board: Board) -> str:
    if checkpoint == "last":
        return "last Dice" if metric == "dice" else f"last {_NAME[metric]}"
    return _NAME[metric]


def _values(board: Board, row: Row, fraction: float, cell: BoardCell, group: str) -> list[Cell]:
    out = []
    for metric, checkpoint in board.columns():
        stat = cell.stat(metric, checkpoint)
        text = fmt_stat(stat, metric)
        if checkpoint != board.checkpoint and 0 < stat.n < len(cell.runs):
            text += f" (n={stat.n})"  # the runs that predate the last-checkpoint test
        best = board.is_best(row, fraction, metric, checkpoint, group)
        primary_dice = (metric, checkpoint) == ("dice", board.checkpoint)
        if primary_dice and cell.tied and not best and row.main:
            text += f" {TIE}"
        out.append(Cell(text, stat.mean if stat.n else None, best))
    return out


def _plain(board: Board, cell: BoardCell) -> list[Cell]:
    """A reference row's numbers (never best, never tested)."""
    return [
        Cell(fmt_stat(s := cell.stat(m, c), m), s.mean if s.n else None) for m, c in board.columns()
    ]


def _header(board: Board, first: str, tail: Sequence[str]) -> tuple[str, ...]:
    return (first, *(column_name(m, c, board) for m, c in board.columns()), "n", *tail)


def main_tables(board: Board) -> list[Table]:
    """One table per labeled fraction: the methods at their defaults, then the upper bound."""
    tables = []
    for fraction in board.fractions:
        lines = []
        for row in board.main:
            cell = board.cell(row, fraction)
            if cell is None:
                continue
            label = f"{row.label} (lower bound)" if row.method == BASELINE else row.label
            cells = _values(board, row, fraction, cell, "main")
            cells += [
                Cell(str(cell.n(board.checkpoint)), float(cell.n(board.checkpoint))),
                Cell(fmt_p(cell.p_supervised), _num(cell.p_supervised)),
                Cell(fmt_p(cell.p_best), _num(cell.p_best)),
            ]
            lines.append(Line(label, tuple(cells)))
        if board.upper is not None:
            n = board.upper.n(board.checkpoint)
            cells = [*_plain(board, board.upper), Cell(str(n), float(n)), Cell(""), Cell("")]
            lines.append(Line(f"upper bound: {BASELINE} @ 1", tuple(cells), reference=True))
        header = _header(board, "method", ("p vs supervised", "p vs best"))
        tables.append(Table("main", f"labeled {fraction:g}", header, tuple(lines)))
    return tables


def study_tables(board: Board) -> list[Table]:
    """One table per labeled fraction: each method's other settings under its main row; with
    a "p vs base" column when some study runs another method's procedure (cps4 on UniMatch)."""
    tables = []
    based = any(r.base is not None for r in board.studies)
    for fraction in board.study_fractions:
        lines = []
        for method in dict.fromkeys(r.method for r in board.studies):
            group = studies_group(method)
            for row in board.study_group(method):
                cell = board.cell(row, fraction)
                if cell is None:
                    continue
                cells = _values(board, row, fraction, cell, group)
                n = cell.n(board.checkpoint)
                cells.append(Cell(str(n), float(n)))
                if row.main:
                    cells += [Cell("")] * (2 if based else 1)
                    lines.append(Line(row.label, tuple(cells), reference=True))
                    continue
                cells.append(Cell(fmt_p(cell.p_default), _num(cell.p_default)))
                if based:
                    p_base = f"{fmt_p(cell.p_base)} ({row.base})" if row.base is not None else ""
                    cells.append(Cell(p_base, _num(cell.p_base)))
                lines.append(Line(row.label, tuple(cells), hint=differs_text(row)))
        tests = ("p vs defaults", "p vs base") if based else ("p vs defaults",)
        header = _header(board, "setting", tests)
        tables.append(Table("studies", f"labeled {fraction:g}", header, tuple(lines)))
    return tables


def differs_text(row: Row) -> str:
    """Every key a study's setting differs in from today's defaults."""
    if not row.differs:
        return "defaults unknown: the method's plugin is not installed here"
    return ", ".join(f"{k}={v}" for k, v in row.differs)


def per_class_tables(board: Board, fraction: float) -> list[Table]:
    """Classes as lines (with how many test cases contain each), the main rows as columns."""
    rows = [r for r in board.main if board.cell(r, fraction) is not None]
    best = board.class_best(fraction, rows)
    tables = []
    for start in range(0, len(rows), CLASS_COLUMNS):
        chunk = rows[start : start + CLASS_COLUMNS]
        cells = {r: board.cells[(r, fraction)] for r in chunk}
        names = [
            r.label if board.full(c) else f"{r.label} (n={c.n(board.checkpoint)})"
            for r, c in cells.items()
        ]
        lines = []
        for name in board.classes:
            values = [Cell(coverage_text(board, fraction, name))]
            for row, cell in cells.items():
                stat = cell.class_stat(name, board.checkpoint)
                values.append(
                    Cell(fmt_stat(stat, "dice"), stat.mean if stat.n else None, row in best[name])
                )
            lines.append(Line(name, tuple(values)))
        header = ("class", "test cases with it", *names)
        tables.append(Table("per-class", f"labeled {fraction:g}", header, tuple(lines)))
    return tables


def coverage_text(board: Board, fraction: float, name: str) -> str:
    """In how many test cases the class is present in the truth ("unknown" for old runs)."""
    runs = [run for (row, f), c in board.cells.items() if f == fraction for run in c.runs]
    counts = {c for r in runs if (c := r.coverage(name)) is not None}
    totals = {len(r.per_case) for r in runs if r.coverage(name) is not None}
    if not counts:
        return "unknown"
    count = str(min(counts)) if len(counts) == 1 else f"{min(counts)}–{max(counts)}"
    return f"{count} of {totals.pop()}" if len(totals) == 1 else count


def class_fraction_of(board: Board, requested: float | None) -> float | None:
    """The fraction of the per-class table: the requested one, else the smallest column."""
    if requested is None:
        return board.fractions[0] if board.fractions else None
    return requested if requested in board.fractions else None


def main_notes(board: Board) -> list[str]:
    """What the main board holds, in words."""
    notes = [
        f"One row per method at its current defaults; `{BASELINE}` at each fraction is the "
        f"lower bound, `{BASELINE}` with every training case labeled the upper bound. Best: "
        f"among rows with at least {board.min_seeds} seeds, when two or more such rows compete."
    ]
    if board.shared:
        keys = ", ".join(f"{k}={v}" for k, v in sorted(board.shared.items()))
        notes.append(f"Every run on this board shares: {keys}.")
    if board.unknown_defaults:
        notes.append(
            "Defaults unknown (plugin not installed here), so listed under studies: "
            + ", ".join(board.unknown_defaults)
            + "."
        )
    return notes


def study_notes(board: Board) -> list[str]:
    return [
        "Other settings of the methods (sweep variants, `--set` studies, runs made under an "
        "older default), each under its method's row at its defaults; p: paired Wilcoxon "
        "against that row, Holm over the studies of the fraction. Settings:"
    ] + [f"`{r.label}`: {differs_text(r)}" for r in board.studies]


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value
