"""Hand-made runs for the leaderboard tests: record documents with real params (today's method
defaults plus overrides), per-case rows of both checkpoints and the split, and an MLflow store
built from them through MlflowTracker, without training anything."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from spinebench.data.splits import Split
from spinebench.engine.tracking import MlflowTracker, Tag
from spinebench.leaderboard.defaults import default_params
from spinebench.leaderboard.record_files import sealed
from spinebench.leaderboard.records import RunRecord, record_of
from spinebench.stats import nanmean

#: MRSpineSeg's 19 classes; the four thoracic ones are often absent from a case.
CLASSES = (
    "S", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9",
    "L5/S", "L4/L5", "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12", "T10/T11", "T9/T10",
)  # fmt: skip
OFTEN_ABSENT = {"T10", "T9", "T10/T11", "T9/T10"}
CASES = tuple(f"case{i:02d}" for i in range(12))
SPLIT = Split(
    train=tuple(f"train{i:02d}" for i in range(30)),
    val=tuple(f"val{i:02d}" for i in range(6)),
    test=CASES,
    labeled=("train00", "train01"),
)
EXPERIMENT = "spinebench/synthetic"
#: Mean Dice level of each method (the per-case values scatter around it).
LEVEL = {"supervised": 0.55, "mean_teacher": 0.57, "unimatch": 0.60, "clipseg": 0.15, "cps4": 0.59}


def present(case: int, name: str) -> bool:
    """Whether the truth of a test case contains the class (thoracic ones in a third)."""
    return name not in OFTEN_ABSENT or case % 3 == 0


def per_case_lines(level: float, salt: str) -> list[str]:
    """``per_case.csv`` lines: foreground means, per-class values and present/ columns."""
    rng = np.random.default_rng(int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16))
    header = ["case", "dice", "hd95", "assd"]
    header += [f"{m}/{c}" for m in ("dice", "hd95", "assd") for c in CLASSES]
    header += [f"present/{c}" for c in CLASSES]
    lines = [",".join(header)]
    for i, case in enumerate(CASES):
        dice = {}
        for c in CLASSES:
            # absent from the truth: scored NaN (absent from both) or 0 (predicted anyway)
            value = min(1.0, max(0.0, level + 0.02 * i + rng.normal(0, 0.05)))
            dice[c] = value if present(i, c) else (0.0 if rng.random() < 0.2 else math.nan)
        hd95 = {c: math.nan if math.isnan(v) else 40 * (1 - v) for c, v in dice.items()}
        assd = {c: math.nan if math.isnan(v) else 10 * (1 - v) for c, v in dice.items()}
        values = [nanmean(dice.values()), nanmean(hd95.values()), nanmean(assd.values())]
        values += [*dice.values(), *hd95.values(), *assd.values()]
        flags = [int(present(i, c)) for c in CLASSES]
        lines.append(",".join([case, *map(str, values), *map(str, flags)]))
    return lines


def metrics_of(lines: list[str], prefix: str) -> dict[str, float]:
    """The run's ``<prefix>/*`` metrics, as the engine's summarize derives them."""
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    out = {}
    for column in header[1:]:
        if column.startswith("present/"):
            continue
        value = nanmean(float(r[column]) for r in rows)
        if not math.isnan(value):
            out[f"{prefix}/{column}"] = value
    return out


def params(
    method: str,
    labeled: float,
    seed: int,
    sets: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, str]:
    """Today's defaults of the method (quick profile), the cell and ``sets``, without ``drop``."""
    found = dict(default_params(method, "quick", "synthetic") or {})
    found |= {"run.labeled": str(labeled), "run.seed": str(seed), "data.dir": "None"}
    found |= {"train.threads": "1", **(sets or {})}
    return {k: v for k, v in found.items() if k not in drop}


