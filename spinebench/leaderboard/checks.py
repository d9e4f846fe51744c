"""``leaderboard --check``: what would make a published table mislead, found before anything
is written."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from spinebench.leaderboard.boards import Board, Row, build_boards
from spinebench.leaderboard.records import RunRecord


def check(records: Sequence[RunRecord], seeds: Sequence[int] | None = None) -> list[str]:
    """Problems that would make a published table misleading: a sweep variant whose runs have
    different settings, or a row that lacks seeds at one of its fractions (``seeds``, else
    every seed seen on its board) -- for a main row at every fraction of the main board."""
    problems = []
    for board in build_boards(records, checkpoint="best", min_seeds=1):
        runs = [run for cell in board.cells.values() for run in cell.runs]
        variants: dict[tuple[str, str], set[Row]] = defaultdict(set)
        for (row, _), cell in board.cells.items():
            for run in cell.runs:
                if run.variant:
                    variants[(run.method, run.variant)].add(row)
        for (method, variant), rows in sorted(variants.items()):
            if len(rows) > 1:
                keys = sorted({k for r in rows for k, _ in r.differs})
                problems.append(
                    f"{_where(board)} {method}[{variant}]: runs of {len(rows)} different "
                    f"settings ({', '.join(keys) or 'settings'}); rename one variant"
                )
        expected = set(seeds) if seeds else {r.seed for r in runs}
        wanted = [(row, f) for row in board.main for f in board.fractions]
        wanted += [(row, f) for (row, f) in board.cells if (row, f) not in wanted]
        for row, fraction in wanted:
            found = board.cell(row, fraction)
            have = set(found.seeds) if found is not None else set()
            missing = ", ".join(map(str, sorted(expected - have)))
            if missing:
                problems.append(
                    f"{_where(board)} {row.label} labeled {fraction:g}: {len(have)} of "
                    f"{len(expected)} seeds (missing {missing})"
                )
    return problems


def _where(board: Board) -> str:
    return f"{board.experiment} ({board.dataset}, {board.profile})"
