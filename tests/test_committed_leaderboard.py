"""The committed leaderboard (docs/leaderboard/) is exactly what its committed run records
make: rebuilt on this checkout with `spinebench leaderboard --records docs/leaderboard/runs`,
every file is byte for byte the committed one, and no committed file is left over."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spinebench import cli

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "leaderboard"
RECORDS = COMMITTED / "runs"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_the_committed_leaderboard_is_rebuilt_from_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert RECORDS.is_dir() and any(RECORDS.glob("*.json")), "docs/leaderboard/runs is missing"
    out = tmp_path / "board"
    argv = ["spinebench", "leaderboard", "--records", str(RECORDS), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    rebuilt, committed = _files(out), _files(COMMITTED)
    assert sorted(rebuilt) == sorted(committed), "a committed file is stale or one is missing"
    differing = [name for name in rebuilt if rebuilt[name] != committed[name]]
    assert not differing, f"rebuild the board: {differing} differ from the records' board"
