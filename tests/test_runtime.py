"""The engine's runtime choices: what deterministic mode turns on (and off), what a run leaves
behind for the next one in the same process, and what each profile runs in on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.utils.deterministic

from spinebench.engine.prepare import prepare
from spinebench.engine.runtime import setup, torch_settings_kept
from spinebench.runinfo import RunRequest


def _train(profile: str) -> dict:
    request = RunRequest(method="supervised", labeled=0.5, profile=profile)
    return prepare(request).config["train"]


def test_deterministic_mode_without_the_nan_fill_unless_poisoning_is_asked_for():
    train = {**_train("quick"), "deterministic": True}
    with torch_settings_kept():
        runtime = setup(train, "cpu", 0)
        assert runtime.deterministic and torch.are_deterministic_algorithms_enabled()
        # the fill costs ~10% of a CPU step and buys no determinism (BENCHMARKS.md)
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        setup(train, "cpu", 0, poison_uninitialized=True)  # the conformance kit's runtime
        assert torch.utils.deterministic.fill_uninitialized_memory is True
        assert torch.isnan(torch.empty(4)).all()


@pytest.mark.parametrize("fill", [True, False])
def test_a_run_leaves_the_callers_settings_as_they_were(fill: bool):
    train = {**_train("quick"), "deterministic": True, "threads": 1}
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    old = torch.utils.deterministic.fill_uninitialized_memory
    try:
        torch.utils.deterministic.fill_uninitialized_memory = fill
        with torch_settings_kept():
            setup(train, "cpu", 0)
        assert torch.utils.deterministic.fill_uninitialized_memory is fill
        assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = old


def test_channels_last_on_the_cpu_for_the_paper_profiles_batchnorm_unet_only():
    # measured (BENCHMARKS.md, "Where a step's time goes"): BatchNorm UNet 15-20% faster in
    # channels_last on the CPU, the quick profile's instance-norm UNet ~10% slower
    with torch_settings_kept():
        assert setup(_train("paper"), "cpu", 0).channels_last is True
        assert setup(_train("quick"), "cpu", 0).channels_last is False
