"""UniMatch as its medical scenario trains it (``more-scenarios/medical/unimatch.py``).

The step itself is the core's (:class:`spinebench.api.semisupervised.UniMatchStep`), so CPS4
can run the same step with its VLM refining the pseudo labels; this plugin is UniMatch alone.
Every default and its source line is in README.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

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


class UniMatch(Method):
    description = "UniMatch (CVPR 2023): weak/strong views, CutMix, feature perturbation"
    options: ClassVar[dict[str, Any]] = dict(semisupervised.UNIMATCH_OPTIONS)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.net = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.step = semisupervised.UniMatchStep(
            ctx.options,
            ctx.config["train"]["ssl_forward"] == "joint",
            semisupervised.label_names(ctx.class_map),
        )

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        # quick: the engine's CPU optimiser (AdamW 1e-3), shared by every method so the short
        # budget converges; paper: the source's SGD schedule and 12 + 12 slices (README.md).
        return {"train": dict(semisupervised.SOURCE_TRAIN)} if profile == "paper" else {}

    def stages(self) -> list[Stage]:
        return [semisupervised.unimatch_stage(self.ctx.config)]

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        return self.step(self.net, batch)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(images)
        return logits
