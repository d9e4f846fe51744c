"""A sweep whose output goes to a file still says where it is: the engine's plain progress lines
parse back, a ``--workers`` sweep prints one line naming every running cell (its stage,
iteration and ETA, read from the worker logs) at least every ``SPINEBENCH_PROGRESS_EVERY``
seconds, and a summary line at the end."""

from __future__ import annotations

import io
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from spinebench.engine.progress import StageProgress, line_every_s, parse_line
from spinebench.method import Stage
from spinebench.sweep.worker_logs import cell_state, last_stage_line

TINY = (
    "data.cases=8 data.image_size=32 model.channels=[4,8,16,32,64] train.iterations=40 "
    "train.val_every=20 train.log_every=10 train.checkpoint_every=20 train.batch_size=4 "
    "train.unlabeled_batch_size=4 eval.overlays=0 train.threads=1"
)


def test_plain_progress_lines_parse_back_and_the_newest_names_the_cell(tmp_path: Path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with StageProgress(console) as progress:
        progress.start(Stage(name="pretrain", iterations=20), 0)
        for it in range(1, 21):
            progress.update(it, 0.5 if it % 5 == 0 else None)
    lines = [parse_line(ln) for ln in out.getvalue().splitlines()]
    assert all(line is not None for line in lines) and len(lines) == 10  # one per tenth
    assert [(ln.stage, ln.iteration, ln.total) for ln in lines if ln][-1] == ("pretrain", 20, 20)
    assert parse_line("tracked as run abc in experiment 'x'") is None

    log = tmp_path / "cell.log"
    assert last_stage_line(log) is None  # no log yet
    log.write_text("preparing the slice cache\n")
    assert cell_state(log, 75.0) == "starting (0:01:15)"
    log.write_text("x\n" + out.getvalue().splitlines()[3] + "\nvalidating\n")
    assert cell_state(log, 75.0) == "pretrain 8/20 eta 0:00:00"
    log.write_text(out.getvalue())
    assert cell_state(log, 75.0) == "pretrain 20/20 done (0:01:15)"


def test_the_progress_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SPINEBENCH_PROGRESS_EVERY", "2.5")
    assert line_every_s() == 2.5
    for bad in ("", "soon", "0", "-3"):
        monkeypatch.setenv("SPINEBENCH_PROGRESS_EVERY", bad)
        assert line_every_s() == 60.0


def _worker_logs(root: Path) -> str:
    """The end of every worker's log: why a cell failed, for the assertion message."""
    logs = sorted((root / "runs" / "sweep-logs").glob("*.log"))
    return "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in logs)


def _clock_s(text: str) -> int:
    h, m, s = (int(x) for x in text.split(":"))
    return 3600 * h + 60 * m + s


def test_a_redirected_workers_sweep_prints_progress_lines_and_a_summary(
    tmp_path: Path, shared_cache: Path
):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        SPINEBENCH_RUNS=str(tmp_path / "runs"),
        SPINEBENCH_CACHE=str(shared_cache),
        SPINEBENCH_PROGRESS_EVERY="1",
        COLUMNS="200",
    )
    sets = [arg for pair in TINY.split() for arg in ("--set", pair)]
    cmd = [sys.executable, "-m", "spinebench", "sweep", "--methods", "supervised"]
    cmd += ["--labeled", "0.5", "--seeds", "0,1", "--workers", "2", *sets]
    log = tmp_path / "sweep.log"
    with log.open("w") as handle:  # a file, as `spinebench sweep ... > sweep.log 2>&1`
        proc = subprocess.run(
            cmd, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=600
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:] + _worker_logs(tmp_path)
    beats = [ln for ln in text.splitlines() if re.match(r"sweep \d+:\d\d:\d\d \| ", ln)]
    assert len(beats) >= 2, text[-3000:]
    cells = ("supervised l=0.5 s=0", "supervised l=0.5 s=1")
    for cell in cells:
        assert any(f"| {cell}: " in ln for ln in beats), (cell, beats)
    # a cell seen mid-training: its stage, iteration and ETA from the worker's log
    assert any(re.search(r"s=\d: train \d+/40 eta \d+:\d\d:\d\d", ln) for ln in beats), beats
    assert all("/2 cells: done " in ln for ln in beats)
    times = [_clock_s(ln.split()[1]) for ln in beats]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 15, times  # 1 s asked; load slack
    assert re.search(r"^sweep done in \d+:\d\d:\d\d: 2 cells, finished 2, failed 0$", text, re.M)
