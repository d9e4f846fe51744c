"""Mean Teacher as SSL4MIS trains it in 2D (``code/train_mean_teacher_2D.py``).

The student sees the labeled and unlabeled halves of each batch in one forward; an EMA teacher
sees the unlabeled half with clamped Gaussian noise; the loss is 0.5 (CE + Dice) on the labeled
half plus a ramped weight times the MSE between student and teacher softmax. Every default and
its source line is in README.md.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from spinebench.errors import ConfigError
from spinebench.losses import SupervisedLoss
from spinebench.method import Batch, Method, MethodContext, Stage, StepInfo, StepOutput, frozen
from spinebench.models.backbone import build_backbone
from spinebench.ssl import (
    clamped_gaussian_noise,
    consistency_weight,
    ema_update,
    forward_pair,
    pseudo_label_diagnostics,
)

#: SSL4MIS's budget and the iteration its consistency loss starts at; the start is kept as the
#: same fraction of our budget.
SOURCE_ITERATIONS = 30000
SOURCE_CONSISTENCY_START = 1000
PREDICTORS = ("student", "teacher")


class MeanTeacher(Method):
    options: ClassVar[dict[str, Any]] = {
        "ema_decay": 0.99,
        "consistency": 0.1,
        "rampup_fraction": 1.0,
        "start_fraction": SOURCE_CONSISTENCY_START / SOURCE_ITERATIONS,
        "noise_std": 0.1,
        "noise_clip": 0.2,
        "predict_with": "student",
        "conf_thresh": 0.95,
    }

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.opts = ctx.options
        if self.opts["predict_with"] not in PREDICTORS:
            raise ConfigError(
                f"method.predict_with {self.opts['predict_with']!r} is unknown; "
                f"use one of {', '.join(PREDICTORS)}"
            )
        self.student = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.teacher = copy.deepcopy(self.student)
        frozen(self.teacher.parameters())
        self.supervised = SupervisedLoss()

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        if profile != "paper":
            # quick: the engine's CPU optimiser (AdamW 1e-3), shared by every method so the
            # short budget converges; the source's SGD schedule needs its 30k iterations.
            return {"train": {}}
        train: dict[str, Any] = {
            "optimizer": "sgd",
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 0.0001,
            "poly_power": 0.9,
        }
        train |= {"batch_size": 12, "unlabeled_batch_size": 12}  # 24 = 12 labeled + 12 unlabeled
        return {"train": train}

    def stages(self) -> list[Stage]:
        return [
            Stage(
                name="train",
                iterations=int(self.ctx.config["train"]["iterations"]),
                unlabeled=True,
                strong_views=0,  # the teacher's noise is its only perturbation
            )
        ]

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if batch.unlabeled_weak is None:  # --labeled 1.0: nothing to be consistent on
            return StepOutput(
                losses={"loss": self.supervised(self.student(batch.image), batch.label)}
            )
        unlabeled = batch.unlabeled_weak
        joint = self.ctx.config["train"]["ssl_forward"] == "joint"
        labeled_logits, unlabeled_logits = forward_pair(self.student, batch.image, unlabeled, joint)
        supervised = self.supervised(labeled_logits, batch.label)
        student_probs = unlabeled_logits.float().softmax(1)
        with torch.no_grad():  # the teacher stays in the student's mode, as in SSL4MIS
            noisy = unlabeled + clamped_gaussian_noise(
                unlabeled, self.opts["noise_std"], self.opts["noise_clip"]
            )
            teacher_probs = self.teacher(noisy).float().softmax(1)
        consistency = F.mse_loss(student_probs, teacher_probs)
        weight = consistency_weight(
            self.opts["consistency"],
            step.iteration,
            step.total,
            self.opts["rampup_fraction"],
            self.opts["start_fraction"],
        )
        return StepOutput(
            losses={
                "loss": supervised + weight * consistency,
                "supervised": supervised,
                "consistency": consistency.detach(),
            },
            diagnostics=pseudo_label_diagnostics(
                teacher_probs, batch.unlabeled_truth, self.opts["conf_thresh"], weight
            ),
        )

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        ema_update(self.teacher, self.student, self.opts["ema_decay"], step.iteration)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        net = self.teacher if self.opts["predict_with"] == "teacher" else self.student
        return net(images)
