"""Runs -> boards: which row each run belongs to, per-cell statistics, the best of each column
and the paired tests.

A board is one (experiment, dataset, profile); runs are never averaged across boards or
settings. Its *main* rows are one per method at its current defaults
(:mod:`~spinebench.leaderboard.defaults`); every other setting of a method is a *study* row,
named by its variant or by the keys that differ from today's defaults. A row is a setting, not
a tag: a variant whose config equals today's defaults is the method's main row. Conventions
(also on the page and in docs/sweeps.md):

- mean ± sample standard deviation (ddof=1) over seeds; one run per seed (the newest, when a
  cell was rerun with ``--force``);
- a column's best is chosen among rows with at least ``min_seeds`` seeds, and only when two or
  more such rows compete; a row with fewer is shown with its n and never marked best;
- significance: two-sided Wilcoxon signed-rank test on per-case test Dice, paired by case id,
  each case averaged over the seeds first; Holm-corrected within each labeled fraction and
  family (main rows vs supervised, main rows vs the best, study rows vs their method's
  defaults, study rows vs their base's main row where the setting runs another method's
  procedure, ``Method.base_option``); a row is *tied with the best* when that test does not
  reject at ``ALPHA``;
- the lower bound is the supervised main row at each fraction; the upper bound is supervised
  at its defaults with every training case labeled (1.0).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from spinebench.leaderboard.defaults import (
    base_method,
    completed,
    default_params,
    describe,
    differences,
    shared_params,
)
from spinebench.leaderboard.records import Checkpoint, RunRecord, ordered
from spinebench.stats import Stat, holm, nanmean, paired_wilcoxon

BASELINE = "supervised"
HEADLINE = ("dice", "hd95", "assd")
HIGHER_IS_BETTER = {"dice": True, "hd95": False, "assd": False}
ALPHA = 0.05
MIN_SEEDS = 3
MODES = ("best", "last", "both")


@dataclass(frozen=True)
class Row:
    """One setting of one method. ``differs``: the keys that differ from today's defaults
    (empty for a main row); ``variants``: the sweep variant names its runs carry; ``base``: the
    method whose procedure a study runs (cps4 on base ``unimatch``), compared with its main row."""

    method: str
    setting: str
    label: str
    main: bool
    differs: tuple[tuple[str, str], ...] = ()
    variants: tuple[str, ...] = ()
    base: str | None = None


@dataclass
class BoardCell:
    """One row at one labeled fraction: its runs (one per seed) and their statistics."""

    runs: list[RunRecord]
    p_supervised: float = math.nan
    p_best: float = math.nan
    p_default: float = math.nan
    p_base: float = math.nan
    tied: bool = False

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    def n(self, checkpoint: Checkpoint) -> int:
        """Runs tested with the checkpoint (older runs have no last-checkpoint result)."""
        return sum(r.has(checkpoint) for r in self.runs)

    def stat(self, metric: str, checkpoint: Checkpoint = "best") -> Stat:
        return Stat.of(r.metric(metric, checkpoint) for r in self.runs if r.has(checkpoint))

    def class_stat(self, name: str, checkpoint: Checkpoint = "best") -> Stat:
        return Stat.of(r.class_dice(name, checkpoint) for r in self.runs if r.has(checkpoint))

    def pooled_cases(self, checkpoint: Checkpoint = "best") -> dict[str, float]:
        """Per-case test Dice averaged over seeds (the unit of the paired tests)."""
        values: dict[str, list[float]] = defaultdict(list)
        for run in self.runs:
            for case, scores in run.cases(checkpoint).items():
                values[case].append(scores.get("dice", math.nan))
        pooled = {case: nanmean(v) for case, v in values.items()}
        return {case: v for case, v in pooled.items() if not math.isnan(v)}


@dataclass
class Board:
    """Runs of one (experiment, dataset, profile): main and study rows x labeled fractions.
    ``checkpoint``: the one the tables rank and test (``best``: selected on validation);
    ``show_last``: whether the last checkpoint's Dice is shown beside it."""

    experiment: str
    dataset: str
    profile: str
    checkpoint: Checkpoint
    show_last: bool
    min_seeds: int
    fractions: list[float]  # columns of the main board
    main: list[Row]
    studies: list[Row]
    cells: dict[tuple[Row, float], BoardCell]
    classes: tuple[str, ...]
    shared: dict[str, str]  # keys every run shares that differ from the defaults
    unknown_defaults: tuple[str, ...] = ()  # methods whose plugin is not installed here
    upper: BoardCell | None = None
    best: dict[tuple[str, float, str, Checkpoint], frozenset[Row]] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        parts = [self.dataset, self.profile]
        if self.experiment != f"spinebench/{self.dataset}":
            parts.insert(0, self.experiment)
        return "-".join("".join(c if c.isalnum() or c in "._" else "-" for c in p) for p in parts)

    @property
    def title(self) -> str:
        return f"{self.experiment}: {self.dataset}, profile {self.profile}"

    @property
    def baseline(self) -> Row | None:
        return next((r for r in self.main if r.method == BASELINE), None)

    @property
    def study_fractions(self) -> list[float]:
        return sorted({f for (row, f) in self.cells if not row.main})

    def cell(self, row: Row, fraction: float) -> BoardCell | None:
        return self.cells.get((row, fraction))

    def default_row(self, method: str) -> Row | None:
        return next((r for r in self.main if r.method == method), None)

    def full(self, cell: BoardCell, checkpoint: Checkpoint | None = None) -> bool:
        """Whether a cell has the board's full seed count (only such rows can be best)."""
        return cell.n(checkpoint or self.checkpoint) >= self.min_seeds

    def study_group(self, method: str) -> list[Row]:
        """A method's study rows, led by its main row and the main rows of the bases its studies
        run on (shown beside them as the references)."""
        studies = [r for r in self.studies if r.method == method]
        names = dict.fromkeys([method, *(r.base for r in studies if r.base is not None)])
        references = [row for name in names if (row := self.default_row(name)) is not None]
        return references + studies

    def is_best(
        self,
        row: Row,
        fraction: float,
        metric: str,
        checkpoint: Checkpoint | None = None,
        group: str = "",
    ) -> bool:
        """Whether the row is the best of its column in ``group`` (default: its own table)."""
        key = (group or _group(row), fraction, metric, checkpoint or self.checkpoint)
        return row in self.best.get(key, frozenset())

    def columns(self) -> list[tuple[str, Checkpoint]]:
        """The (metric, checkpoint) columns a table shows, in order."""
        cols: list[tuple[str, Checkpoint]] = [("dice", self.checkpoint)]
        if self.show_last:
            cols.append(("dice", "last"))
        return cols + [(m, self.checkpoint) for m in HEADLINE[1:]]

    def class_best(self, fraction: float, rows: Sequence[Row]) -> dict[str, frozenset[Row]]:
        """Per class, the rows with the highest mean Dice among those with full seeds."""
        cells = {r: c for r in rows if (c := self.cell(r, fraction)) is not None}
        return {
            name: best_of(
                {
                    r: c.class_stat(name, self.checkpoint).mean
                    for r, c in cells.items()
                    if self.full(c)
                },
                higher=True,
            )
            for name in self.classes
        }


