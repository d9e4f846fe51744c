"""Finished spinebench runs read from the tracking store, as the leaderboard needs them."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from spinebench.config import UNHASHED
from spinebench.engine.artifacts import PER_CASE
from spinebench.engine.tracking import MlflowTracker, Tag, TrackedRun
from spinebench.errors import shown

# Params that may differ between the runs of one row: they select the cell or do not change
# what a run computes.
PER_RUN_PARAMS = {"run.seed", "run.labeled"} | UNHASHED


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
        kept = {k: v for k, v in self.params.items() if k not in PER_RUN_PARAMS}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def board(self) -> tuple[str, str, str]:
        return (self.experiment, self.dataset, self.profile)


#: The tags a run needs to have a place on a board, and how each is read.
REQUIRED_TAGS = {Tag.DATASET: str, Tag.METHOD: str, Tag.LABELED: float, Tag.SEED: int}


def load_runs(uri: str, experiment: str | None = None) -> list[RunRecord]:
    """Every FINISHED spinebench run of the experiment (default: all experiments). A run
    whose cell tags are missing or unreadable (edited by hand, logged by another tool) has no
    place on a board: it is left out with one warning line, and the others still count."""
    tracker = MlflowTracker(uri, experiment, create=False)
    records, left_out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in tracker.runs("FINISHED"):
            problem = _tag_problem(run.tags)
            if problem is None:
                records.append(_record(tracker, run, Path(tmp)))
            else:
                left_out.append(f"{run.run_id} ({problem})")
    if left_out:
        shown_runs = "; ".join(left_out[:3]) + ("; ..." if len(left_out) > 3 else "")
        warnings.warn(
            f"{len(left_out)} finished run(s) left out of the leaderboard, their tags do not "
            f"say which cell they belong to: {shown_runs}; set the tags or delete the runs",
            stacklevel=2,
        )
    return records


def _tag_problem(tags: dict[str, str]) -> str | None:
    """What keeps a run's tags from naming its cell, or None."""
    missing = [tag for tag in REQUIRED_TAGS if tag not in tags]
    if missing:
        return f"no tag {', '.join(missing)}"
    for tag, kind in REQUIRED_TAGS.items():
        try:
            kind(tags[tag])
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            return f"{tag} is {shown(tags[tag], 40)}, not {what}"
    return None


def _record(tracker: MlflowTracker, run: TrackedRun, tmp: Path) -> RunRecord:
    tags = run.tags
    per_case, classes = _read_per_case(tracker, run.run_id, tmp)
    return RunRecord(
        run_id=run.run_id,
        experiment=run.experiment,
        dataset=tags[Tag.DATASET],
        profile=tags.get(Tag.PROFILE, "?"),
        method=tags[Tag.METHOD],
        variant=tags.get(Tag.VARIANT, ""),
        labeled=float(tags[Tag.LABELED]),
        seed=int(tags[Tag.SEED]),
        start_time=run.start_time,
        params=run.params,
        metrics=run.metrics,
        per_case=per_case,
        classes=classes,
    )


def _read_per_case(
    tracker: MlflowTracker, run_id: str, tmp: Path
) -> tuple[dict[str, dict[str, float]], tuple[str, ...]]:
    """``per_case.csv`` of a run: scores by case, and the class names in class-map order."""
    path = tracker.download(run_id, PER_CASE, tmp / run_id)
    if path is None:
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
