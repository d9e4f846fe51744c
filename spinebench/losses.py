"""Losses several methods share: the supervised loss (so the supervised part is identical
across methods) and the per-class binary-map loss of the class-prompt VLMs."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _global_sum(stats: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks of a distributed run, differentiably (identity in one process).

    The pooled Dice below is not a mean over samples, so averaging per-rank losses would not
    give the global batch's loss; summing its statistics first does, and the all-reduce's
    backward sends each rank the gradient of that global loss.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(stats)
    return stats


class SupervisedLoss(torch.nn.Module):
    """0.5 x (CE + soft Dice), as SSL4MIS and UniMatch's medical code train labeled batches.

    The Dice term matches SSL4MIS ``utils/losses.py`` DiceLoss (and MONAI's ``DiceCELoss`` with
    ``squared_pred=True, batch=True``, which a test pins it to): softmax probabilities, every
    class including background, squared denominators, statistics pooled over the whole batch,
    smooth 1e-5 (cited in plugins/mean_teacher/README.md). It is written out because under
    ``torchrun`` its statistics are pooled over the global batch, not per process.
    """

    smooth = 1e-5

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, labels)
        probs = logits.softmax(1)
        onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(probs)
        dims = (0, 2, 3)
        stats = torch.stack(
            [(probs * onehot).sum(dims), (probs * probs).sum(dims) + onehot.sum(dims)]
        )
        inter, denom = _global_sum(stats)
        dice = 1 - (2 * inter + self.smooth) / (denom + self.smooth)
        return 0.5 * ce + 0.5 * dice.mean()


class BinaryMapLoss(torch.nn.Module):
    """``BCE-with-logits + soft Dice`` over K independent binary maps [B, K, H, W] (the
    per-class maps of a class-prompt VLM); returns both terms.

    CLIPSeg trains each prompt's map with binary cross-entropy alone (timojl/clipseg
    ``experiments/phrasecut.yaml`` line 41). Spine classes are small and most of a slice is
    background for every prompt, so a soft Dice term is added, of the same form as the
    supervised loss's (squared denominators, pooled over the batch, smooth 1e-5).
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

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
        dice: torch.Tensor = self.dice(logits, targets)
        return F.binary_cross_entropy_with_logits(logits, targets), dice


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
