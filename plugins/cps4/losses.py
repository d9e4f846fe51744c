"""CPS4's stage-1 losses: they tie each class prompt to its own spine unit.

Every function takes plain tensors, so each loss can be checked on hand-made inputs. The
similarities are the VLM's scaled cosine scores between a class's text embedding and the image
patch tokens (``[B, K, h, w]``, class ``k`` is foreground label ``k + 1``); the README writes out
the equations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.api import BinaryMapLoss, SupervisedLoss, binary_targets


def token_attention_loss(similarity: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL divergence from each class's mask distribution to its attention over patches.

    ``similarity`` [B, K, h, w]: the attention of class ``k`` is ``softmax`` of its scores over
    the ``h x w`` patches. ``targets`` [B, K, H, W]: binary class masks, area-pooled to the patch
    grid (the share of each patch the class covers) and normalised to sum to 1. The loss is
    ``KL(q || p)``, 0 when the attention falls exactly on the class, averaged over the
    (image, class) pairs whose class is present; with none present it is 0 (still attached to
    the graph, so a step without foreground back-propagates).
    """
    h, w = similarity.shape[-2:]
    area = F.adaptive_avg_pool2d(targets.float(), (h, w)).flatten(2)
    mass = area.sum(-1)
    present = mass > 0
    q = area / mass.clamp_min(1e-12)[..., None]
    log_p = similarity.float().flatten(2).log_softmax(-1)
    kl = (torch.xlogy(q, q) - q * log_p).sum(-1)
    return (kl * present).sum() / present.sum().clamp_min(1)


class PixelAttentionLoss(nn.Module):
    """The patch similarities, upsampled to full resolution, must reproduce the label map.

    Scores are taken relative to a background score ``b``: ``z_k = up(s_k) - b``. With
    ``class_softmax`` the K classes and the background (score 0) compete through one softmax at
    every pixel, trained with the supervised 0.5 x (CE + Dice) against the multi-class label: a
    pixel of L3 that also scores high for L4 is penalised, which is the class-specific
    consistency constraint. Without it every class is an independent sigmoid ``sigmoid(z_k)``
    trained with 0.5 x (BCE + Dice) against its own binary mask (the clipseg baseline's binary
    loss at the supervised loss's scale), so neighbouring levels never compete.
    """

    def __init__(self, class_softmax: bool) -> None:
        super().__init__()
        self.class_softmax = class_softmax
        self.multi_class = SupervisedLoss()
        self.binary = BinaryMapLoss()

    def forward(
        self, similarity: torch.Tensor, background: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        scores = F.interpolate(
            similarity.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
        scores = scores - background
        if self.class_softmax:
            loss: torch.Tensor = self.multi_class(F.pad(scores, (0, 0, 0, 0, 1, 0)), labels)
            return loss
        bce, dice = self.binary(scores, binary_targets(labels, scores.shape[1]))
        return 0.5 * (bce + dice)
