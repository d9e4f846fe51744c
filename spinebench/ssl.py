"""Semi-supervised building blocks shared by the SSL methods (Mean Teacher, UniMatch, CPS4).

They live in the core so every method computes them the same way: a method plugin imports them
instead of keeping its own copy. Each follows the source cited in its docstring; the plugins'
READMEs list the exact lines.
"""

from __future__ import annotations

import math

import torch
from monai.losses import MaskedDiceLoss
from monai.networks.utils import one_hot
from torch import nn

#: Names of the diagnostics every SSL method logs, so runs of different methods compare.
CONFIDENT_FRACTION = "pseudo/confident_fraction"
CONSISTENCY_WEIGHT = "pseudo/consistency_weight"
PSEUDO_DICE = "pseudo/dice"
#: Class balance of the pseudo labels: a threshold that keeps background and drops foreground
#: teaches the student background, whatever the labels' Dice says.
FOREGROUND_FRACTION = "pseudo/foreground_fraction"
KEPT_FOREGROUND_FRACTION = "pseudo/kept_foreground_fraction"
KEPT_FRACTION_FOREGROUND = "pseudo/kept_fraction_foreground"
KEPT_FRACTION_BACKGROUND = "pseudo/kept_fraction_background"
TRUE_FOREGROUND_FRACTION = "pseudo/true_foreground_fraction"


def forward_pair(
    net: nn.Module, labeled: torch.Tensor, unlabeled: torch.Tensor, joint: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of the labeled and the unlabeled slices.

    ``joint`` (``train.ssl_forward=joint``, SSL4MIS): one forward of both, so BatchNorm
    normalises them with shared batch statistics; otherwise one forward each.
    """
    if joint:
        logits = net(torch.cat((labeled, unlabeled)))
        return logits[: labeled.shape[0]], logits[labeled.shape[0] :]
    return net(labeled), net(unlabeled)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> float:
    """Move the teacher's parameters towards the student's; returns the rate used.

    SSL4MIS ``update_ema_variables``: ``alpha = min(1 - 1/(step + 1), decay)``, then
    ``teacher = alpha * teacher + (1 - alpha) * student`` over ``parameters()`` only. Buffers
    (BatchNorm running statistics) are the teacher's own, from its own forward passes. Step 0
    gives alpha 0: the teacher becomes a copy of the student.
    """
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s.detach(), 1.0 - alpha)
    return alpha


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t/L)^2)`` with ``t`` clipped to ``[0, L]``; 1 for ``L == 0`` (SSL4MIS
    ``utils/ramps.py``, after Laine & Aila 2017)."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def consistency_weight(
    max_weight: float, iteration: int, total: int, rampup_fraction: float, start_fraction: float
) -> float:
    """The unlabeled loss weight at ``iteration`` of a stage of ``total`` iterations.

    The ramp lasts ``rampup_fraction * total`` iterations and the weight is 0 before
    ``start_fraction * total``, so both scale with the budget (SSL4MIS: ramp 200 x 150 = 30000
    iterations of a 30000 budget, no consistency before iteration 1000).
    """
    if iteration < start_fraction * total:
        return 0.0
    return max_weight * sigmoid_rampup(iteration, rampup_fraction * total)


def clamped_gaussian_noise(x: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """``clamp(N(0, std), -clip, clip)`` shaped like ``x`` (SSL4MIS teacher input noise)."""
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


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
        return self.dice(logits, target, keep[:, None].to(logits.dtype))


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Pixel cross-entropy where ``keep`` is true, divided by all pixels (UniMatch's natural-
    image convention: ignored pixels count as zero loss, not as absent)."""
    ce = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * keep).sum() / keep.numel()


def pseudo_label_dice(pseudo: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean foreground Dice of pseudo labels against the hidden truth, pooled over the batch.

    Diagnostics only. A class absent from both is left out of the mean (DESIGN.md's metric
    convention); when every class is absent from both, the labels agree: 1. No device sync.
    """
    classes = torch.arange(1, num_classes, device=pseudo.device)[:, None]
    p = pseudo.reshape(1, -1) == classes
    t = truth.reshape(1, -1) == classes
    inter = (p & t).sum(1).float()
    total = (p.sum(1) + t.sum(1)).float()
    per_class = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.nan)
    return torch.nan_to_num(per_class.nanmean(), nan=1.0)


def pseudo_label_diagnostics(
    probs: torch.Tensor,
    truth: torch.Tensor | None,
    threshold: float,
    weight: float,
    keep: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | float]:
    """What every SSL method logs about its pseudo labels ``probs`` [B, C, H, W].

    The share of pixels kept (``keep``, default: confidence reaches ``threshold``), the current
    unlabeled loss weight, the class balance of all and of the kept pseudo labels (see
    :func:`class_balance`), and, where the dataset has the unlabeled slices' truth, the pseudo
    labels' Dice and the truth's foreground share.
    """
    confidence, pseudo = probs.detach().max(1)
    kept = confidence >= threshold if keep is None else keep
    out: dict[str, torch.Tensor | float] = {
        CONFIDENT_FRACTION: kept.float().mean(),
        CONSISTENCY_WEIGHT: weight,
        **class_balance(pseudo, kept),
    }
    if truth is not None:
        out[PSEUDO_DICE] = pseudo_label_dice(pseudo, truth, probs.shape[1])
        out[TRUE_FOREGROUND_FRACTION] = (truth > 0).float().mean()
    return out


def class_balance(labels: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Foreground share of the pseudo ``labels`` and of the kept ones, and the kept share of the
    foreground and of the background pixels (0 where there are none). No device sync."""
    foreground = labels > 0
    kept = keep.bool()
    fg_kept = (foreground & kept).sum().float()
    n_fg = foreground.sum().float()
    n_bg = (~foreground).sum().float()
    return {
        FOREGROUND_FRACTION: foreground.float().mean(),
        KEPT_FOREGROUND_FRACTION: fg_kept / kept.sum().clamp_min(1),
        KEPT_FRACTION_FOREGROUND: fg_kept / n_fg.clamp_min(1),
        KEPT_FRACTION_BACKGROUND: (~foreground & kept).sum().float() / n_bg.clamp_min(1),
    }
