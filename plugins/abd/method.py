"""ABD (Chi et al., CVPR 2024) on BCP, as its ACDC code trains it: BCP's pre-training, then two
students (weak and strong views) taught by one EMA teacher, each also learning from the other's
prediction before and after the displacement of patches between their views. The steps are the
core's (:class:`spinebench.api.semisupervised.ABDStep`), shared with CPS4; README.md cites every
default."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from spinebench.api import (
    Batch,
    Method,
    MethodContext,
    Stage,
    StepInfo,
    StepOutput,
    build_backbone,
    semisupervised,
)

#: Bump when pre-training's computation or its cached state changes.
PRETRAIN_VERSION = 1
PREDICTORS = ("student1", "student2")


class ABD(Method):
    description = "Adaptive Bidirectional Displacement (CVPR 2024) on BCP, two students"
    options: ClassVar[dict[str, Any]] = {
        **semisupervised.ABD_OPTIONS,
        "predict_with": PREDICTORS,
    }

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        student = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.pair = semisupervised.StudentTeacher(student, float(ctx.options["ema_decay"]))
        self.student2 = copy.deepcopy(student)
        self.step = semisupervised.ABDStep(ctx.options, semisupervised.label_names(ctx.class_map))

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        # quick: the engine's CPU optimiser (AdamW 1e-3, poly), shared by every method, and the
        # shared budget of 1000 iterations split 1 : 3 as the source's 10000 + 30000;
        # paper: the source's constant SGD 0.01, 12 + 12 slices and budgets (README.md).
        if profile == "paper":
            return {"train": dict(semisupervised.BCP_SOURCE_TRAIN)}
        return {"method": dict(semisupervised.QUICK_BUDGET)}

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        semisupervised.check_copy_paste_config(config, "abd")
        semisupervised.check_displacement_config(config, "abd")

    def stages(self) -> list[Stage]:
        key = semisupervised.pretrain_cache_key(self.ctx.config, PRETRAIN_VERSION)
        return semisupervised.bcp_stages(self.ctx.config, key, strong=True)

    def trainable_parameters(self, stage: Stage) -> Any:
        if stage.name == semisupervised.PRETRAIN:
            return self.pair.student.parameters()
        return [*self.pair.student.parameters(), *self.student2.parameters()]

    def on_stage_start(self, stage: Stage) -> None:
        if stage.name == semisupervised.SELFTRAIN:
            self.pair.start_teacher()
            semisupervised.abd_students(self.pair.student, self.student2)

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if stage.name == semisupervised.PRETRAIN:
            return self.step.bcp.pretrain(self.pair.student, batch)
        return self.step(self.pair.student, self.student2, self.pair.teacher, batch)

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        if stage.name == semisupervised.SELFTRAIN:
            self.pair.update_teacher()  # the teacher follows student 1 only (l.437)

    def stage_state_dict(self, stage: Stage) -> dict[str, Any]:
        return {"student": self.pair.student.state_dict()}

    def load_stage_state_dict(self, stage: Stage, state: dict[str, Any]) -> None:
        student: nn.Module = self.pair.student
        student.load_state_dict(state["student"])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        net = self.pair.student if self.ctx.options["predict_with"] == "student1" else self.student2
        logits: torch.Tensor = net(images)
        return logits
