"""The ``supervised`` baseline: the shared backbone trained on labeled slices only.

With ``--labeled 1.0`` it is the upper bound every semi-supervised method is measured against.
"""

from __future__ import annotations

import torch

from spinebench.hookspecs import hookimpl
from spinebench.losses import SupervisedLoss
from spinebench.method import Batch, Method, MethodContext, Stage, StepInfo, StepOutput
from spinebench.models.backbone import build_backbone


class Supervised(Method):
    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.net = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.loss = SupervisedLoss()

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        return StepOutput(losses={"loss": self.loss(self.net(batch.image), batch.label)})

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


@hookimpl
def spinebench_register_methods(register) -> None:  # type: ignore[no-untyped-def]
    register("supervised", Supervised)
