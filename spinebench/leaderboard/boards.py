"""Runs -> leaderboards: per-cell statistics, paired significance tests, consistency checks.

Everything is read from MLflow (a sqlite file or a server): FINISHED runs only, their tags,
params, ``test/*`` metrics and the ``per_case.csv`` artifact. Runs are never averaged across
experiments, datasets, profiles or settings: a *setting* is the logged config without the seed
and the labeled fraction, so a row of a board is (method, variant, setting) and its cells are
the labeled fractions. Conventions (also in docs/sweeps.md):

- mean ± sample standard deviation (ddof=1) over seeds; one run per seed (the newest, when a
  cell was rerun with ``--force``);
- significance: two-sided Wilcoxon signed-rank test on per-case test Dice, paired by case id
  (the test split depends on ``data.split_seed`` only), each case averaged over the seeds first;
  Holm-corrected within each labeled fraction, separately for "vs supervised" and "vs best";
  undefined (shown as "-") when no case differs;
- reference rows: ``supervised`` at the smallest fraction (lower bound) and at 1.0 (upper bound).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from spinebench.leaderboard.records import PER_RUN_PARAMS, RunRecord
from spinebench.stats import Stat, holm, nanmean, paired_wilcoxon

BASELINE = "supervised"
HEADLINE = ("dice", "hd95", "assd")


@dataclass(frozen=True)
class RowKey:
    method: str
    variant: str
    setting: str


@dataclass
class BoardCell:
    """One row at one labeled fraction: its runs (one per seed) and their statistics."""

    runs: list[RunRecord]
    p_supervised: float = math.nan
    p_best: float = math.nan

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    def stat(self, metric: str) -> Stat:
        return Stat.of(r.metrics.get(f"test/{metric}", math.nan) for r in self.runs)

    def class_stat(self, name: str) -> Stat:
        return Stat.of(
            nanmean([c.get(f"dice/{name}", math.nan) for c in r.per_case.values()])
            for r in self.runs
        )

    def pooled_cases(self) -> dict[str, float]:
        """Per-case test Dice averaged over seeds (the unit of the paired tests)."""
        values: dict[str, list[float]] = defaultdict(list)
        for run in self.runs:
            for case, scores in run.per_case.items():
                values[case].append(scores.get("dice", math.nan))
        pooled = {case: nanmean(v) for case, v in values.items()}
        return {case: v for case, v in pooled.items() if not math.isnan(v)}


@dataclass
class Board:
    """Runs of one (experiment, dataset, profile): rows x labeled fractions."""

    experiment: str
    dataset: str
    profile: str
    fractions: list[float]
    rows: dict[RowKey, str]  # key -> display label, in display order
    cells: dict[tuple[RowKey, float], BoardCell]
    classes: tuple[str, ...]
    baseline: RowKey | None
    lower: tuple[float, BoardCell] | None = None
    upper: tuple[float, BoardCell] | None = None
    best: dict[tuple[float, str], tuple[RowKey, ...]] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        parts = [self.dataset, self.profile]
        if self.experiment != f"spinebench/{self.dataset}":
            parts.insert(0, self.experiment)
        return "-".join("".join(c if c.isalnum() or c in "._" else "-" for c in p) for p in parts)

    def cell(self, row: RowKey, fraction: float) -> BoardCell | None:
        return self.cells.get((row, fraction))

    def is_best(self, row: RowKey, fraction: float, metric: str) -> bool:
        return row in self.best.get((fraction, metric), ())


# -- boards ---------------------------------------------------------------------------------------


def build_boards(records: Sequence[RunRecord]) -> list[Board]:
    """Group runs into boards and fill every cell's statistics and tests."""
    by_board: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for record in records:
        by_board[record.board].append(record)
    return [_build_board(key, runs) for key, runs in sorted(by_board.items())]


def _latest_per_seed(runs: Iterable[RunRecord]) -> list[RunRecord]:
    newest: dict[int, RunRecord] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        newest[run.seed] = run
    return [newest[s] for s in sorted(newest)]


