"""Tracked runs -> leaderboards: per-cell statistics, paired significance tests, consistency checks.

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

import csv
import hashlib
import json
import math
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.config import _UNHASHED
from spinebench.engine.tracking import TAG
from spinebench.errors import SpinebenchError

BASELINE = "supervised"
HEADLINE = ("dice", "hd95", "assd")
VARIANT_TAG = f"{TAG}variant"
# Params that may differ between the runs of one row: they select the cell or do not change
# what a run computes.
_PER_RUN_PARAMS = {"run.seed", "run.labeled"} | _UNHASHED


@dataclass(frozen=True)
class RunRecord:
    """One FINISHED tracked run, as the leaderboard needs it."""

    run_id: str
    experiment: str
    dataset: str
    profile: str
    method: str
    variant: str
    labeled: float
    seed: int
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    per_case: dict[str, dict[str, float]]  # case id -> {"dice": ..., "dice/<class>": ...}
    classes: tuple[str, ...]

    @property
    def setting(self) -> str:
        """Digest of the config minus what may differ between seeds and fractions."""
        kept = {k: v for k, v in self.params.items() if k not in _PER_RUN_PARAMS}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def board(self) -> tuple[str, str, str]:
        return (self.experiment, self.dataset, self.profile)


@dataclass(frozen=True)
class RowKey:
    method: str
    variant: str
    setting: str


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # NaN with a single value
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return cls(math.nan, math.nan, 0)
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
        return cls(float(np.mean(finite)), std, len(finite))


@dataclass
class Cell:
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
            _nanmean([c.get(f"dice/{name}", math.nan) for c in r.per_case.values()])
            for r in self.runs
        )

    def pooled_cases(self) -> dict[str, float]:
        """Per-case test Dice averaged over seeds (the unit of the paired tests)."""
        values: dict[str, list[float]] = defaultdict(list)
        for run in self.runs:
            for case, scores in run.per_case.items():
                values[case].append(scores.get("dice", math.nan))
        pooled = {case: _nanmean(v) for case, v in values.items()}
        return {case: v for case, v in pooled.items() if not math.isnan(v)}


@dataclass
class Board:
    """Runs of one (experiment, dataset, profile): rows x labeled fractions."""

    experiment: str
    dataset: str
    profile: str
    fractions: list[float]
    rows: dict[RowKey, str]  # key -> display label, in display order
    cells: dict[tuple[RowKey, float], Cell]
    classes: tuple[str, ...]
    baseline: RowKey | None
    lower: tuple[float, Cell] | None = None
    upper: tuple[float, Cell] | None = None
    best: dict[tuple[float, str], tuple[RowKey, ...]] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        parts = [self.dataset, self.profile]
        if self.experiment != f"spinebench/{self.dataset}":
            parts.insert(0, self.experiment)
        return "-".join("".join(c if c.isalnum() or c in "._" else "-" for c in p) for p in parts)

    def cell(self, row: RowKey, fraction: float) -> Cell | None:
        return self.cells.get((row, fraction))

    def is_best(self, row: RowKey, fraction: float, metric: str) -> bool:
        return row in self.best.get((fraction, metric), ())


# -- reading MLflow -------------------------------------------------------------------------------


def load_runs(uri: str, experiment: str | None = None) -> list[RunRecord]:
    """Every FINISHED spinebench run of the experiment (default: all experiments)."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise SpinebenchError(
            f"no tracking store at {uri}; run `spinebench sweep` first or pass --tracking-uri"
        )
    client = MlflowClient(tracking_uri=uri)
    try:
        if experiment:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise SpinebenchError(
                    f"experiment {experiment!r} does not exist at {uri}; check --experiment"
                )
            experiments = [found]
        else:
            experiments = list(client.search_experiments())
    except SpinebenchError:
        raise
    except Exception as exc:
        raise SpinebenchError(
            f"tracking store {uri} is unreachable ({type(exc).__name__}); "
            "start the server or fix --tracking-uri"
        ) from None
    names = {e.experiment_id: e.name for e in experiments}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in _search_finished(client, list(names)):
            tags = run.data.tags
            if f"{TAG}method" not in tags:
                continue  # not a spinebench run
            per_case, classes = _read_per_case(client, run.info.run_id, Path(tmp))
            records.append(
                RunRecord(
                    run_id=run.info.run_id,
                    experiment=names[run.info.experiment_id],
                    dataset=tags[f"{TAG}dataset"],
                    profile=tags.get(f"{TAG}profile", "?"),
                    method=tags[f"{TAG}method"],
                    variant=tags.get(VARIANT_TAG, ""),
                    labeled=float(tags[f"{TAG}labeled"]),
                    seed=int(tags[f"{TAG}seed"]),
                    start_time=run.info.start_time or 0,
                    params=dict(run.data.params),
                    metrics=dict(run.data.metrics),
                    per_case=per_case,
                    classes=classes,
                )
            )
    return records


def _search_finished(client: Any, experiment_ids: list[str]) -> Iterable[Any]:
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids, "attributes.status = 'FINISHED'", max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def _read_per_case(
    client: Any, run_id: str, tmp: Path
) -> tuple[dict[str, dict[str, float]], tuple[str, ...]]:
    """``per_case.csv`` of a run: scores by case, and the class names in class-map order."""
    try:
        path = Path(client.download_artifacts(run_id, "per_case.csv", str(tmp / run_id)))
    except Exception:
        return {}, ()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = {
            row["case"]: {k: _float(v) for k, v in row.items() if k != "case"} for row in reader
        }
    classes = tuple(k[len("dice/") :] for k in fields if k.startswith("dice/"))
    return rows, classes


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


# -- statistics -----------------------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values; NaN entries are not part of the family."""
    order = sorted(
        (i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i]
    )
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_wilcoxon(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided signed-rank p over the cases both sides scored; NaN if no case differs."""
    from scipy.stats import wilcoxon

    common = sorted(a.keys() & b.keys())
    x = np.array([a[c] for c in common])
    y = np.array([b[c] for c in common])
    if not np.any(x != y):
        return math.nan
    return float(wilcoxon(x, y).pvalue)


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
    cells = {k: Cell(_latest_per_seed(v)) for k, v in grouped.items()}
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
    keys = set().union(*settings) - _PER_RUN_PARAMS
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
