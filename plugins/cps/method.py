"""Cross Pseudo Supervision (Chen et al., CVPR 2021) as SSL4MIS trains it in 2D
(``code/train_cross_pseudo_supervision_2D.py`` at 06df604; README.md cites every line).

Two networks of one architecture, initialised one after the other from the same random stream,
see the same batch; each is supervised on the labeled half by 0.5 (CE + Dice) and on the
unlabeled half by the cross-entropy against the other's hard (arg-max, detached) prediction,
weighted by 0.1 times SSL4MIS's sigmoid ramp over the whole budget. One backward of the sum:
no gradient crosses between the networks, since each target is detached.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.api import (
    Batch,
    ConfigError,
    Method,
    MethodContext,
    Stage,
    StepInfo,
    StepOutput,
    SupervisedLoss,
    build_backbone,
    semisupervised,
)

PREDICTORS = ("net1", "net2")


def cross_pseudo_losses(
    unlabeled1: torch.Tensor, unlabeled2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss of net 1, loss of net 2): each network's logits on the unlabeled slices against
    the other's detached arg-max (l.186-190); symmetric, and each loss reaches only its own
    network."""
    target1 = unlabeled1.detach().argmax(1)
    target2 = unlabeled2.detach().argmax(1)
    return F.cross_entropy(unlabeled1.float(), target2), F.cross_entropy(
        unlabeled2.float(), target1
    )


class CPS(Method):
    description = "Cross Pseudo Supervision (CVPR 2021), as SSL4MIS trains it in 2D"
    options: ClassVar[dict[str, Any]] = {
        "consistency": 0.1,
        "rampup_fraction": 1.0,
        "predict_with": PREDICTORS,
    }

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.opts = ctx.options
        self.net1 = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.net2 = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.supervised = SupervisedLoss()

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        # quick: the engine's CPU optimiser (AdamW 1e-3), shared by every method; paper: the
        # source's SGD 0.01 with poly decay and 12 + 12 slices (README.md).
        return {"train": dict(semisupervised.SOURCE_TRAIN)} if profile == "paper" else {}

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        opts = config["method"]
        if opts["consistency"] < 0 or not 0 <= opts["rampup_fraction"] <= 10:
            raise ConfigError("cps.consistency must be >= 0 and cps.rampup_fraction in [0, 10]")

    def stages(self) -> list[Stage]:
        return [
            Stage(
                name="train",
                iterations=int(self.ctx.config["train"]["iterations"]),
                unlabeled=True,
                strong_views=0,  # both networks see the same weakly augmented batch
            )
        ]

    def trainable_parameters(self, stage: Stage) -> Iterator[nn.Parameter]:
        yield from self.net1.parameters()
        yield from self.net2.parameters()

    def _forward(self, net: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        assert batch.unlabeled_weak is not None
        n = batch.image.shape[0]
        if self.ctx.config["train"]["ssl_forward"] == "joint":  # SSL4MIS: one batch of both
            logits: torch.Tensor = net(torch.cat((batch.image, batch.unlabeled_weak)))
            return logits[:n], logits[n:]
        return net(batch.image), net(batch.unlabeled_weak)

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if batch.unlabeled_weak is None:  # --labeled 1.0: two supervised networks
            loss = self.supervised(self.net1(batch.image), batch.label)
            return StepOutput(
                losses={"loss": loss + self.supervised(self.net2(batch.image), batch.label)}
            )
        lab1, unl1 = self._forward(self.net1, batch)
        lab2, unl2 = self._forward(self.net2, batch)
        sup1, sup2 = self.supervised(lab1, batch.label), self.supervised(lab2, batch.label)
        cross1, cross2 = cross_pseudo_losses(unl1, unl2)
        weight = semisupervised.consistency_weight(
            self.opts["consistency"], step.iteration, step.total, self.opts["rampup_fraction"], 0.0
        )
        probs1 = unl1.detach().float().softmax(1)
        diagnostics = semisupervised.pseudo_label_diagnostics(
            probs1, batch.unlabeled_truth, 0.0, weight
        )
        diagnostics["pseudo/agreement"] = (
            (probs1.argmax(1) == unl2.detach().argmax(1)).float().mean()
        )
        return StepOutput(
            losses={
                "loss": (sup1 + weight * cross1) + (sup2 + weight * cross2),
                "supervised": ((sup1 + sup2) / 2).detach(),
                "cross": ((cross1 + cross2) / 2).detach(),
            },
            diagnostics=diagnostics,
        )

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net1 if self.opts["predict_with"] == "net1" else self.net2
        logits: torch.Tensor = net(images)
        return logits
