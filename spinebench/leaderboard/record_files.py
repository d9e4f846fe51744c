"""Record files: one finished run as a small JSON file (``spinebench export``), so a
leaderboard's data can live in a repository and a third party can submit results in a pull
request. ``spinebench leaderboard --records DIR`` reads them back, checked by :func:`check`.

A record holds the run's ``spinebench.*`` tags, its params (the resolved config), every
``test*/`` metric (NaN as ``null``), the lines of ``per_case.csv`` and ``per_case_last.csv``
(``null`` for runs that predate the last-checkpoint test), the split, and a SHA-256 digest of
all of that. The checks catch a malformed file, an edit made after export (the digest), and an
edit made with the digest recomputed where it leaves the file inconsistent: a headline metric
that is not the mean of its per-case rows, a coverage count that is not the sum of its
``present/`` column, per-case rows that are not the split's test cases, a split that does not
hash to the run's split hash, or a seed or fraction that its tags and params disagree on. What
no file can prove is that its runs happened: ``spinebench reproduce`` re-runs them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spinebench.atomic import write_atomic
from spinebench.data.splits import Split
from spinebench.engine.tracking import Tag
from spinebench.errors import SpinebenchError
from spinebench.leaderboard.records import CHECKPOINTS, PREFIX, number, parse_per_case
from spinebench.stats import nanmean

FORMAT = "spinebench-record/1"
KEYS = (
    "format", "run_id", "experiment", "start_time", "tags", "params", "metrics", "per_case",
    "split", "digest",
)  # fmt: skip
SPLIT_PARTS = ("train", "val", "test", "labeled")
#: Relative tolerance of "a metric is the mean of its per-case rows" (text round trips exactly;
#: only the order of the additions may differ).
TOLERANCE = 1e-9


class RecordError(SpinebenchError):
    """A record file that is malformed or was changed after export."""


def digest(doc: dict[str, Any]) -> str:
    """SHA-256 of the document without its digest, in canonical JSON."""
    body = {k: v for k, v in doc.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def sealed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with the format and its digest set."""
    body = {**doc, "format": FORMAT}
    body["metrics"] = {k: None if _nan(v) else v for k, v in body["metrics"].items()}
    return {**body, "digest": digest(body)}


def dumps(doc: dict[str, Any]) -> str:
    """One key, tag, param, metric or per-case line per line: readable in a pull request."""
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def file_name(doc: dict[str, Any]) -> str:
    tags = doc["tags"]
    cell = f"{tags[Tag.METHOD]}-l{float(tags[Tag.LABELED]):g}-s{tags[Tag.SEED]}"
    return f"{cell}-{doc['run_id']}.json"


def write_folder(docs: Iterable[dict[str, Any]], out: Path) -> list[Path]:
    """Each document into ``out`` as its own file (replacing an earlier export of the run)."""
    out.mkdir(parents=True, exist_ok=True)
    return [write_atomic(out / file_name(doc), dumps(doc)) for doc in docs]


