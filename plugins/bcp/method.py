"""BCP (Bai et al., CVPR 2023) as its ACDC code trains it: pre-training by copy-paste between
labeled slices, then self-training of a student on copy-paste mixes of labeled and unlabeled
slices labeled by an EMA teacher. The steps are the core's
(:class:`spinebench.api.semisupervised.BCPStep`), shared with ABD and CPS4; README.md cites
every default."""

from __future__ import annotations

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


class BCP(Method):
    description = "Bidirectional Copy-Paste (CVPR 2023): copy-paste pre-training, EMA self-training"
    options: ClassVar[dict[str, Any]] = dict(semisupervised.BCP_OPTIONS)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        student = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.pair = semisupervised.StudentTeacher(student, float(ctx.options["ema_decay"]))
        self.step = semisupervised.BCPStep(ctx.options, semisupervised.label_names(ctx.class_map))

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
        semisupervised.check_copy_paste_config(config, "bcp")

    def stages(self) -> list[Stage]:
        key = semisupervised.pretrain_cache_key(self.ctx.config, PRETRAIN_VERSION)
        return semisupervised.bcp_stages(self.ctx.config, key)

    def trainable_parameters(self, stage: Stage) -> Any:
        return self.pair.student.parameters()

    def on_stage_start(self, stage: Stage) -> None:
        if stage.name == semisupervised.SELFTRAIN:
            self.pair.start_teacher()

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if stage.name == semisupervised.PRETRAIN:
            return self.step.pretrain(self.pair.student, batch)
        return self.step.selftrain(self.pair.student, self.pair.teacher, batch)

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        if stage.name == semisupervised.SELFTRAIN:
            self.pair.update_teacher()

    def stage_state_dict(self, stage: Stage) -> dict[str, Any]:
        return {"student": self.pair.student.state_dict()}

    def load_stage_state_dict(self, stage: Stage, state: dict[str, Any]) -> None:
        student: nn.Module = self.pair.student
        student.load_state_dict(state["student"])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.pair.student(images)
        return logits
