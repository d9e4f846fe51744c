"""A student network and its exponential-moving-average teacher, as SSL4MIS trains them in 2D
(``code/train_mean_teacher_2D.py``; every default and its source line is in
``plugins/mean_teacher/README.md``). Mean Teacher and CPS4's stage 2 both build on it."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from spinebench.method import frozen

#: SSL4MIS's budget and the iteration its consistency loss starts at; the start is kept as the
#: same fraction of any budget.
SOURCE_ITERATIONS = 30000
SOURCE_CONSISTENCY_START = 1000

MEAN_TEACHER_OPTIONS: dict[str, Any] = {
    "ema_decay": 0.99,
    "consistency": 0.1,
    "rampup_fraction": 1.0,
    "start_fraction": SOURCE_CONSISTENCY_START / SOURCE_ITERATIONS,
    "noise_std": 0.1,
    "noise_clip": 0.2,
}
"""The Mean Teacher options (``method.<name>``) and their SSL4MIS defaults."""

SOURCE_TRAIN: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "poly_power": 0.9,
    "batch_size": 12,
    "unlabeled_batch_size": 12,
}
"""The paper profile's ``train.*`` of SSL4MIS and UniMatch's medical code alike: SGD 0.01,
momentum 0.9, weight decay 1e-4, poly 0.9, 12 labeled + 12 unlabeled slices per step."""


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> float:
    """Move the teacher's parameters towards the student's; returns the rate used.

    SSL4MIS ``update_ema_variables``: ``alpha = min(1 - 1/(step + 1), decay)``, then
    ``teacher = alpha * teacher + (1 - alpha) * student`` over ``parameters()`` only. Buffers
    (BatchNorm running statistics) are the teacher's own, from its own forward passes. Step 0
    gives alpha 0: the teacher becomes a copy of the student.
    """
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s.detach(), 1.0 - alpha)
    return alpha


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t/L)^2)`` with ``t`` clipped to ``[0, L]``; 1 for ``L == 0`` (SSL4MIS
    ``utils/ramps.py``, after Laine & Aila 2017)."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def consistency_weight(
    max_weight: float, iteration: int, total: int, rampup_fraction: float, start_fraction: float
) -> float:
    """The unlabeled loss weight at ``iteration`` of a stage of ``total`` iterations.

    The ramp lasts ``rampup_fraction * total`` iterations and the weight is 0 before
    ``start_fraction * total``, so both scale with the budget (SSL4MIS: ramp 200 x 150 = 30000
    iterations of a 30000 budget, no consistency before iteration 1000).
    """
    if iteration < start_fraction * total:
        return 0.0
    return max_weight * sigmoid_rampup(iteration, rampup_fraction * total)


def clamped_gaussian_noise(x: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """``clamp(N(0, std), -clip, clip)`` shaped like ``x`` (SSL4MIS teacher input noise)."""
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


class MeanTeacherPair(nn.Module):
    """``student`` and a frozen copy of it, the teacher, that follows it by EMA.

    The teacher runs in the student's mode (SSL4MIS never puts it in eval mode) on the
    unlabeled slices plus clamped Gaussian noise. ``options`` holds at least ``ema_decay``,
    ``noise_std`` and ``noise_clip`` (:data:`MEAN_TEACHER_OPTIONS`).
    """

    def __init__(self, student: nn.Module, options: dict[str, Any]) -> None:
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        frozen(self.teacher.parameters())
        self.ema_decay = float(options["ema_decay"])
        self.noise_std = float(options["noise_std"])
        self.noise_clip = float(options["noise_clip"])

    def student_logits(
        self, labeled: torch.Tensor, unlabeled: torch.Tensor, joint: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits of the labeled and the unlabeled slices.

        ``joint`` (``train.ssl_forward=joint``, SSL4MIS): one forward of both, so BatchNorm
        normalises them with shared batch statistics; otherwise one forward each.
        """
        if joint:
            logits = self.student(torch.cat((labeled, unlabeled)))
            return logits[: labeled.shape[0]], logits[labeled.shape[0] :]
        return self.student(labeled), self.student(unlabeled)

    @torch.no_grad()
    def teacher_logits(self, unlabeled: torch.Tensor) -> torch.Tensor:
        """Teacher logits [B, C, H, W] on the noisy unlabeled slices, in float32."""
        noise = clamped_gaussian_noise(unlabeled, self.noise_std, self.noise_clip)
        logits: torch.Tensor = self.teacher(unlabeled + noise).float()
        return logits

    def teacher_probs(self, unlabeled: torch.Tensor) -> torch.Tensor:
        """Teacher softmax [B, C, H, W] on the noisy unlabeled slices, in float32."""
        return self.teacher_logits(unlabeled).softmax(1)

    def update_teacher(self, step: int) -> float:
        """The EMA step after each optimiser step; returns the rate used."""
        return ema_update(self.teacher, self.student, self.ema_decay, step)
