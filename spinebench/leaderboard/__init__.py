"""Leaderboards from tracked runs or exported record files.

:mod:`~.records` is one run as the leaderboard sees it; :mod:`~.sources` reads them from the
store or from a folder of record files (:mod:`~.record_files`: the file format and its checks);
:mod:`~.defaults` decides which runs are a method at its defaults; :mod:`~.boards` groups runs
into main and study rows with statistics and tests, :mod:`~.checks` finds what would mislead;
:mod:`~.tables` words the tables that :mod:`~.render_md` and :mod:`~.render_html` write;
:mod:`~.render_csv`, :mod:`~.render_latex` and :mod:`~.plots` write the rest; :mod:`~.render`
writes the chosen formats.
"""

from spinebench.leaderboard.boards import (
    BASELINE,
    HEADLINE,
    MIN_SEEDS,
    MODES,
    Board,
    BoardCell,
    Row,
    build_boards,
)
from spinebench.leaderboard.checks import check
from spinebench.leaderboard.records import RunRecord
from spinebench.leaderboard.render import FORMATS, write
from spinebench.leaderboard.sources import export, load_records, load_store
from spinebench.leaderboard.tables import fmt_stat

__all__ = [
    "BASELINE",
    "FORMATS",
    "HEADLINE",
    "MIN_SEEDS",
    "MODES",
    "Board",
    "BoardCell",
    "Row",
    "RunRecord",
    "build_boards",
    "check",
    "export",
    "fmt_stat",
    "load_records",
    "load_store",
    "write",
]
