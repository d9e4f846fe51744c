"""``spinebench leaderboard``: tracked runs -> tables, statistics and figures (or a check)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from spinebench.engine.tracking import resolve_uri
from spinebench.errors import SpinebenchError
from spinebench.leaderboard import FORMATS, Board, build_boards, check, fmt_stat, load_runs, write
from spinebench.paths import check_writable


def parse_formats(given: Sequence[str]) -> list[str]:
    """``--format md --format csv`` or ``--format md,csv``; none = every format."""
    chosen = [f.strip() for item in given for f in item.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown:
        raise SpinebenchError(f"--format {', '.join(unknown)} is unknown; use {', '.join(FORMATS)}")
    return chosen or list(FORMATS)


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SpinebenchError(
            f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2"
        ) from None


def _overview(board: Board) -> Table:
    table = Table(
        title=f"{board.experiment}: {board.dataset}, profile {board.profile} "
        "(test Dice, mean ± std over seeds)"
    )
    table.add_column("method")
    for fraction in board.fractions:
        table.add_column(f"{fraction:g}", justify="right")
    for row, label in board.rows.items():
        cells: list[Text] = []
        for fraction in board.fractions:
            cell = board.cell(row, fraction)
            text = "-"
            if cell is not None:
                text = f"{fmt_stat(cell.stat('dice'), 'dice')} (n={len(cell.runs)})"
            cells.append(Text(text, style="bold" if board.is_best(row, fraction, "dice") else ""))
        table.add_row(Text(label), *cells)
    return table


def make_leaderboard(
    *,
    tracking_uri: str | None,
    experiment: str | None,
    formats: Sequence[str],
    out: Path,
    class_fraction: float | None,
    check_first: bool,
    seeds: Sequence[int] | None,
) -> int:
    """Exit 0 with the files written, or 1 when ``--check`` finds a cell that would mislead."""
    chosen = parse_formats(formats)
    check_writable(out, "--out", "pass a folder for the tables and figures")
    console = Console()
    records = load_runs(resolve_uri(tracking_uri), experiment)
    if check_first:
        problems = check(records, seeds)
        err = Console(stderr=True)
        for problem in problems:
            err.print(Text.assemble(("check: ", "red"), problem))
        if problems:
            err.print(f"{len(problems)} problem(s): the leaderboard was not written")
            return 1
        console.print(
            f"check passed: {len(records)} FINISHED runs, consistent settings, every "
            "cell has its seeds"
        )
    boards = build_boards(records)
    written = write(boards, out, chosen, class_fraction)
    for board in boards:
        console.print(_overview(board))
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)
    return 0