def read_folder(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` under ``folder``, checked; one line naming the first bad file."""
    if not folder.is_dir():
        raise SpinebenchError(
            f"--records {folder} is not a folder; pass the --out folder of `spinebench export`"
        )
    paths = sorted(folder.rglob("*.json"))
    if not paths:
        raise SpinebenchError(f"--records {folder} holds no record files (*.json)")
    docs: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        doc = read_file(path)
        if doc["run_id"] in seen:
            raise RecordError(
                f"record files {seen[doc['run_id']]} and {path} hold the same run "
                f"{doc['run_id']}; keep one"
            )
        seen[doc["run_id"]] = path
        docs.append(doc)
    return docs


def read_file(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"record file {path} is not JSON text ({exc})") from None
    problem = check(doc)
    if problem:
        raise RecordError(f"record file {path}: {problem}")
    return doc


# -- checks ---------------------------------------------------------------------------------------


def check(doc: Any) -> str | None:
    """The first thing wrong with a record document, or None."""
    return _malformed(doc) or _tampered(doc)


def _malformed(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "is not a JSON object"
    if doc.get("format") != FORMAT:
        return f"format is {doc.get('format')!r}, this spinebench reads {FORMAT!r}"
    missing = [k for k in KEYS if k not in doc]
    unknown = sorted(set(doc) - set(KEYS))
    if missing or unknown:
        return f"missing keys {missing}, unknown keys {unknown}"
    if not _text(doc["run_id"]) or not _text(doc["experiment"]):
        return "run_id and experiment must be non-empty strings"
    if not isinstance(doc["start_time"], int) or isinstance(doc["start_time"], bool):
        return "start_time must be an integer (ms since the epoch)"
    for key in ("tags", "params"):
        if not _str_map(doc[key]):
            return f"{key} must map strings to strings"
    tags = doc["tags"]
    for tag in (Tag.METHOD, Tag.DATASET, Tag.LABELED, Tag.SEED):
        if not tags.get(tag):
            return f"tag {tag} is missing"
    if _not_number(tags[Tag.LABELED], float) or _not_number(tags[Tag.SEED], int):
        return f"tags {Tag.LABELED} and {Tag.SEED} must be a number and an integer"
    metrics = doc["metrics"]
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and k.startswith(("test/", "test_last/")) for k in metrics
    ):
        return "metrics must hold test/ and test_last/ metrics only"
    if not all(v is None or _is_number(v) for v in metrics.values()):
        return "metric values must be numbers or null"
    per_case = doc["per_case"]
    if not isinstance(per_case, dict) or set(per_case) != set(CHECKPOINTS):
        return f"per_case must have the keys {list(CHECKPOINTS)}"
    if not _lines(per_case["best"]) or not (per_case["last"] is None or _lines(per_case["last"])):
        return "per_case.best must be a list of CSV lines (per_case.last too, or null)"
    split = doc["split"]
    if split is not None and not (
        isinstance(split, dict)
        and set(split) == set(SPLIT_PARTS)
        and all(isinstance(v, list) and all(_text(c) for c in v) for v in split.values())
    ):
        return f"split must be null or map {', '.join(SPLIT_PARTS)} to lists of case ids"
    return None


def _tampered(doc: dict[str, Any]) -> str | None:
    if doc["digest"] != digest(doc):
        return "its content does not match its digest (edited after `spinebench export`?)"
    tags, params = doc["tags"], doc["params"]
    for key, tag, kind in (("run.labeled", Tag.LABELED, float), ("run.seed", Tag.SEED, int)):
        given = params.get(key)
        if given is not None and (_not_number(given, kind) or kind(given) != kind(tags[tag])):
            return f"param {key}={params[key]} disagrees with tag {tag}={tags[tag]}"
    cases: dict[str, set[str]] = {}
    for checkpoint in CHECKPOINTS:
        lines = doc["per_case"][checkpoint]
        if lines is None:
            continue
        problem = _per_case_problem(lines, doc["metrics"], PREFIX[checkpoint])
        if problem:
            return f"per_case.{checkpoint}: {problem}"
        cases[checkpoint] = set(parse_per_case(lines)[0])
    if len({frozenset(c) for c in cases.values()}) > 1:
        return "per_case.best and per_case.last score different cases"
    split = doc["split"]
    if split is not None:
        parts = Split(**{p: tuple(split[p]) for p in SPLIT_PARTS})
        if tags.get(Tag.SPLIT_HASH) and parts.hash() != tags[Tag.SPLIT_HASH]:
            return f"its split does not hash to tag {Tag.SPLIT_HASH}={tags[Tag.SPLIT_HASH]}"
        if cases["best"] != set(split["test"]):
            return "its per-case rows are not the cases of its split's test part"
    return None


def _per_case_problem(lines: list[str], metrics: dict[str, Any], prefix: str) -> str | None:
    try:
        rows, _ = parse_per_case(lines)
        header = lines[0].split(",")
    except Exception as exc:  # csv raises several kinds
        return f"is not CSV ({exc})"
    if not rows or header[:2] != ["case", "dice"]:
        return "needs a header starting with case,dice and one row per test case"
    if len(rows) != len(lines) - 1:
        return "lists a case twice"
    for name in ("dice", "hd95", "assd"):
        if name not in header:
            continue
        expected = nanmean(r[name] for r in rows.values())
        got = number(metrics.get(f"{prefix}/{name}"))
        if not _close(got, expected):
            return f"{prefix}/{name}={got} is not the mean of its per-case rows ({expected})"
    if prefix == "test":
        for column in (c for c in header if c.startswith("present/")):
            name = column[len("present/") :]
            recorded = metrics.get(f"test/coverage/{name}")
            counted = sum(r[column] for r in rows.values())
            if recorded is not None and recorded != counted:
                return f"test/coverage/{name}={recorded} but {counted:g} cases have the class"
    return None


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _lines(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 1 and all(isinstance(v, str) for v in value)


def _not_number(text: str, kind: type) -> bool:
    try:
        kind(text)
    except ValueError:
        return True
    return False
