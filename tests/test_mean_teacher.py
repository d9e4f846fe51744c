"""Mean Teacher (SSL4MIS 2D): the EMA, the ramp-up, the noise, the loss and the diagnostics on
hand-made tensors, then one tiny tracked run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from mlflow.tracking import MlflowClient
from spinebench_mean_teacher.method import MeanTeacher
from torch import nn

from spinebench.config import resolve
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.errors import ConfigError
from spinebench.method import Batch, MethodContext, StepInfo
from spinebench.semisupervised import (
    clamped_gaussian_noise,
    consistency_weight,
    ema_update,
    pseudo_label_diagnostics,
    pseudo_label_dice,
    sigmoid_rampup,
)

SOURCE_START = 1000 / 30000


def _method(**options) -> MeanTeacher:
    config = resolve(
        method="mean_teacher",
        method_options=MeanTeacher.options,
        method_defaults=MeanTeacher.default_config("quick"),
        overrides={
            "model.channels": [4, 8],
            "model.dropout": [0.0, 0.0],
            **{f"method.{k}": v for k, v in options.items()},
        },
    )
    ctx = MethodContext(
        class_map=mrspineseg_class_map(), image_size=16, options=config["method"], config=config
    )
    return MeanTeacher(ctx)


def _batch(unlabeled: bool = True) -> Batch:
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        image=torch.randn(2, 1, 16, 16, generator=g),
        label=torch.randint(20, (2, 16, 16), generator=g),
    )
    if unlabeled:
        batch.unlabeled_weak = torch.randn(3, 1, 16, 16, generator=g)
        batch.unlabeled_truth = torch.randint(20, (3, 16, 16), generator=g)
    return batch


# -- EMA ----------------------------------------------------------------------------------------
def test_ema_update_equals_the_ssl4mis_formula():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher[1].running_mean.fill_(7.0)
    before = [p.clone() for p in teacher.parameters()]

    alpha = ema_update(teacher, student, decay=0.99, step=5)

    assert alpha == pytest.approx(1 - 1 / 6)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, alpha * t0 + (1 - alpha) * s)
    assert torch.all(teacher[1].running_mean == 7.0), "buffers are the teacher's own"


def test_ema_first_step_copies_the_student_and_later_steps_cap_at_the_decay():
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 4), nn.Linear(4, 4)
    assert ema_update(teacher, student, decay=0.99, step=0) == 0.0
    torch.testing.assert_close(teacher.weight, student.weight)
    assert ema_update(teacher, student, decay=0.99, step=99) == pytest.approx(0.99)
    assert ema_update(teacher, student, decay=0.99, step=5000) == 0.99


# -- ramp-up ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "length", "expected"),
    [
        (0, 200, math.exp(-5)),
        (50, 200, math.exp(-5 * 0.75**2)),
        (100, 200, math.exp(-1.25)),
        (200, 200, 1.0),
        (350, 200, 1.0),
        (-3, 200, math.exp(-5)),
        (10, 0, 1.0),
    ],
)
def test_sigmoid_rampup_values(current, length, expected):
    assert sigmoid_rampup(current, length) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("iteration", "expected"),
    # SSL4MIS: 0.1 * sigmoid_rampup(iter // 150, 200), and 0 before iteration 1000; the
    # iterations are multiples of 150, where its staircase and our continuous ramp agree.
    [
        (0, 0.0),
        (999, 0.0),
        (1050, 0.1 * math.exp(-5 * (1 - 7 / 200) ** 2)),
        (7500, 0.1 * math.exp(-5 * 0.75**2)),
        (15000, 0.1 * math.exp(-1.25)),
        (22500, 0.1 * math.exp(-5 * 0.25**2)),
        (30000, 0.1),
    ],
)
def test_consistency_weight_matches_ssl4mis_at_its_budget(iteration, expected):
    weight = consistency_weight(0.1, iteration, 30000, 1.0, SOURCE_START)
    assert weight == pytest.approx(expected, rel=1e-12, abs=0)


def test_consistency_weight_scales_with_the_budget():
    assert consistency_weight(0.1, 375, 1500, 1.0, SOURCE_START) == pytest.approx(
        consistency_weight(0.1, 7500, 30000, 1.0, SOURCE_START)
    )
    assert consistency_weight(0.1, 49, 1500, 1.0, SOURCE_START) == 0.0
    assert consistency_weight(0.1, 750, 1500, 0.5, 0.0) == pytest.approx(0.1)


# -- noise --------------------------------------------------------------------------------------
def test_teacher_noise_is_a_clamped_gaussian():
    torch.manual_seed(0)
    noise = clamped_gaussian_noise(torch.zeros(200_000), std=0.1, clip=0.2)
    assert noise.abs().max() == pytest.approx(0.2)
    assert (noise.abs() == 0.2).float().mean() == pytest.approx(0.0455, abs=0.005)  # P(|z| > 2)
    assert noise.mean().abs() < 2e-3 and 0.09 < noise.std() < 0.1


# -- diagnostics --------------------------------------------------------------------------------
def test_pseudo_label_dice_on_hand_made_maps():
    truth = torch.tensor([[[0, 1, 1, 2], [0, 0, 2, 2]]])
    pseudo = torch.tensor([[[0, 1, 0, 2], [0, 3, 2, 0]]])
    # class 1: 2*1/(1+2); class 2: 2*2/(2+3); class 3: 0 (predicted only); others absent.
    expected = (2 / 3 + 4 / 5 + 0) / 3
    assert float(pseudo_label_dice(pseudo, truth, num_classes=20)) == pytest.approx(expected)
    background = torch.zeros(1, 2, 4, dtype=torch.long)
    assert float(pseudo_label_dice(background, background, num_classes=20)) == 1.0


def test_pseudo_label_diagnostics_count_confident_pixels():
    probs = torch.tensor([[0.96, 0.5, 0.95, 0.2], [0.04, 0.5, 0.05, 0.8]]).view(1, 2, 1, 4)
    out = pseudo_label_diagnostics(probs, None, threshold=0.95, weight=0.03)
    assert float(out["pseudo/confident_fraction"]) == 0.5
    assert out["pseudo/consistency_weight"] == 0.03 and "pseudo/dice" not in out
    truth = torch.tensor([[[0, 0, 0, 1]]])
    assert float(pseudo_label_diagnostics(probs, truth, 0.95, 0.0)["pseudo/dice"]) == 1.0


# -- the method ---------------------------------------------------------------------------------
def test_loss_is_supervised_plus_ramped_weight_times_softmax_mse():
    method = _method()
    stage = method.stages()[0]
    assert stage.unlabeled
    step = StepInfo(iteration=750, total=1500)
    out = method.training_step(stage, _batch(), step)
    weight = 0.1 * math.exp(-5 * 0.5**2)
    assert out.diagnostics["pseudo/consistency_weight"] == pytest.approx(weight)
    torch.testing.assert_close(
        out.losses["loss"], out.losses["supervised"] + weight * out.losses["consistency"]
    )
    assert 0 < float(out.losses["consistency"]) < 1
    assert {"pseudo/confident_fraction", "pseudo/dice"} <= out.diagnostics.keys()
    early = method.training_step(stage, _batch(), StepInfo(iteration=10, total=1500))
    torch.testing.assert_close(early.losses["loss"], early.losses["supervised"])


def test_consistency_is_mse_between_student_and_noisy_teacher_softmax():
    method = _method(noise_std=0.0)
    batch = _batch()
    method.eval()  # no dropout or batch statistics: the two nets are then deterministic
    out = method.training_step(method.stages()[0], batch, StepInfo(0, 10))
    with torch.no_grad():
        student = method.pair.student(batch.unlabeled_weak).softmax(1)
        teacher = method.pair.teacher(batch.unlabeled_weak).softmax(1)
    torch.testing.assert_close(out.losses["consistency"], ((student - teacher) ** 2).mean())


def test_without_unlabeled_data_it_trains_supervised_only():
    method = _method()
    method.eval()
    batch = _batch(unlabeled=False)
    out = method.training_step(method.stages()[0], batch, StepInfo(0, 10))
    assert set(out.losses) == {"loss"} and not out.diagnostics
    torch.testing.assert_close(
        out.losses["loss"], method.supervised(method.pair.student(batch.image), batch.label)
    )


def test_teacher_is_frozen_and_follows_the_student_after_each_step():
    method = _method()
    trainable = {id(p) for p in method.trainable_parameters(method.stages()[0])}
    assert trainable == {id(p) for p in method.pair.student.parameters()}
    with torch.no_grad():
        for p in method.pair.student.parameters():
            p.add_(1.0)
    method.after_optimizer_step(method.stages()[0], StepInfo(0, 10))
    for t, s in zip(
        method.pair.teacher.parameters(), method.pair.student.parameters(), strict=True
    ):
        torch.testing.assert_close(t, s)


def test_predictions_come_from_the_student_by_default_or_the_teacher_on_request():
    images = torch.randn(2, 1, 16, 16)
    for choice in ("student", "teacher"):
        method = _method(predict_with=choice).eval()
        with torch.no_grad():
            for p in method.pair.teacher.parameters():  # a deep copy until then
                p.mul_(-1)
            net = method.pair.student if choice == "student" else method.pair.teacher
            torch.testing.assert_close(method.predict(images), net(images))
            other = method.pair.teacher if choice == "student" else method.pair.student
            assert not torch.allclose(method.predict(images), other(images))
    with pytest.raises(ConfigError, match="predict_with"):
        _method(predict_with="average")


def test_paper_profile_uses_the_source_batch_halves():
    paper = MeanTeacher.default_config("paper")["train"]
    assert (paper["batch_size"], paper["unlabeled_batch_size"]) == (12, 12)
    assert paper["lr"] == 0.01 and paper["momentum"] == 0.9 and paper["weight_decay"] == 1e-4
    assert "batch_size" not in MeanTeacher.default_config("quick").get("train", {})


# -- end to end ---------------------------------------------------------------------------------
def test_cli_run_finishes_tracked_with_pseudo_diagnostics(isolated_env: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinebench",
            "run",
            "--method",
            "mean_teacher",
            "--labeled",
            "0.5",
            *TINY,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spinebench/synthetic")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in (
        "pseudo/dice",
        "pseudo/confident_fraction",
        "pseudo/consistency_weight",
        "pseudo/kept_foreground_fraction",
        "pseudo/kept_fraction_foreground",
        "train/consistency",
        "train/supervised",
        "test/dice",
    ):
        assert key in m, key
    assert 0 <= m["pseudo/dice"] <= 1
