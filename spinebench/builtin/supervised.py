"""The ``supervised`` baseline: the shared backbone trained on labeled slices only.

With ``--labeled 1.0`` it is the upper bound every semi-supervised method is measured against.
"""

from __future__ import annotations

import torch

from spinebench.api import (
    Batch,
    Method,
    MethodContext,
    Register,
    Stage,
    StepInfo,
    StepOutput,
    SupervisedLoss,
    build_backbone,
    hookimpl,
)


class Supervised(Method):
    description = "the shared backbone on labeled slices only (lower and upper bound)"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.net = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.loss = SupervisedLoss()

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        return StepOutput(losses={"loss": self.loss(self.net(batch.image), batch.label)})

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(images)
        return logits


@hookimpl
def spinebench_register_methods(register: Register) -> None:
    register("supervised", Supervised)
