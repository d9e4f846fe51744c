"""The committed leaderboard (docs/leaderboard/) is exactly what its committed run records
make: rebuilt on this checkout with `spinebench leaderboard --records docs/leaderboard/runs`,
every file is byte for byte the committed one, and no committed file is left over."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from spinebench import cli

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "leaderboard"
RECORDS = COMMITTED / "runs"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _stale(committed: Path, rebuilt: Path) -> list[str]:
    """Files missing on either side or differing in any byte."""
    a, b = _files(committed), _files(rebuilt)
    return sorted(set(a) ^ set(b)) + [n for n in sorted(set(a) & set(b)) if a[n] != b[n]]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert RECORDS.is_dir() and any(RECORDS.glob("*.json")), "docs/leaderboard/runs is missing"
    out = tmp_path_factory.mktemp("board")
    argv = ["spinebench", "leaderboard", "--records", str(RECORDS), "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    assert exit_info.value.code == 0
    return out


def test_the_committed_leaderboard_is_rebuilt_from_its_records(rebuilt: Path) -> None:
    assert not _stale(COMMITTED, rebuilt), "rebuild docs/leaderboard from its records"


def test_a_stale_or_extra_committed_file_is_caught(rebuilt: Path, tmp_path: Path) -> None:
    committed = tmp_path / "committed"
    shutil.copytree(COMMITTED, committed)
    (committed / "leaderboard.md").write_text("# an older board\n")
    (committed / "old-figure.png").write_bytes(b"png")
    assert _stale(committed, rebuilt) == ["old-figure.png", "leaderboard.md"]
