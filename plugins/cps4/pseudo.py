"""CPS4's stage-2 pseudo labels: the teacher's prediction combined with the VLM's class maps."""

from __future__ import annotations

from dataclasses import dataclass

import torch

PSEUDO_LABEL_RULES = ("fused", "teacher", "vlm", "agree")
"""Values of ``method.pseudo_label``; the first is the default."""


@dataclass(frozen=True)
class PseudoLabels:
    """``probs`` [B, C, H, W] the rule's class probabilities, ``labels`` [B, H, W] their arg-max,
    ``keep`` [B, H, W] the pixels the unlabeled loss uses."""

    probs: torch.Tensor
    labels: torch.Tensor
    keep: torch.Tensor


def combine(teacher: torch.Tensor, vlm: torch.Tensor, rule: str, threshold: float) -> PseudoLabels:
    """Pseudo labels from teacher and VLM probabilities (both [B, C, H, W], summing to 1).

    - ``teacher``: the teacher's probabilities alone (plain Mean Teacher pseudo labels);
    - ``vlm``: the VLM's fused class maps alone;
    - ``fused``: their average ``(p_teacher + p_vlm) / 2``;
    - ``agree``: the average, kept only where the two arg-maxes agree (where they do, the
      average's arg-max is that common class).

    A pixel is kept when the rule's top probability reaches ``threshold`` (and, for ``agree``,
    the two agree).
    """
    if rule not in PSEUDO_LABEL_RULES:
        raise ValueError(f"unknown pseudo-label rule {rule!r}; use one of {PSEUDO_LABEL_RULES}")
    if rule == "teacher":
        probs = teacher
    elif rule == "vlm":
        probs = vlm
    else:
        probs = (teacher + vlm) / 2
    confidence, labels = probs.max(1)
    keep = confidence >= threshold
    if rule == "agree":
        keep &= teacher.argmax(1) == vlm.argmax(1)
    return PseudoLabels(probs, labels, keep)
