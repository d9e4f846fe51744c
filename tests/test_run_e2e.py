"""End to end: the CLI trains, evaluates and records a run exactly as DESIGN.md lays out."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from conftest import TINY
from mlflow.tracking import MlflowClient

from spinebench.engine.run import execute
from spinebench.runinfo import RunRequest


def _client(runs: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def _runs(runs: Path) -> list[mlflow.entities.Run]:
    client = _client(runs)
    exp = client.get_experiment_by_name("spinebench/synthetic")
    return client.search_runs([exp.experiment_id]) if exp else []


def _cli(*args: str, env_extra: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "spinebench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kw,
    )


def _request(**kw) -> RunRequest:
    overrides = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    return RunRequest(
        method=kw.pop("method", "supervised"),
        labeled=kw.pop("labeled", 0.5),
        overrides=overrides + kw.pop("extra", []),
        **kw,
    )


def test_cli_run_is_tracked_with_the_design_layout(isolated_env: Path):
    proc = _cli("run", "--method", "supervised", "--labeled", "0.5", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "test/dice" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    (run,) = _runs(isolated_env)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "supervised-l0.5-s0"
    # output captured, so not a terminal: plain progress lines, written while training
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("train ")]
    assert lines[-1].startswith("train 6/6 loss ") and " it/s eta " in lines[-1], proc.stderr
    assert any(ln.startswith("train 3/6 loss ") for ln in lines), proc.stderr
    m = run.data.metrics
    for key in (
        "test/dice",
        "test/hd95",
        "test/assd",
        "val/dice",
        "train/loss",
        "perf/train/iter_per_s",
        "perf/train/data_wait_frac",
        "perf/train/peak_mem_mb",
    ):
        assert key in m, key
    assert 0 <= m["test/dice"] <= 1 and m["test/hd95"] >= 0
    assert any(k.startswith("test/dice/L3") for k in m)
    tags = run.data.tags
    for key in (
        "method",
        "dataset",
        "labeled",
        "seed",
        "split_hash",
        "version",
        "plugin",
        "profile",
        "config_hash",
    ):
        assert f"spinebench.{key}" in tags, key
    assert tags["spinebench.plugin"].startswith("spinebench==")
    params = run.data.params
    assert params["train.iterations"] == "6" and params["data.image_size"] == "32"
    artifacts = {a.path for a in _client(isolated_env).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "split.json", "per_case.csv", "checkpoint", "overlays"} <= artifacts


def test_same_config_and_seed_give_identical_metrics():
    a = execute(_request())
    b = execute(_request())
    assert a.info.run_id != b.info.run_id
    assert a.metrics["test/dice"] == b.metrics["test/dice"]
    assert a.metrics["test/hd95"] == b.metrics["test/hd95"]


def test_killed_run_resumes_into_the_same_run_with_the_same_result(isolated_env: Path):
    extra = ["--set", "train.iterations=12", "--set", "train.checkpoint_every=2"]
    args = ["run", "--method", "supervised", "--labeled", "0.5", *TINY, *extra]
    reference = _cli(*args, "--experiment", "reference")
    assert reference.returncode == 0, reference.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "spinebench", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt_root = isolated_env / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpt_root.glob("*/last.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(ckpt_root.glob("*/last.pt")), "no checkpoint appeared before the kill"
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr
    runs = _runs(isolated_env)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    ref = _client(isolated_env).search_runs(
        [_client(isolated_env).get_experiment_by_name("reference").experiment_id]
    )[0]
    assert math.isclose(
        runs[0].data.metrics["test/dice"], ref.data.metrics["test/dice"], rel_tol=0, abs_tol=1e-9
    )
