"""`spinebench export` and `spinebench leaderboard --records`: a store built through MlflowTracker
from hand-made runs is exported to record files; the leaderboard made from them is byte for
byte the one made from the store; a malformed or tampered record is refused in one line naming
the file; export neither creates nor changes a store."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from leaderboard_data import build_store, document, seeds

from spinebench import cli
from spinebench.leaderboard.record_files import check, digest, read_file


def _runs() -> list[dict[str, Any]]:
    docs = []
    for fraction in (0.05, 0.2):
        docs += seeds("supervised", fraction) + seeds("unimatch", fraction)
    docs += seeds("cps4", 0.05, sets={"method.token_loss": "False"}, variant="no_token_loss", n=1)
    docs += [document("supervised", 1.0, 0, level=0.7)]
    docs += [document("mean_teacher", 0.05, 0, last=False, coverage=False)]  # an older run
    docs += [document("unimatch", 0.05, 0, experiment="spinebench/other")]
    return docs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    build_store(uri, _runs(), root / "files")
    return uri, root / "mlflow.db"


def _cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["spinebench", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_records_give_the_same_leaderboard_as_the_store(store, tmp_path: Path, capsys, monkeypatch):
    uri, db = store
    before = _digest(db)
    code, out, err = _cli(
        ["export", "--tracking-uri", uri, "--out", "records"], capsys, monkeypatch
    )
    assert code == 0, err
    assert "exported 16 runs to records" in out
    records = sorted((tmp_path / "records").glob("*.json"))
    assert len(records) == 16
    doc = json.loads(records[0].read_text())
    assert set(doc) == {
        "format", "run_id", "experiment", "start_time", "tags", "params", "metrics",
        "per_case", "split", "digest",
    }  # fmt: skip
    assert all(k.startswith(("test/", "test_last/")) for k in doc["metrics"])
    assert all(k.startswith(("spinebench.", "mlflow.source.git")) for k in doc["tags"])
    assert max(p.stat().st_size for p in records) < 64_000  # small, and no checkpoint
    sources = {"from-store": ["--tracking-uri", uri], "from-records": ["--records", "records"]}
    for out_dir, source in sources.items():
        code, _, err = _cli(
            ["leaderboard", *source, "--out", out_dir, "--experiment", "spinebench/synthetic"],
            capsys,
            monkeypatch,
        )
        assert code == 0, err
    from_store, from_records = _files(tmp_path / "from-store"), _files(tmp_path / "from-records")
    assert {"leaderboard.md", "leaderboard.html", "leaderboard.tex", "leaderboard.csv"} <= set(
        from_store
    )
    assert any(name.endswith(".pdf") for name in from_store)
    assert from_store.keys() == from_records.keys()
    for name in from_store:
        assert from_store[name] == from_records[name], name
    assert _digest(db) == before  # neither export nor the leaderboard changed the store
    # what the older run lacks is shown as unknown, never guessed
    md = from_store["leaderboard.md"].decode()
    mean_teacher = next(ln for ln in md.splitlines() if ln.startswith("| mean_teacher |"))
    assert mean_teacher.split(" | ")[2] == "–"


def test_export_creates_no_store(tmp_path: Path, capsys, monkeypatch):
    db = tmp_path / "nowhere" / "mlflow.db"
    code, _, err = _cli(
        ["export", "--tracking-uri", f"sqlite:///{db}", "--out", "records"], capsys, monkeypatch
    )
    assert code == 2
    assert err.startswith("error: no tracking store at") and err.count("\n") == 1
    assert not db.exists() and not (tmp_path / "records").exists()


def _retouch(doc: dict[str, Any]) -> dict[str, Any]:
    """The edit of someone who knows the digest: recompute it."""
    return {**doc, "digest": digest(doc)}


def _set_metric(doc: dict, key: str, value: float) -> dict:
    return _retouch({**doc, "metrics": {**doc["metrics"], key: value}})


def _set_tag(doc: dict, key: str, value: str) -> dict:
    return _retouch({**doc, "tags": {**doc["tags"], key: value}})


def _drop_test_case(doc: dict) -> dict:
    split = {**doc["split"], "test": doc["split"]["test"][:-1]}
    return _retouch({**doc, "split": split})


def _swap_split(doc: dict) -> dict:
    split = {**doc["split"], "test": [*doc["split"]["test"][:-1], "someone_else"]}
    tags = {**doc["tags"], "spinebench.split_hash": "0" * 16}
    return _retouch({**doc, "split": split, "tags": tags})


TAMPERED: list[tuple[str, Callable[[dict], Any], str]] = [
    (
        "edited",
        lambda d: {**d, "metrics": {**d["metrics"], "test/dice": 0.99}},
        "does not match its digest",
    ),
    (
        "metric",
        lambda d: _set_metric(d, "test/dice", 0.99),
        "test/dice=0.99 is not the mean of its per-case rows",
    ),
    ("last", lambda d: _set_metric(d, "test_last/dice", 0.99), "test_last/dice=0.99 is not"),
    (
        "coverage",
        lambda d: _set_metric(d, "test/coverage/T9", 11.0),
        "test/coverage/T9=11.0 but 4 cases",
    ),
    (
        "seed",
        lambda d: _set_tag(d, "spinebench.seed", "7"),
        "param run.seed=0 disagrees with tag spinebench.seed=7",
    ),
    ("split", _drop_test_case, "does not hash to tag spinebench.split_hash"),
    ("cases", _swap_split, "does not hash to tag"),
    ("key", lambda d: {k: v for k, v in d.items() if k != "split"}, "missing keys ['split']"),
    (
        "format",
        lambda d: {**d, "format": "spinebench-record/0"},
        "format is 'spinebench-record/0'",
    ),
    (
        "types",
        lambda d: _retouch({**d, "params": {"train.lr": 0.1}}),
        "params must map strings to strings",
    ),
    (
        "metric-kind",
        lambda d: _retouch({**d, "metrics": {"val/dice": 0.5}}),
        "test/ and test_last/ metrics only",
    ),
    (
        "rows",
        lambda d: _retouch({**d, "per_case": {"best": ["x"], "last": None}}),
        "per_case.best must be a list of CSV lines",
    ),
    ("not-an-object", lambda d: [d], "is not a JSON object"),
]


@pytest.mark.parametrize(("name", "edit", "message"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_a_malformed_or_tampered_record_is_named(name, edit, message, tmp_path: Path):
    doc = document("cps4", 0.05, 0)
    assert check(doc) is None  # the untouched record passes
    path = tmp_path / "record.json"
    path.write_text(json.dumps(edit(doc)))
    with pytest.raises(Exception, match=r"record file .*record\.json") as error:
        read_file(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_command_line_refuses_a_bad_record_in_one_line(tmp_path: Path, capsys, monkeypatch):
    folder = tmp_path / "records"
    folder.mkdir()
    good = document("supervised", 0.05, 0)
    (folder / "good.json").write_text(json.dumps(good))
    (folder / "broken.json").write_text("{not json")
    code, _, err = _cli(["leaderboard", "--records", str(folder)], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: record file {folder / 'broken.json'} is not JSON text")
    (folder / "broken.json").unlink()
    shutil.copy(folder / "good.json", folder / "copy.json")
    code, _, err = _cli(["leaderboard", "--records", str(folder)], capsys, monkeypatch)
    assert code == 2 and "hold the same run" in err and err.count("\n") == 1
    code, _, err = _cli(
        ["leaderboard", "--records", str(folder), "--tracking-uri", "sqlite:///x.db"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and err == "error: pass --records or --tracking-uri, not both\n"
    code, _, err = _cli(["leaderboard", "--records", str(tmp_path / "none")], capsys, monkeypatch)
    assert code == 2 and "is not a folder" in err
