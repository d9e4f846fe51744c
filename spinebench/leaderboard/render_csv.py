"""``leaderboard.csv`` (long format: one line per board, row and labeled fraction) and
``leaderboard_per_class.csv`` (one line per main row and class), for analysis elsewhere."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spinebench.atomic import write_atomic
from spinebench.leaderboard.boards import HEADLINE, Board, BoardCell, Row
from spinebench.leaderboard.tables import coverage_text


@contextmanager
def _csv_file(path: Path) -> Iterator[Any]:
    """A csv writer whose rows reach ``path`` atomically when the block ends."""
    text = io.StringIO()
    yield csv.writer(text, lineterminator="\n")
    write_atomic(path, text.getvalue())


def _num(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def _lines(board: Board) -> Iterator[tuple[str, Row, float, BoardCell]]:
    """(table, row, fraction, cell) of every line: main rows, the upper bound, the studies."""
    for row in board.main:
        for fraction in board.fractions:
            if (cell := board.cell(row, fraction)) is not None:
                yield "main", row, fraction, cell
    if board.upper is not None and board.baseline is not None:
        yield "upper_bound", board.baseline, 1.0, board.upper
    for row in board.studies:
        for fraction in board.study_fractions:
            if (cell := board.cell(row, fraction)) is not None:
                yield "studies", row, fraction, cell


def write_csv(boards: Sequence[Board], chosen: dict[str, float | None], out: Path) -> list[Path]:
    main = out / "leaderboard.csv"
    show_last = any(b.show_last for b in boards)
    with _csv_file(main) as writer:
        writer.writerow(
            [
                "experiment", "dataset", "profile", "table", "row", "method", "variants",
                "setting", "differs", "labeled", "checkpoint", "n_seeds", "seeds",
                *[f"{m}_{s}" for m in HEADLINE for s in ("mean", "std")],
                *(["last_dice_mean", "last_dice_std", "last_n"] if show_last else []),
                "p_vs_supervised", "p_vs_best", "tied_with_best", "p_vs_defaults", "base",
                "p_vs_base", "best",
                "run_ids",
            ]
        )  # fmt: skip
        for board in boards:
            for table, row, fraction, cell in _lines(board):
                group = "main" if table == "main" else f"studies:{row.method}"
                ranked = table != "upper_bound"
                best = [
                    f"{'last_' if c != board.checkpoint else ''}{m}"
                    for m, c in board.columns()
                    if ranked and board.is_best(row, fraction, m, c, group)
                ]
                stats = [
                    v
                    for m in HEADLINE
                    for v in (
                        cell.stat(m, board.checkpoint).mean,
                        cell.stat(m, board.checkpoint).std,
                    )
                ]
                last = cell.stat("dice", "last")
                main_row = table == "main"
                writer.writerow(
                    [
                        board.experiment, board.dataset, board.profile, table, row.label,
                        row.method, ";".join(row.variants), row.setting,
                        "; ".join(f"{k}={v}" for k, v in row.differs), f"{fraction:g}",
                        board.checkpoint, cell.n(board.checkpoint), ";".join(map(str, cell.seeds)),
                        *map(_num, stats),
                        *([_num(last.mean), _num(last.std), last.n] if show_last else []),
                        _num(cell.p_supervised) if main_row else "",
                        _num(cell.p_best) if main_row else "",
                        int(cell.tied) if main_row else "",
                        _num(cell.p_default) if table == "studies" else "",
                        row.base or "",
                        _num(cell.p_base) if row.base is not None else "",
                        ";".join(best),
                        " ".join(r.run_id for r in cell.runs),
                    ]
                )  # fmt: skip
    return [main, _write_per_class(boards, chosen, out)]


def _write_per_class(boards: Sequence[Board], chosen: dict[str, float | None], out: Path) -> Path:
    per_class = out / "leaderboard_per_class.csv"
    with _csv_file(per_class) as writer:
        writer.writerow(
            [
                "experiment", "dataset", "profile", "row", "labeled", "class",
                "test_cases_with_class", "dice_mean", "dice_std", "n_seeds", "best",
            ]
        )  # fmt: skip
        for board in boards:
            fraction = chosen[board.slug]
            if fraction is None:
                continue
            rows = [r for r in board.main if board.cell(r, fraction) is not None]
            class_best = board.class_best(fraction, rows)
            for row in rows:
                cell = board.cells[(row, fraction)]
                for name in board.classes:
                    stat = cell.class_stat(name, board.checkpoint)
                    writer.writerow(
                        [
                            board.experiment, board.dataset, board.profile, row.label,
                            f"{fraction:g}", name, coverage_text(board, fraction, name),
                            _num(stat.mean), _num(stat.std), stat.n, int(row in class_best[name]),
                        ]
                    )  # fmt: skip
    return per_class
