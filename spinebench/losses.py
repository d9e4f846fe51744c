"""Losses every method shares, so the supervised part is identical across methods."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss


class SupervisedLoss(torch.nn.Module):
    """0.5 x (CE + soft Dice), as SSL4MIS and UniMatch's medical code train labeled batches.

    The Dice term matches SSL4MIS ``utils/losses.py`` DiceLoss: softmax probabilities, every class
    including background, squared denominators, statistics pooled over the whole batch, smooth
    1e-5 (cited in plugins/mean_teacher/README.md).
    """

    def __init__(self) -> None:
        super().__init__()
        self.loss = DiceCELoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            lambda_dice=0.5,
            lambda_ce=0.5,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), labels[:, None])
