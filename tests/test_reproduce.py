"""``spinebench reproduce``: a tracked run re-run from its record gives bit-identical test
metrics on the CPU, in a separate experiment; a metric that differs is reported by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY
from mlflow.tracking import MlflowClient

from spinebench.engine.run import execute
from spinebench.engine.tracking import Tag
from spinebench.reproduce import record_of, record_warnings, reproduce
from spinebench.runinfo import RunRequest

OVERRIDES = [TINY[i + 1] for i in range(0, len(TINY), 2)] + ["train.threads=1"]


def _run(method: str, *extra: str) -> str:
    result = execute(RunRequest(method=method, labeled=0.5, overrides=[*OVERRIDES, *extra]))
    assert result.info.run_id is not None
    return result.info.run_id


@pytest.mark.parametrize(
    ("method", "extra"),
    [("supervised", ()), ("cps4", ("cps4.pretrain_iterations=3",))],
)
def test_a_reproduced_run_has_identical_test_metrics(
    method: str, extra: tuple[str, ...], isolated_env: Path
) -> None:
    original = _run(method, *extra)
    rep = reproduce(original)
    assert rep.identical, rep.differences
    assert rep.compared >= 3  # test/dice, test/hd95, test/assd and the per-class ones
    again = rep.result.info
    assert again.run_id != original and again.experiment == "spinebench/synthetic/reproduce"
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    tags = client.get_run(str(again.run_id)).data.tags
    assert tags[Tag.REPRODUCES] == original
    assert tags[Tag.TORCH_THREADS] == "1"  # the thread count it ran with is on the record
    assert tags[Tag.LIBRARIES].startswith("torch ") and "numpy " in tags[Tag.LIBRARIES]
    if method == "cps4":  # stage 1 was trained again, not read from the cache
        assert tags.get(Tag.stage_cache("pretrain")) != "hit"


def test_a_changed_metric_is_reported_by_name(isolated_env: Path) -> None:
    original = _run("supervised")
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    dice = client.get_run(original).data.metrics["test/dice"]
    # the record now disagrees: a later value at a later step is the run's metric
    client.log_metric(original, "test/dice", dice + 0.01, step=10**6)
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench", "reproduce", original],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "1 of" in proc.stdout and "test metrics differ: test/dice" in proc.stdout, proc.stdout
    assert "test/hd95" not in proc.stdout.split("differ:")[-1]


class _Captured(Exception):
    pass


def test_the_original_thread_count_is_used_and_its_absence_is_warned(isolated_env: Path) -> None:
    """``train.threads=0`` means every core, so the config alone does not pin the count that
    CPU reductions depend on: the record's tag does (here as if made on a 3-core machine)."""
    original = _run("supervised", "train.threads=0")
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    assert int(client.get_run(original).data.tags[Tag.TORCH_THREADS]) >= 1
    client.set_tag(original, Tag.TORCH_THREADS, "3")
    seen: dict[str, int] = {}

    def capture(request: RunRequest) -> None:
        assert request.config_file is not None
        seen["threads"] = yaml.safe_load(request.config_file.read_text())["train"]["threads"]
        raise _Captured

    with pytest.raises(_Captured):
        reproduce(original, execute=capture)  # type: ignore[arg-type]
    assert seen == {"threads": 3}
    assert not any("thread" in w for w in record_warnings(record_of(original, None)[0]))
    client.delete_tag(original, Tag.TORCH_THREADS)  # a run made before the tag existed
    warnings = record_warnings(record_of(original, None)[0])
    assert any(Tag.TORCH_THREADS in w and "bit-identical" in w for w in warnings), warnings