MAIN = "main"


def studies_group(method: str) -> str:
    return f"studies:{method}"


def _group(row: Row) -> str:
    """Rows compete for "best" within the main board, or within one method's studies (with
    that method's main row beside them)."""
    return MAIN if row.main else studies_group(row.method)


def best_of(values: dict[Row, float], *, higher: bool) -> frozenset[Row]:
    """The rows with the top value; none when fewer than two rows compete (a row alone with
    full seeds beside rows with fewer is the row that was rerun, not the better method)."""
    scored = {r: v for r, v in values.items() if not math.isnan(v)}
    if len(scored) < 2:
        return frozenset()
    top = (max if higher else min)(scored.values())
    return frozenset(r for r, v in scored.items() if v == top)


# -- building -------------------------------------------------------------------------------------


def build_boards(
    records: Sequence[RunRecord],
    *,
    checkpoint: str = "both",
    min_seeds: int = MIN_SEEDS,
) -> list[Board]:
    """Group runs into boards; ``checkpoint`` is best, last or both (best ranked, last shown)."""
    by_board: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for record in ordered(records):
        by_board[record.board].append(record)
    return [_build_board(runs, checkpoint, min_seeds) for _, runs in sorted(by_board.items())]


def setting_digest(setting: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:12]


def _latest_per_seed(runs: Iterable[RunRecord]) -> list[RunRecord]:
    newest: dict[int, RunRecord] = {}
    for run in runs:  # oldest first: the newest wins
        newest[run.seed] = run
    return [newest[s] for s in sorted(newest)]


