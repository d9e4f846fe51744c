"""One finished run as the leaderboard sees it (:class:`RunRecord`), built from a *record
document*: the dictionary a record file holds and the store reader assembles, so a leaderboard
made from exported records and one made from the store go through the same conversion."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from spinebench.config import UNHASHED
from spinebench.engine.artifacts import PRESENT
from spinebench.engine.tracking import Tag
from spinebench.stats import nanmean

Checkpoint = Literal["best", "last"]
CHECKPOINTS: tuple[Checkpoint, ...] = ("best", "last")
#: Metric prefix of each checkpoint's test results.
PREFIX: dict[Checkpoint, str] = {"best": "test", "last": "test_last"}

#: Params that may differ between the runs of one row: they select the cell (seed, fraction),
#: change nothing a run computes (``config.UNHASHED``), or say where the data lives (which
#: cases were used is the split hash's business, not the path's).
PER_RUN_PARAMS = frozenset({"run.seed", "run.labeled", "data.dir"} | UNHASHED)

PerCase = dict[str, dict[str, float]]  # case id -> {"dice": ..., "dice/<class>": ..., ...}


@dataclass(frozen=True)
class RunRecord:
    """One FINISHED run: who it is (tags), its config (params), its ``test*/`` metrics and the
    per-case scores of both checkpoints (``per_case_last`` is empty for runs that predate it)."""

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
    per_case: PerCase
    per_case_last: PerCase
    classes: tuple[str, ...]

    @property
    def board(self) -> tuple[str, str, str]:
        return (self.experiment, self.dataset, self.profile)

    @property
    def setting(self) -> dict[str, str]:
        """The config minus what may differ between the runs of one row."""
        return {k: v for k, v in self.params.items() if k not in PER_RUN_PARAMS}

    def has(self, checkpoint: Checkpoint) -> bool:
        """Whether the run was tested with that checkpoint (older runs: the best one only)."""
        return f"{PREFIX[checkpoint]}/dice" in self.metrics

    def metric(self, name: str, checkpoint: Checkpoint = "best") -> float:
        return self.metrics.get(f"{PREFIX[checkpoint]}/{name}", math.nan)

    def cases(self, checkpoint: Checkpoint = "best") -> PerCase:
        return self.per_case if checkpoint == "best" else self.per_case_last

    def class_dice(self, name: str, checkpoint: Checkpoint = "best") -> float:
        """Mean over the test cases where the class is scored (as ``test/dice/<class>``)."""
        return nanmean([c.get(f"dice/{name}", math.nan) for c in self.cases(checkpoint).values()])

    def coverage(self, name: str) -> int | None:
        """Test cases whose truth contains the class; None for runs that predate recording it."""
        column = f"{PRESENT}/{name}"
        if self.per_case and all(column in c for c in self.per_case.values()):
            return int(sum(c[column] for c in self.per_case.values()))
        value = self.metrics.get(f"test/coverage/{name}")
        return None if value is None else int(value)


# -- record documents -----------------------------------------------------------------------------


def parse_per_case(lines: Sequence[str]) -> tuple[PerCase, tuple[str, ...]]:
    """``per_case.csv`` lines -> scores by case, and the class names in class-map order."""
    reader = csv.DictReader(lines)
    fields = reader.fieldnames or []
    rows = {row["case"]: {k: _float(v) for k, v in row.items() if k != "case"} for row in reader}
    return rows, tuple(k[len("dice/") :] for k in fields if k.startswith("dice/"))


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def number(value: Any) -> float:
    """A metric as a record document stores it (``null`` for NaN, which JSON cannot hold)."""
    return math.nan if value is None else float(value)


def record_of(doc: dict[str, Any]) -> RunRecord:
    """The :class:`RunRecord` of a record document (checked already, or made from the store)."""
    tags = doc["tags"]
    per_case, classes = parse_per_case(doc["per_case"]["best"])
    last = doc["per_case"].get("last")
    per_case_last, _ = parse_per_case(last) if last else ({}, ())
    return RunRecord(
        run_id=doc["run_id"],
        experiment=doc["experiment"],
        dataset=tags[Tag.DATASET],
        profile=tags.get(Tag.PROFILE, "?"),
        method=tags[Tag.METHOD],
        variant=tags.get(Tag.VARIANT, ""),
        labeled=float(tags[Tag.LABELED]),
        seed=int(tags[Tag.SEED]),
        start_time=int(doc["start_time"]),
        # an empty section was once logged as the param "{}": it is no setting
        params={k: v for k, v in doc["params"].items() if v != "{}"},
        metrics={k: number(v) for k, v in doc["metrics"].items()},
        per_case=per_case,
        per_case_last=per_case_last,
        classes=classes,
    )


def ordered(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Oldest first, whatever the source listed first (a store, or files by name)."""
    return sorted(records, key=lambda r: (r.start_time, r.run_id))
