"""The spinebench CLI and an MLflow server as a user runs them, for the end-to-end tests: tiny
settings, a subprocess environment with its own runs folder, a sweep interrupted with SIGINT (as
Ctrl-C) at a chosen moment, ``mlflow server`` on a free localhost port, and a store's cell runs
(every run but a sweep's parent)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

TINY_SETTINGS = (
    "data.cases=8 data.image_size=32 model.channels=[4,8,16,32,64] train.iterations=4 "
    "train.val_every=2 train.log_every=2 train.checkpoint_every=2 train.batch_size=4 "
    "train.unlabeled_batch_size=4 eval.overlays=0"
)
TINY = [arg for pair in TINY_SETTINGS.split() for arg in ("--set", pair)]


def cli_env(root: Path, cache: Path) -> dict[str, str]:
    """This process's environment (PYTHONPATH included: the CLI imports the same source) with
    the runs under ``root`` and the shared data cache."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        SPINEBENCH_RUNS=str(root / "runs"),
        SPINEBENCH_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        COLUMNS="200",
    )
    return env


def cli(args: list[str], root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spinebench", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def cell_statuses(db: Path) -> list[tuple[str, int]]:
    """(status, number of logged metric values) of every cell run (a run with a method tag, so
    not a sweep's parent), straight from the sqlite file."""
    if not db.is_file():
        return []
    query = (
        "SELECT r.status, (SELECT COUNT(*) FROM metrics m WHERE m.run_uuid = r.run_uuid) "
        "FROM runs r WHERE EXISTS (SELECT 1 FROM tags t "
        "WHERE t.run_uuid = r.run_uuid AND t.key = 'spinebench.method')"
    )
    try:
        with sqlite3.connect(db, timeout=10) as con:
            return list(con.execute(query))
    except sqlite3.OperationalError:  # tables not created yet
        return []


def interrupt(
    args: list[str],
    root: Path,
    env: dict[str, str],
    when: Callable[[list[tuple[str, int]]], bool],
) -> subprocess.CompletedProcess:
    """Run the CLI and send it SIGINT once ``when(cell_statuses)`` holds (or let it end)."""
    db = root / "runs" / "mlflow.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spinebench", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if when(cell_statuses(db)):
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cell_runs(
    client: MlflowClient, experiment: str = "spinebench/synthetic", filter_string: str = ""
) -> list[Run]:
    """The experiment's cell runs: every run but a sweep's parent (which has no method tag)."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string) if exp else []
    return [r for r in runs if "spinebench.method" in r.data.tags]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(backend_uri: str, folder: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 over ``backend_uri`` (its log and proxied
    artifacts in ``folder``) until the block ends; its URL. Stopped by its process group id."""
    port = free_port()
    log_file = folder / "server.log"
    log = log_file.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            backend_uri,
            "--artifacts-destination",
            str(folder / "server-artifacts"),
        ],
        cwd=folder,
        # no job consumers: seven more processes the pages never use
        env={
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(log_file.read_text()[-2000:])
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
