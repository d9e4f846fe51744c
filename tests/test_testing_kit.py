"""The conformance kit itself: each deliberately broken method fails with the rule it breaks,
and the pytest fixtures work from a plugin's own test suite."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from spinebench.builtin.supervised import Supervised
from spinebench.method import Batch, Stage, StepInfo, StepOutput
from spinebench.testing import RULES, ConformanceError, check_method

pytest_plugins = ["pytester"]

# A two-level UNet keeps each check well under a second.
SMALL = {"model.channels": [4, 8], "model.dropout": [0.0, 0.0]}


class Nondeterministic(Supervised):
    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        noise = float(np.random.default_rng().normal())  # unseeded: differs every run
        return StepOutput(losses={"loss": self.loss(self.net(batch.image + noise), batch.label)})


class NanLoss(Supervised):
    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        out = super().training_step(stage, batch, step)
        return StepOutput(losses={"loss": out.losses["loss"] * float("nan")})


class UninitializedRead(Supervised):
    """Reads memory it never wrote: the kit's runtime fills new tensors with NaN to show it."""

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        bias = torch.empty_like(batch.image)
        return StepOutput(losses={"loss": self.loss(self.net(batch.image + bias), batch.label)})


class DetachedLoss(Supervised):
    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        return StepOutput(
            losses={"loss": super().training_step(stage, batch, step).losses["loss"].detach()}
        )


class DroppedBackground(Supervised):
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[:, 1:]


class IntegerPredict(Supervised):
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).argmax(1, keepdim=True).expand(-1, self.ctx.num_classes, -1, -1)


