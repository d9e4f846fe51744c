"""The per-class binary loss and its diagnostic Dice, on [B, K, H, W] maps of K foreground classes.

CLIPSeg trains each prompt's map with binary cross-entropy alone (timojl/clipseg
``experiments/phrasecut.yaml`` line 41). Spine classes are small and most of a slice is
background for every prompt, so a soft Dice term is added, with the same Dice form as the
supervised loss of every other method here (squared denominators, pooled over the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss


class BinaryMapLoss(torch.nn.Module):
    """``BCE-with-logits + soft Dice`` over K independent binary maps; returns both terms."""

    def __init__(self) -> None:
        super().__init__()
        # Every channel is a foreground class: there is no background channel to exclude.
        self.dice = DiceLoss(
            include_background=True,
            sigmoid=True,
            squared_pred=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logits`` and float ``targets`` [B, K, H, W] -> (BCE, Dice), each a scalar."""
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, targets), self.dice(logits, targets)


@torch.no_grad()
def binary_dice(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[K] hard Dice of each map (``logit > 0``) against its target, pooled over the batch.

    A class absent from both the prediction and the target scores 1: the map correctly found
    nothing. Stays a tensor, so logging it costs no device sync.
    """
    predicted = (logits > 0).float()
    dims = (0, 2, 3)
    overlap = (predicted * targets).sum(dims)
    total = predicted.sum(dims) + targets.sum(dims)
    return (2 * overlap + eps) / (total + eps)
