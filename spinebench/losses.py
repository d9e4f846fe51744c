"""Losses every method shares, so the supervised part is identical across methods."""

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
