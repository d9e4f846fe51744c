"""``leaderboard.md``: each board opens with its main board (the page's first table is the
first fraction's main table), then the per-class table with class coverage, then the studies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spinebench.atomic import write_atomic
from spinebench.leaderboard.boards import Board
from spinebench.leaderboard.plots import Figures
from spinebench.leaderboard.tables import (
    AVERAGING,
    CONVENTIONS,
    Table,
    main_notes,
    main_tables,
    per_class_tables,
    study_notes,
    study_tables,
)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _table(table: Table) -> list[str]:
    lines = [
        _row(table.header),
        _row(["---"] + ["---:"] * (len(table.header) - 1)),
    ]
    for line in table.lines:
        label = f"*{line.label}*" if line.reference else line.label
        cells = [f"**{c.text}**" if c.best and c.text else c.text for c in line.cells]
        lines.append(_row([label, *cells]))
    return [*lines, ""]


def write_md(
    boards: Sequence[Board],
    chosen: dict[str, float | None],
    figures: dict[str, Figures],
    path: Path,
) -> Path:
    lines = ["# spinebench leaderboard", "", CONVENTIONS, ""]
    for board in boards:
        fig = figures[board.slug]
        lines += [f"## {board.title}", "", "### Methods at their defaults", ""]
        lines += [" ".join(main_notes(board)), ""]
        tables = main_tables(board)
        if not tables:
            lines += ["No run of any method at its current defaults.", ""]
        for table in tables:
            lines += [f"#### {table.caption}", "", *_table(table)]
        lines += [f"![Dice vs labeled fraction]({fig.dice_vs_labeled.name})", ""]
        fraction = chosen[board.slug]
        if fraction is not None:
            lines += [f"### Per-class test Dice at labeled {fraction:g}", "", AVERAGING, ""]
            for table in per_class_tables(board, fraction):
                lines += _table(table)
            for image, alt in ((fig.per_class, "per-class Dice"), (fig.per_case, "per-case Dice")):
                if image is not None:
                    lines += [f"![{alt}]({image.name})", ""]
        studies = study_tables(board)
        if studies:
            notes = study_notes(board)
            lines += ["### Studies: other settings of the methods", "", notes[0], ""]
            lines += [f"- {note}" for note in notes[1:]] + [""]
            for table in studies:
                lines += [f"#### {table.caption}", "", *_table(table)]
    write_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path