def _build_board(runs: list[RunRecord], mode: str, min_seeds: int) -> Board:
    first = runs[0]
    shared = shared_params(runs)
    rows, row_of, unknown = _rows(runs, shared)
    grouped: dict[tuple[Row, float], list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[(row_of[run.run_id], run.labeled)].append(run)
    cells = {k: BoardCell(_latest_per_seed(v)) for k, v in grouped.items()}
    main = [r for r in rows if r.main]
    methods_defaults = [
        default_params(m, first.profile, first.dataset) or {} for m in {r.method for r in runs}
    ]
    board = Board(
        experiment=first.experiment,
        dataset=first.dataset,
        profile=first.profile,
        checkpoint="last" if mode == "last" else "best",
        show_last=mode == "both",
        min_seeds=min_seeds,
        fractions=_columns(main, cells),
        main=main,
        studies=[r for r in rows if not r.main],
        cells=cells,
        classes=max((r.classes for r in runs), key=len, default=()),
        shared={k: v for k, v in shared.items() if any(d.get(k) != v for d in methods_defaults)},
        unknown_defaults=unknown,
    )
    baseline = board.baseline
    if baseline is not None and 1.0 not in board.fractions:
        board.upper = cells.get((baseline, 1.0))
    for fraction in board.fractions:
        _rank(board, MAIN, board.main, fraction)
        _test_main(board, fraction)
    for fraction in board.study_fractions:
        for method in dict.fromkeys(r.method for r in board.studies):
            _rank(board, studies_group(method), board.study_group(method), fraction)
        _test_studies(board, fraction)
    return board


def _rows(
    runs: Sequence[RunRecord], shared: dict[str, str]
) -> tuple[list[Row], dict[str, Row], tuple[str, ...]]:
    """Every setting as a row (main rows first, supervised leading), each run's row, and the
    methods whose defaults are unknown here."""
    settings: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    setting = {run.run_id: completed(run.setting, run.method) for run in runs}
    for run in runs:
        settings[(run.method, setting_digest(setting[run.run_id]))].append(run)
    unknown = set()
    drafts = []
    bases = {}
    for (method, digest), members in settings.items():
        example = members[0]
        defaults = default_params(method, example.profile, example.dataset)
        if defaults is None:
            unknown.add(method)
            diffs = {}
        else:
            diffs = differences(setting[example.run_id], defaults, shared)
        variants = tuple(sorted({r.variant for r in members if r.variant}))
        bases[(method, digest)] = base_method(method, setting[example.run_id])
        drafts.append((method, digest, defaults is not None and not diffs, diffs, variants))
    labels = _labels(drafts)
    rows = [
        Row(
            m,
            d,
            labels[(m, d)],
            main,
            tuple(diffs.items()),
            variants,
            None if main else bases[(m, d)],
        )
        for m, d, main, diffs, variants in drafts
    ]
    rows.sort(key=lambda r: (not r.main, r.method != BASELINE, r.method, r.label))
    by_key = {(r.method, r.setting): r for r in rows}
    row_of = {r.run_id: by_key[(r.method, setting_digest(setting[r.run_id]))] for r in runs}
    return rows, row_of, tuple(sorted(unknown))


def _labels(drafts: list[tuple[str, str, bool, dict[str, str], tuple[str, ...]]]) -> dict:
    """One name per setting: the method for its main row, ``method[variant]`` for a variant,
    else ``method (k=v, ...)`` with the keys that differ from today's defaults; names that
    would still collide get the keys that tell them apart, then the setting's digest."""
    labels = {}
    for method, digest, main, diffs, variants in drafts:
        if main:
            labels[(method, digest)] = method
        elif variants:
            labels[(method, digest)] = f"{method}[{'/'.join(variants)}]"
        elif diffs:
            labels[(method, digest)] = f"{method} ({describe(diffs)})"
        else:
            labels[(method, digest)] = f"{method} (defaults unknown: plugin not installed)"
    by_label: dict[str, list[tuple[str, str, dict[str, str]]]] = defaultdict(list)
    for method, digest, _, diffs, _ in drafts:
        by_label[labels[(method, digest)]].append((method, digest, diffs))
    for label, same in by_label.items():
        if len(same) < 2:
            continue
        keys = sorted({k for _, _, d in same for k in d})
        telling = [k for k in keys if len({d.get(k) for _, _, d in same}) > 1]
        for method, digest, diffs in same:
            apart = {k: diffs.get(k, "default") for k in telling}
            suffix = f" ({describe(apart)})" if apart else f" (setting {digest})"
            labels[(method, digest)] = label + suffix
    if len(set(labels.values())) < len(labels):
        labels = {k: f"{v} (setting {k[1]})" for k, v in labels.items()}
    return labels


def _columns(main: Sequence[Row], cells: dict[tuple[Row, float], BoardCell]) -> list[float]:
    """The labeled fractions of the main board; 1.0 only when a method other than the baseline
    has it (otherwise supervised at 1.0 is the upper-bound reference row, not a column)."""
    have = {(row.method, f) for row, f in cells if row in main}
    fractions = sorted({f for _, f in have})
    if 1.0 in fractions and len(fractions) > 1 and all(m == BASELINE for m, f in have if f == 1.0):
        fractions.remove(1.0)
    return fractions


# -- best and the tests ---------------------------------------------------------------------------


def _rank(board: Board, group: str, rows: Sequence[Row], fraction: float) -> None:
    """The best of each shown column among ``rows`` with full seeds."""
    cells = {r: c for r in rows if (c := board.cell(r, fraction)) is not None}
    for metric, checkpoint in board.columns():
        scored = {
            r: c.stat(metric, checkpoint).mean
            for r, c in cells.items()
            if board.full(c, checkpoint)
        }
        board.best[(group, fraction, metric, checkpoint)] = best_of(
            scored, higher=HIGHER_IS_BETTER[metric]
        )


def _paired(
    cells: dict[Row, BoardCell], reference: Row, checkpoint: Checkpoint
) -> dict[Row, tuple[float, bool]]:
    """Holm-adjusted p of each other row against ``reference``, and whether it could be
    tested at all (some test case in common)."""
    ref_cases = cells[reference].pooled_cases(checkpoint)
    others = [r for r in cells if r != reference]
    pooled = {r: cells[r].pooled_cases(checkpoint) for r in others}
    raw = [paired_wilcoxon(pooled[r], ref_cases) for r in others]
    return {
        r: (p, bool(pooled[r].keys() & ref_cases.keys()))
        for r, p in zip(others, holm(raw), strict=True)
    }


def _test_main(board: Board, fraction: float) -> None:
    cells = {r: c for r in board.main if (c := board.cell(r, fraction)) is not None}
    baseline = board.baseline
    if baseline in cells:
        assert baseline is not None
        for row, (p, _) in _paired(cells, baseline, board.checkpoint).items():
            cells[row].p_supervised = p
    best = board.best.get((MAIN, fraction, "dice", board.checkpoint), frozenset())
    leader = next((r for r in board.main if r in best), None)  # ties: the first in order
    if leader is None:
        return
    cells[leader].tied = True
    for row, (p, comparable) in _paired(cells, leader, board.checkpoint).items():
        cells[row].p_best = p
        # NaN with cases in common: no case differs from the best's
        cells[row].tied = comparable and (math.isnan(p) or p >= ALPHA)


def _test_studies(board: Board, fraction: float) -> None:
    """Each study row against its method's main row at this fraction (one Holm family), and
    each study that runs another method's procedure against that method's main row (another)."""
    for cell, p in _holm_against(board, fraction, {r: r.method for r in board.studies}):
        cell.p_default = p
    bases = {r: r.base for r in board.studies if r.base is not None}
    for cell, p in _holm_against(board, fraction, bases):
        cell.p_base = p


def _holm_against(
    board: Board, fraction: float, references: dict[Row, str]
) -> list[tuple[BoardCell, float]]:
    """Holm-adjusted p of each row's cell against the main row of its reference method."""
    pairs: list[tuple[BoardCell, float]] = []
    for row, method in references.items():
        cell, reference = board.cell(row, fraction), board.default_row(method)
        ref_cell = board.cell(reference, fraction) if reference is not None else None
        if cell is None or ref_cell is None:
            continue
        cases = cell.pooled_cases(board.checkpoint)
        pairs.append((cell, paired_wilcoxon(cases, ref_cell.pooled_cases(board.checkpoint))))
    return [(c, p) for (c, _), p in zip(pairs, holm([p for _, p in pairs]), strict=True)]
