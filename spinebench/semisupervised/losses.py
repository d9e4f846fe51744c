"""Losses on pseudo labels restricted to the pixels a method keeps."""

from __future__ import annotations

import torch
from monai.losses import MaskedDiceLoss
from monai.networks.utils import one_hot
from torch import nn


class MaskedDice(nn.Module):
    """Soft Dice of logits against integer labels, counted only where ``keep`` is true.

    The SSL4MIS/UniMatch Dice: softmax probabilities, every class including background,
    squared denominators, sums pooled over the whole batch, smooth 1e-5, mean over classes.
    Pixels outside ``keep`` leave every sum (MONAI's ``MaskedDiceLoss`` zeroes both inputs
    there), as UniMatch's ``DiceLoss(..., ignore=...)`` does; with nothing kept the loss is 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = MaskedDiceLoss(
            include_background=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        logits = logits.float()
        target = one_hot(labels[:, None], logits.shape[1], dtype=logits.dtype)
        loss: torch.Tensor = self.dice(logits, target, keep[:, None].to(logits.dtype))
        return loss


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Pixel cross-entropy where ``keep`` is true, divided by all pixels (UniMatch's natural-
    image convention: ignored pixels count as zero loss, not as absent)."""
    ce = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * keep).sum() / keep.numel()
