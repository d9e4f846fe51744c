"""``spinebench leaderboard``: tracked runs or record files -> tables, statistics and figures
(or a check); ``spinebench export``: tracked runs -> record files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from spinebench.engine.tracking import resolve_uri
from spinebench.errors import SpinebenchError
from spinebench.leaderboard import (
    FORMATS,
    MIN_SEEDS,
    MODES,
    Board,
    build_boards,
    check,
    export,
    fmt_stat,
    load_records,
    load_store,
    write,
)
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
        title=f"{board.title}: methods at their defaults (test Dice, mean ± std over seeds)"
    )
    table.add_column("method")
    for fraction in board.fractions:
        table.add_column(f"{fraction:g}", justify="right")
    for row in board.main:
        cells: list[Text] = []
        for fraction in board.fractions:
            cell = board.cell(row, fraction)
            text = "–"
            if cell is not None:
                stat = cell.stat("dice", board.checkpoint)
                text = f"{fmt_stat(stat, 'dice')} (n={stat.n})"
            best = board.is_best(row, fraction, "dice")
            cells.append(Text(text, style="bold" if best else ""))
        table.add_row(Text(row.label), *cells)
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
    records: Path | None = None,
    checkpoint: str = "both",
    min_seeds: int = MIN_SEEDS,
) -> int:
    """Exit 0 with the files written, or 1 when ``--check`` finds a cell that would mislead."""
    chosen = parse_formats(formats)
    if checkpoint not in MODES:
        raise SpinebenchError(f"--checkpoint {checkpoint} is unknown; use {', '.join(MODES)}")
    if min_seeds < 1:
        raise SpinebenchError(f"--min-seeds {min_seeds} must be at least 1")
    if records is not None and tracking_uri is not None:
        raise SpinebenchError("pass --records or --tracking-uri, not both")
    check_writable(out, "--out", "pass a folder for the tables and figures")
    console = Console()
    runs = (
        load_records(records, experiment)
        if records is not None
        else load_store(resolve_uri(tracking_uri), experiment)
    )
    if check_first:
        problems = check(runs, seeds)
        err = Console(stderr=True)
        for problem in problems:
            err.print(Text.assemble(("check: ", "red"), problem))
        if problems:
            err.print(f"{len(problems)} problem(s): the leaderboard was not written")
            return 1
        console.print(
            f"check passed: {len(runs)} FINISHED runs, one setting per variant, every "
            "row has its seeds"
        )
    boards = build_boards(runs, checkpoint=checkpoint, min_seeds=min_seeds)
    written = write(boards, out, chosen, class_fraction)
    for board in boards:
        console.print(_overview(board))
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)
    return 0


def export_records(*, tracking_uri: str | None, experiment: str | None, out: Path) -> None:
    """Every FINISHED run of the store as a record file in ``out``."""
    written = export(resolve_uri(tracking_uri), experiment, out)
    Console().print(f"exported {len(written)} runs to {out}", highlight=False)
