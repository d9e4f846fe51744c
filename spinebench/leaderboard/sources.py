"""Where a leaderboard's runs come from: the tracking store (read-only) or a folder of record
files. Both give record documents, and :func:`~spinebench.leaderboard.records.record_of` turns
either into the same :class:`RunRecord`."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from spinebench.engine.artifacts import PER_CASE, PER_CASE_LAST, SPLIT
from spinebench.engine.tracking import MlflowTracker, Tag, TrackedRun
from spinebench.errors import SpinebenchError, shown
from spinebench.leaderboard import record_files
from spinebench.leaderboard.records import RunRecord, ordered, record_of

#: Tags a record keeps: spinebench's own and the code's commit (MLflow's others name local
#: users and paths).
KEPT_TAGS = (Tag.PREFIX, Tag.GIT_COMMIT)


def store_documents(
    uri: str, experiment: str | None, *, with_split: bool = True
) -> list[dict[str, Any]]:
    """A record document for every FINISHED spinebench run whose tags name its cell (the
    others are one warning); the store is neither created nor changed."""
    tracker = MlflowTracker(uri, experiment, create=False)
    documents, left_out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in tracker.runs("FINISHED"):
            problem = _tag_problem(run.tags)
            if problem is None:
                documents.append(_document(tracker, run, Path(tmp) / run.run_id, with_split))
            else:
                left_out.append(f"{run.run_id} ({problem})")
    if left_out:
        shown_runs = "; ".join(left_out[:3]) + ("; ..." if len(left_out) > 3 else "")
        warnings.warn(
            f"{len(left_out)} finished run(s) left out of the leaderboard, their tags do not "
            f"say which cell they belong to: {shown_runs}; set the tags or delete the runs",
            stacklevel=2,
        )
    return documents


#: The tags a run needs to have a place on a board, and how each is read.
REQUIRED_TAGS = {Tag.DATASET: str, Tag.METHOD: str, Tag.LABELED: float, Tag.SEED: int}


def _tag_problem(tags: dict[str, str]) -> str | None:
    """What keeps a run's tags from naming its cell (edited by hand, logged by another tool),
    or None."""
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


def _document(tracker: MlflowTracker, run: TrackedRun, tmp: Path, with_split: bool) -> dict:
    def lines(name: str) -> list[str] | None:
        path = tracker.download(run.run_id, name, tmp)
        return path.read_text().splitlines() if path is not None else None

    best = lines(PER_CASE)
    if best is None:
        raise SpinebenchError(
            f"run {run.run_id} is FINISHED but has no {PER_CASE}; delete it or rerun it"
        )
    split = None
    if with_split:
        path = tracker.download(run.run_id, SPLIT, tmp)
        split = json.loads(path.read_text()) if path is not None else None
    return record_files.sealed(
        {
            "run_id": run.run_id,
            "experiment": run.experiment,
            "start_time": run.start_time,
            "tags": {k: v for k, v in run.tags.items() if k.startswith(KEPT_TAGS)},
            "params": run.params,
            "metrics": {k: v for k, v in run.metrics.items() if k.startswith("test")},
            "per_case": {"best": best, "last": lines(PER_CASE_LAST)},
            "split": split,
        }
    )


def load_store(uri: str, experiment: str | None = None) -> list[RunRecord]:
    """Every FINISHED spinebench run of the experiment (default: every experiment)."""
    return ordered([record_of(d) for d in store_documents(uri, experiment, with_split=False)])


def load_records(folder: Path, experiment: str | None = None) -> list[RunRecord]:
    """The runs of a folder of record files (every file checked), optionally one experiment's."""
    docs = record_files.read_folder(folder)
    if experiment is not None:
        docs = [d for d in docs if d["experiment"] == experiment]
        if not docs:
            raise SpinebenchError(f"--records {folder} holds no run of experiment {experiment!r}")
    return ordered([record_of(d) for d in docs])


def export(uri: str, experiment: str | None, out: Path) -> list[Path]:
    """Every FINISHED run as a record file in ``out``; each is checked before it is written,
    so what export writes, ``leaderboard --records`` reads."""
    if out.exists() and not out.is_dir():
        raise SpinebenchError(f"--out {out} is a file; pass a folder for the record files")
    docs = store_documents(uri, experiment)
    if not docs:
        raise SpinebenchError(
            "no FINISHED spinebench runs to export; check --experiment/--tracking-uri"
        )
    for doc in docs:
        problem = record_files.check(doc)
        if problem:
            raise SpinebenchError(f"run {doc['run_id']} cannot be exported: its record {problem}")
    return record_files.write_folder(docs, out)