class LostBuffer(Supervised):
    """A calibration temperature learnt in training but kept out of the state_dict."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.register_buffer("temperature", torch.ones(()), persistent=False)

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        self.temperature.mul_(1.5)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images) / self.temperature


class Unpicklable:
    pass


class ObjectInState(Supervised):
    def get_extra_state(self) -> Any:
        return Unpicklable()

    def set_extra_state(self, state: Any) -> None:
        pass


class LateParameter(Supervised):
    def on_stage_start(self, stage: Stage) -> None:
        self.head = nn.Conv2d(self.ctx.num_classes, self.ctx.num_classes, 1)


class DuplicateStages(Supervised):
    def stages(self) -> list[Stage]:
        return [Stage("train", 2), Stage("train", 2)]


class SharedSeeds(Supervised):
    """Two stages told to start from one seed: they would draw the same batches."""

    def stages(self) -> list[Stage]:
        (train,) = super().stages()
        return [
            dataclasses.replace(train, name="warmup", iterations=2, seed_index=1),
            dataclasses.replace(train, seed_index=1),
        ]


class PretrainOnly(Supervised):
    def stages(self) -> list[Stage]:
        return [Stage("train", 2), Stage("pretrain", 2, segments=False)]


class NanValidation(Supervised):
    def stages(self) -> list[Stage]:
        return [Stage("pretrain", 2, segments=False), Stage("train", 2)]

    def validate_stage(
        self, stage: Stage, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        return {"alignment": float("nan")}


class WritesLog(Supervised):
    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        with open("losses.txt", "a") as log:
            log.write("step\n")
        return super().training_step(stage, batch, step)


class TorchSaveCheat(Supervised):
    """Saves its weights with torch.save to an absolute path: C++ writes no Python hook sees."""

    target: ClassVar[Path] = Path("/nonexistent")

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        torch.save(self.net.state_dict(), self.target)


class NumpySaveCheat(Supervised):
    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        np.save("stats.npy", np.zeros(3))


class ItkWriteCheat(Supervised):
    """A C extension writing a relative path (SimpleITK opens the file in C++)."""

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        import SimpleITK as sitk

        sitk.WriteImage(sitk.Image(4, 4, sitk.sitkUInt8), "debug.mha")


class SwallowedWrite(Supervised):
    """Catches the refusal and carries on: the kit still fails it."""

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        with contextlib.suppress(Exception):
            Path("cache.json").write_text("{}")


class HiddenTruthCheat(Supervised):
    """Trains on the hidden labels of the unlabeled slices, as a third-party author might by
    mistake: an unlabeled stage whose loss uses ``Batch.unlabeled_truth``."""

    def stages(self) -> list[Stage]:
        return [Stage("train", int(self.ctx.config["train"]["iterations"]), unlabeled=True)]

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        loss = self.loss(self.net(batch.image), batch.label)
        if batch.unlabeled_weak is not None and batch.unlabeled_truth is not None:
            loss = loss + self.loss(self.net(batch.unlabeled_weak), batch.unlabeled_truth)
        return StepOutput(losses={"loss": loss})


class TruthInDiagnostics(Supervised):
    """Uses the hidden labels for a diagnostic only: allowed."""

    def stages(self) -> list[Stage]:
        return [Stage("train", int(self.ctx.config["train"]["iterations"]), unlabeled=True)]

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        out = super().training_step(stage, batch, step)
        if batch.unlabeled_truth is not None:
            out.diagnostics["pseudo/foreground"] = (batch.unlabeled_truth > 0).float().mean()
        return out


class SetsEnv(Supervised):
    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        os.environ["TOKENIZERS_PARALLELISM"] = "false"


class UnknownOption(Supervised):
    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        return {"train": {"learning_rate": 0.1}} if profile == "paper" else {}


BROKEN = [
    (Nondeterministic, "determinism", "in the second with the same seed"),
    (NanLoss, "losses", "losses['loss'] is not finite"),
    (UninitializedRead, "losses", "losses['loss'] is not finite"),
    (DetachedLoss, "losses", "does not require grad"),
    (DroppedBackground, "predict", "expected [1, 20, 32, 32]"),
    (IntegerPredict, "predict", "expected floating-point logits"),
    (LostBuffer, "state_dict", "predicts different logits"),
    (ObjectInState, "state_dict", "weights_only=True"),
    (LateParameter, "parameters", "head.weight"),
    (DuplicateStages, "stages", "not unique"),
    (SharedSeeds, "stages", "share a seed_index ([1, 1] for ['warmup', 'train'])"),
    (PretrainOnly, "stages", "the last stage 'pretrain' has segments=False"),
    (NanValidation, "validate_stage", "'alignment' is nan"),
    (WritesLog, "side_effects", "opened 'losses.txt' with mode 'a'"),
    (NumpySaveCheat, "side_effects", "stats.npy"),
    (ItkWriteCheat, "side_effects", "wrote debug.mha into its working directory"),
    (SwallowedWrite, "side_effects", "cache.json"),
    (HiddenTruthCheat, "hidden_truth", "changed when Batch.unlabeled_truth was replaced"),
    (SetsEnv, "side_effects", "TOKENIZERS_PARALLELISM"),
    (UnknownOption, "config", "profile 'paper'"),
]


@pytest.mark.parametrize(
    ("method_cls", "rule", "fragment"), BROKEN, ids=[cls.__name__ for cls, _, _ in BROKEN]
)
def test_broken_method_fails_its_rule(
    method_cls: type, rule: str, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # SetsEnv changes it; undone here
    with pytest.raises(ConformanceError) as info:
        check_method(method_cls, overrides=SMALL)
    assert info.value.rule == rule
    message = str(info.value)
    assert f"breaks conformance rule {rule!r}" in message
    assert method_cls.__qualname__ in message
    assert fragment in message


def test_torch_save_to_an_absolute_path_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "outside" / "weights.pt"
    target.parent.mkdir()
    monkeypatch.setattr(TorchSaveCheat, "target", target)
    with pytest.raises(ConformanceError) as info:
        check_method(TorchSaveCheat, overrides=SMALL)
    assert info.value.rule == "side_effects"
    assert f"it wrote {str(target)!r} with torch.save" in str(info.value)
    assert not target.exists()


def test_hidden_truth_in_diagnostics_only_passes() -> None:
    assert check_method(TruthInDiagnostics, overrides=SMALL).rules == tuple(RULES)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ConformanceError):
        check_method(WritesLog, overrides=SMALL)
    assert not (tmp_path / "losses.txt").exists()


def test_reference_to_tracking_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin package that imports the engine's checkpoint module fails before anything runs."""
    package = tmp_path / "spinebench_leaky"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "method.py").write_text(
        textwrap.dedent("""
        from spinebench.builtin.supervised import Supervised
        from spinebench.engine.checkpoint import save


        class Leaky(Supervised):
            pass
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from spinebench_leaky.method import Leaky  # type: ignore[import-not-found]

    with pytest.raises(ConformanceError) as info:
        check_method(Leaky, overrides=SMALL)
    assert info.value.rule == "side_effects"
    assert "spinebench_leaky.method.save -> spinebench.engine.checkpoint" in str(info.value)
    sys.modules.pop("spinebench_leaky.method")
    sys.modules.pop("spinebench_leaky")


def test_a_passing_method_reports_every_rule() -> None:
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    report = check_method(Supervised, overrides=SMALL, steps=3)
    assert report.rules == tuple(RULES)
    assert report.steps == 3
    assert torch.equal(torch.get_rng_state(), rng_before)  # the kit restores global state
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before
    assert torch.get_num_threads() == threads_before


def test_fixtures_work_from_a_plugin_test_suite(pytester: pytest.Pytester) -> None:
    """What a third-party plugin writes: the fixtures arrive through the pytest11 entry point."""
    pytester.makepyfile(
        textwrap.dedent("""
        from spinebench.builtin.supervised import Supervised

        SMALL = {"model.channels": [4, 8], "model.dropout": [0.0, 0.0]}


        class Broken(Supervised):
            def predict(self, images):
                return self.net(images)[:, :2]


        def test_passes(spinebench_conformance):
            assert spinebench_conformance(Supervised, overrides=SMALL).rules


        def test_fails(spinebench_conformance):
            spinebench_conformance(Broken, overrides=SMALL)


        def test_harness(spinebench_harness):
            harness = spinebench_harness(Supervised, overrides=SMALL)
            method = harness.build()
            batch = harness.streams().next(with_unlabeled=True)
            assert batch.unlabeled_weak is not None
            out = method.training_step(method.stages()[0], batch, None)
            assert out.losses["loss"].requires_grad
    """)
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*Broken breaks conformance rule 'predict'*expected [[]*, 20, 32, 32]*"]
    )


def test_every_rule_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "writing-a-method-plugin.md").read_text()
    assert [rule for rule in RULES if f"| `{rule}` |" not in doc] == []