def _build_board(key: tuple[str, str, str], runs: list[RunRecord]) -> Board:
    grouped: dict[tuple[RowKey, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[(RowKey(run.method, run.variant, run.setting), run.labeled)].append(run)
    cells = {k: BoardCell(_latest_per_seed(v)) for k, v in grouped.items()}
    row_keys = sorted(
        {row for row, _ in cells},
        key=lambda r: (r.method != BASELINE, r.method, r.variant, r.setting),
    )
    labels = _row_labels(row_keys, runs)
    baselines = [r for r in row_keys if r.method == BASELINE and not r.variant]
    baseline = max(
        baselines,
        key=lambda r: sum(len(c.runs) for (k, _), c in cells.items() if k == r),
        default=None,
    )
    fractions = _columns(runs)
    classes = max((r.classes for r in runs), key=len, default=())
    board = Board(
        key[0],
        key[1],
        key[2],
        fractions,
        {r: labels[r] for r in row_keys},
        cells,
        classes,
        baseline,
    )
    if baseline is not None:
        board.lower = next(
            (
                (f, cells[(baseline, f)])
                for f in sorted({f for _, f in cells})
                if (baseline, f) in cells
            ),
            None,
        )
        if (baseline, 1.0) in cells:
            board.upper = (1.0, cells[(baseline, 1.0)])
    for fraction in fractions:
        _rank_and_test(board, fraction)
    return board


def _columns(runs: Sequence[RunRecord]) -> list[float]:
    """The labeled fractions of a board; 1.0 only when a method other than the baseline has it
    (otherwise the upper bound is a reference row, not a column)."""
    fractions = sorted({r.labeled for r in runs})
    if len(fractions) > 1 and all(r.method == BASELINE for r in runs if r.labeled == 1.0):
        fractions = [f for f in fractions if f != 1.0]
    return fractions


def _row_labels(rows: Sequence[RowKey], runs: Sequence[RunRecord]) -> dict[RowKey, str]:
    """``method``, ``method[variant]``, plus the differing params when one method+variant has
    several settings (they are reported apart, never averaged)."""
    params = {RowKey(r.method, r.variant, r.setting): r.params for r in runs}
    labels = {}
    for row in rows:
        base = row.method + (f"[{row.variant}]" if row.variant else "")
        siblings = [r for r in rows if (r.method, r.variant) == (row.method, row.variant)]
        if len(siblings) > 1:
            differing = differing_params([params[r] for r in siblings])
            shown = ", ".join(f"{k}={params[row].get(k, '?')}" for k in differing[:3])
            base += f" ({shown}{', ...' if len(differing) > 3 else ''})"
        labels[row] = base
    return labels


def differing_params(settings: Sequence[dict[str, str]]) -> list[str]:
    """Config keys whose values differ between settings (seed and fraction excluded)."""
    keys = set().union(*settings) - PER_RUN_PARAMS
    return sorted(k for k in keys if len({s.get(k) for s in settings}) > 1)


def _rank_and_test(board: Board, fraction: float) -> None:
    present = {
        row: board.cells[(row, fraction)] for row in board.rows if (row, fraction) in board.cells
    }
    for metric, better in (("dice", max), ("hd95", min), ("assd", min)):
        scored = {
            row: cell.stat(metric).mean for row, cell in present.items() if cell.stat(metric).n
        }
        if scored:
            top = better(scored.values())
            board.best[(fraction, metric)] = tuple(r for r, v in scored.items() if v == top)
    best = board.best.get((fraction, "dice"), (None,))[0]  # ties: the first row in order
    for attr, reference in (("p_supervised", board.baseline), ("p_best", best)):
        if reference is None or reference not in present:
            continue
        ref_cases = present[reference].pooled_cases()
        others = [row for row in present if row != reference]
        raw = [paired_wilcoxon(present[row].pooled_cases(), ref_cases) for row in others]
        for row, p in zip(others, holm(raw), strict=True):
            setattr(present[row], attr, p)


# -- consistency check ----------------------------------------------------------------------------


def check(records: Sequence[RunRecord], seeds: Sequence[int] | None = None) -> list[str]:
    """Problems that would make a published table misleading: a cell (dataset, profile, method,
    variant, fraction) whose runs differ in config other than the seed, or that lacks seeds
    (``seeds``, else every seed seen on its board)."""
    problems = []
    cells: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        cells[(r.board, r.method, r.variant, r.labeled)].append(r)
    for (board, method, variant, labeled), runs in sorted(cells.items()):
        settings = {r.setting: r.params for r in runs}
        if len(settings) > 1:
            keys = differing_params(list(settings.values()))
            problems.append(
                f"{_cell_name(board, method, variant, labeled)}: runs differ in "
                f"config other than the seed ({', '.join(keys)})"
            )
    boards: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        boards[r.board].append(r)
    for board, runs in sorted(boards.items()):
        expected = set(seeds) if seeds else {r.seed for r in runs}
        columns = _columns(runs)
        wanted = {(r.method, r.variant, f) for r in runs for f in columns}
        wanted |= {(r.method, r.variant, r.labeled) for r in runs}
        for method, variant, labeled in sorted(wanted):
            have = {r.seed for r in cells.get((board, method, variant, labeled), [])}
            missing = ", ".join(map(str, sorted(expected - have)))
            if missing:
                problems.append(
                    f"{_cell_name(board, method, variant, labeled)}: {len(have)} "
                    f"of {len(expected)} seeds (missing {missing})"
                )
    return problems


def _cell_name(board: tuple[str, str, str], method: str, variant: str, labeled: float) -> str:
    experiment, dataset, profile = board
    name = method + (f"[{variant}]" if variant else "")
    return f"{experiment} ({dataset}, {profile}) {name} labeled {labeled:g}"
