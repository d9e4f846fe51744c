"""What every SSL method logs about its pseudo labels, under the same names, so runs of
different methods compare. Diagnostics only: never a loss."""

from __future__ import annotations

import torch

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
#: Foreground classes per slice, pseudo labels and truth: a method that agrees with itself by
#: dropping classes (an unramped Dice between two networks) shows here while its agreement and
#: foreground share still look healthy.
CLASSES_PER_SLICE = "pseudo/classes_per_slice"
TRUE_CLASSES_PER_SLICE = "pseudo/true_classes_per_slice"


def pseudo_label_dice(pseudo: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean foreground Dice of pseudo labels against the hidden truth, pooled over the batch.

    A class absent from both is left out of the mean (DESIGN.md's metric convention); when
    every class is absent from both, the labels agree: 1. No device sync.
    """
    classes = torch.arange(1, num_classes, device=pseudo.device)[:, None]
    p = pseudo.reshape(1, -1) == classes
    t = truth.reshape(1, -1) == classes
    inter = (p & t).sum(1).float()
    total = (p.sum(1) + t.sum(1)).float()
    per_class = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.nan)
    return torch.nan_to_num(per_class.nanmean(), nan=1.0)


def classes_per_slice(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean number of foreground classes present in each slice of ``labels`` [B, H, W]. One class
    at a time keeps memory at one mask (512 px batches); no device sync."""
    flat = labels.reshape(labels.shape[0], -1)
    count = torch.zeros(labels.shape[0], device=labels.device)
    for c in range(1, num_classes):
        count += (flat == c).any(1)
    return count.mean()


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


def pseudo_label_diagnostics(
    probs: torch.Tensor,
    truth: torch.Tensor | None,
    threshold: float,
    weight: float,
    keep: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | float]:
    """The pseudo labels ``probs`` [B, C, H, W]: the share of pixels kept (``keep``, default:
    confidence reaches ``threshold``), the current unlabeled loss weight, the class balance of
    all and of the kept labels (:func:`class_balance`), the foreground classes per slice, and,
    where the dataset has the unlabeled slices' truth, the labels' Dice and the truth's
    foreground share and classes per slice."""
    confidence, pseudo = probs.detach().max(1)
    kept = confidence >= threshold if keep is None else keep
    out: dict[str, torch.Tensor | float] = {
        CONFIDENT_FRACTION: kept.float().mean(),
        CONSISTENCY_WEIGHT: weight,
        **class_balance(pseudo, kept),
        CLASSES_PER_SLICE: classes_per_slice(pseudo, probs.shape[1]),
    }
    if truth is not None:
        out[PSEUDO_DICE] = pseudo_label_dice(pseudo, truth, probs.shape[1])
        out[TRUE_FOREGROUND_FRACTION] = (truth > 0).float().mean()
        out[TRUE_CLASSES_PER_SLICE] = classes_per_slice(truth, probs.shape[1])
    return out
