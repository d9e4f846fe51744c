"""Losses every method shares, so the supervised part is identical across methods."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss


class SupervisedLoss(torch.nn.Module):
    """0.5 x (CE + soft Dice over all classes, background included), as SSL4MIS and UniMatch's
    medical code train their labeled batches."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = DiceCELoss(include_background=True, to_onehot_y=True, softmax=True,
                               lambda_dice=0.5, lambda_ce=0.5, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), labels[:, None])
