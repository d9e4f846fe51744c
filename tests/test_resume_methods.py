"""A run stopped by SIGTERM mid-training and resumed ends with exactly the test metrics of the
run that was never stopped, for the methods with the most random state per step (UniMatch's
CutMix boxes and feature dropout, CPS's two networks, BCP's copy-paste box across its two
stages). RELIABILITY.md §2 holds the same for Mean Teacher with a torn checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from test_reliability import FAST, TINY, _request, _runs, _test_metrics

from spinebench import plugins
from spinebench.engine.run import Interrupted, execute


@pytest.mark.parametrize("method", ["unimatch", "cps", "bcp"])
def test_a_run_stopped_mid_training_resumes_to_the_same_metrics(
    method: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--method", method, "--labeled", "0.5", *TINY, *FAST,
            "--set", "train.iterations=8", "--set", "train.checkpoint_every=2",
            "--set", "train.val_every=4", "--set", "train.log_every=4"]  # fmt: skip
    reference = execute(_request(args, experiment="reference"))
    cls = plugins.methods()[method]
    original = cls.after_optimizer_step

    def stop_after_step_5(self: Any, stage: Any, step: Any) -> None:
        original(self, stage, step)
        if step.iteration == 4:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(cls, "after_optimizer_step", stop_after_step_5)
    with pytest.raises(Interrupted):
        execute(_request(args))
    monkeypatch.setattr(cls, "after_optimizer_step", original)
    (stopped,) = _runs(isolated_env)
    assert stopped.info.status == "KILLED"
    resumed = execute(_request(args))
    assert resumed.resumed and resumed.info.run_id == stopped.info.run_id
    assert _test_metrics(resumed.metrics) == _test_metrics(reference.metrics)
