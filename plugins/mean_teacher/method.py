"""Mean Teacher as SSL4MIS trains it in 2D (``code/train_mean_teacher_2D.py``).

The student sees the labeled and unlabeled halves of each batch in one forward; an EMA teacher
sees the unlabeled half with clamped Gaussian noise; the loss is 0.5 (CE + Dice) on the labeled
half plus a ramped weight times the MSE between student and teacher softmax. The pair, the
ramp and the defaults are the core's (:mod:`spinebench.semisupervised`); every default and its
source line is in README.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from spinebench.api import (
    Batch,
    Method,
    MethodContext,
    Stage,
    StepInfo,
    StepOutput,
    SupervisedLoss,
    build_backbone,
    semisupervised,
)

PREDICTORS = ("student", "teacher")


class MeanTeacher(Method):
    description = "Mean Teacher (NeurIPS 2017), as SSL4MIS trains it in 2D"
    options: ClassVar[dict[str, Any]] = {
        **semisupervised.MEAN_TEACHER_OPTIONS,
        "predict_with": PREDICTORS,
        "conf_thresh": 0.95,
    }

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.opts = ctx.options
        student = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.pair = semisupervised.MeanTeacherPair(student, self.opts)
        self.supervised = SupervisedLoss()

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        # quick: the engine's CPU optimiser (AdamW 1e-3), shared by every method so the short
        # budget converges; the source's SGD schedule needs its 30k iterations.
        return {"train": dict(semisupervised.SOURCE_TRAIN)} if profile == "paper" else {}

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
        student = self.pair.student
        if batch.unlabeled_weak is None:  # --labeled 1.0: nothing to be consistent on
            return StepOutput(losses={"loss": self.supervised(student(batch.image), batch.label)})
        unlabeled = batch.unlabeled_weak
        joint = self.ctx.config["train"]["ssl_forward"] == "joint"
        labeled_logits, unlabeled_logits = self.pair.student_logits(batch.image, unlabeled, joint)
        supervised = self.supervised(labeled_logits, batch.label)
        teacher_probs = self.pair.teacher_probs(unlabeled)
        consistency = F.mse_loss(unlabeled_logits.float().softmax(1), teacher_probs)
        weight = semisupervised.consistency_weight(
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
            diagnostics=semisupervised.pseudo_label_diagnostics(
                teacher_probs, batch.unlabeled_truth, self.opts["conf_thresh"], weight
            ),
        )

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        self.pair.update_teacher(step.iteration)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        net = self.pair.teacher if self.opts["predict_with"] == "teacher" else self.pair.student
        out: torch.Tensor = net(images)
        return out
