"""Leaderboards from tracked runs: :mod:`~spinebench.leaderboard.records` reads finished runs,
:mod:`~spinebench.leaderboard.boards` groups them into tables with statistics and checks,
:mod:`~spinebench.leaderboard.render` writes md/csv/html and :mod:`~spinebench.leaderboard.plots`
the figures."""

from spinebench.leaderboard.boards import (
    BASELINE,
    HEADLINE,
    Board,
    BoardCell,
    RowKey,
    build_boards,
    check,
    differing_params,
)
from spinebench.leaderboard.records import RunRecord, load_runs
from spinebench.leaderboard.render import FORMATS, fmt_stat, write

__all__ = [
    "BASELINE",
    "FORMATS",
    "HEADLINE",
    "Board",
    "BoardCell",
    "RowKey",
    "RunRecord",
    "build_boards",
    "check",
    "differing_params",
    "fmt_stat",
    "load_runs",
    "write",
]