def document(
    method: str,
    labeled: float,
    seed: int,
    *,
    sets: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    variant: str = "",
    level: float | None = None,
    last: bool = True,
    last_shift: float = -0.03,
    coverage: bool = True,
    start: int = 0,
    experiment: str = EXPERIMENT,
) -> dict[str, Any]:
    """A sealed record document of one FINISHED run. ``last=False``: a run made before the
    last checkpoint was tested; ``coverage=False``: before presence was recorded."""
    mean = (LEVEL[method] if level is None else level) + 0.004 * seed + labeled / 10
    salt = f"{method}-{labeled}-{seed}-{variant}-{json.dumps(sets, sort_keys=True)}-{start}"
    best = per_case_lines(mean, salt)
    last_lines = per_case_lines(mean + last_shift, salt + "last") if last else None
    metrics = metrics_of(best, "test")
    if last_lines:
        metrics |= metrics_of(last_lines, "test_last")
    if coverage:
        metrics["test/cases"] = float(len(CASES))
        for c in CLASSES:
            metrics[f"test/coverage/{c}"] = float(sum(present(i, c) for i in range(len(CASES))))
    else:
        keep = [i for i, name in enumerate(best[0].split(",")) if not name.startswith("present/")]
        best = [",".join(line.split(",")[i] for i in keep) for line in best]
        if last_lines:
            last_lines = [",".join(line.split(",")[i] for i in keep) for line in last_lines]
    tags = {
        Tag.METHOD: method,
        Tag.DATASET: "synthetic",
        Tag.PROFILE: "quick",
        Tag.LABELED: str(labeled),
        Tag.SEED: str(seed),
        Tag.SPLIT_HASH: SPLIT.hash(),
        **({Tag.VARIANT: variant} if variant else {}),
    }
    run_id = hashlib.sha256(salt.encode()).hexdigest()[:32]
    return sealed(
        {
            "run_id": run_id,
            "experiment": experiment,
            "start_time": start,
            "tags": tags,
            "params": params(method, labeled, seed, sets, drop),
            "metrics": metrics,
            "per_case": {"best": best, "last": last_lines},
            "split": json.loads(SPLIT.to_json()),
        }
    )


def record(method: str, labeled: float, seed: int, **kwargs: Any) -> RunRecord:
    return record_of(document(method, labeled, seed, **kwargs))


def seeds(method: str, labeled: float, n: int = 3, **kwargs: Any) -> list[dict[str, Any]]:
    return [document(method, labeled, s, **kwargs) for s in range(n)]


def readme_like() -> list[dict[str, Any]]:
    """Runs like the README's: five methods at 0.05 and 0.2 (three seeds; cps4 at 0.05 only as
    the sweep variant ``reliable``, whose config is today's default), the upper bound, budget
    studies and ablations, cps4 under its older default, a one-seed outlier on the main board
    (mean_teacher at 0.05) and one among the studies (cps4[agree])."""
    docs = []
    for fraction in (0.05, 0.2):
        for method in ("supervised", "unimatch", "clipseg"):
            docs += seeds(method, fraction)
    docs += seeds("supervised", 1.0, level=0.7)
    docs += [document("mean_teacher", 0.05, 0, level=0.7)]  # one seed, the highest Dice
    docs += seeds("mean_teacher", 0.2)
    docs += seeds("cps4", 0.2)
    reliable = {"method.pseudo_label": "reliable"}
    docs += seeds("cps4", 0.05, sets=reliable, variant="reliable")
    docs += seeds("cps4", 0.05, sets={"method.pseudo_label": "fused"}, level=0.52)
    docs += seeds("cps4", 0.05, sets={"method.token_loss": "False"}, variant="no_token_loss")
    docs += [document("cps4", 0.05, 0, sets={"method.pseudo_label": "agree"}, variant="agree",
                      level=0.75)]  # fmt: skip
    docs += seeds("supervised", 0.05, sets={"train.iterations": "4000"}, variant="it4000")
    docs += seeds("mean_teacher", 0.05, sets={"train.iterations": "4000"}, variant="it4000")
    return docs


def build_store(uri: str, docs: list[dict[str, Any]], tmp: Path) -> None:
    """Log each document as a FINISHED MLflow run (tags, params, metrics, per-case files,
    split), through the same tracker the engine uses."""
    trackers: dict[str, MlflowTracker] = {}
    for i, doc in enumerate(docs):
        experiment = doc["experiment"]
        tracker = trackers.setdefault(experiment, MlflowTracker(uri, experiment))
        tags = doc["tags"]
        name = f"{tags[Tag.METHOD]}-l{tags[Tag.LABELED]}-s{tags[Tag.SEED]}"
        tracker.start(name, tags, doc["params"])
        metrics = {k: math.nan if v is None else v for k, v in doc["metrics"].items()}
        tracker.log_metrics(metrics, step=0)
        folder = tmp / f"artifacts-{i}"
        folder.mkdir(parents=True)
        for file, lines in (
            ("per_case.csv", doc["per_case"]["best"]),
            ("per_case_last.csv", doc["per_case"]["last"]),
        ):
            if lines is not None:
                (folder / file).write_text("\n".join(lines) + "\n")
                tracker.log_artifact(folder / file)
        (folder / "split.json").write_text(SPLIT.to_json())
        tracker.log_artifact(folder / "split.json")
        tracker.end("FINISHED")
