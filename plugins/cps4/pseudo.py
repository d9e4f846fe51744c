"""CPS4's stage-2 pseudo labels: the teacher's prediction combined with the VLM's class maps.

Every rule takes plain tensors, so each can be checked on hand-made inputs; README.md gives the
equations and the sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PSEUDO_LABEL_RULES = ("reliable", "teacher", "fused", "agree", "logit_sum", "vlm")
"""Values of ``method.pseudo_label``; the first is the default."""


@dataclass(frozen=True)
class VlmMaps:
    """What the frozen VLM says about the unlabeled slices.

    ``probs`` [B, K+1, H, W]: its binary maps fused to class probabilities (channel 0 is
    background). ``similarity`` [B, K+1, H, W] or None: min-max normalised patch-text similarity
    maps (:func:`similarity_maps`). ``weights`` [K+1] or None: per-class weight of the VLM
    (:func:`reliability_weights`).
    """

    probs: torch.Tensor
    similarity: torch.Tensor | None = None
    weights: torch.Tensor | None = None


def similarity_maps(similarity: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, K, h, w] patch-text similarities -> [B, K+1, H, W] maps in [0, 1].

    As PromptSSL's ``text_mask_generation.py``: each class's map is min-max normalised over the
    image (a constant map becomes 0) and nearest-upsampled to the slice. Its background has a
    text of its own; ours has none (stage 1 learns a background score, constant over the
    image), so channel 0 is 0.
    """
    flat = similarity.float().flatten(2)
    low = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - low
    unit = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    maps = unit.view_as(similarity)
    maps = F.pad(maps, (0, 0, 0, 0, 1, 0))
    return F.interpolate(maps, size=size, mode="nearest")


def reliability_weights(
    vlm: torch.Tensor, teacher: torch.Tensor, floor: float = 0.0, eps: float = 1e-6
) -> torch.Tensor:
    """Per-class weight of the VLM: ``w_c = max(0, r_vlm_c - r_teacher_c) / r_vlm_c``, and 0
    where ``r_vlm_c < floor``.

    ``vlm``, ``teacher`` [K]: per-class Dice of each on the validation split. A class the VLM
    segments no better than the teacher gets weight 0 (the teacher alone decides it); the more
    the VLM is ahead, the more it counts. ``floor`` (``cps4.vlm_min_reliability``): a VLM that
    segments a class worse than this is never trusted with it, however poor the network still
    is (a network at its first validation can be behind a VLM that is itself near 0; given the
    class, the VLM then erases it from the pseudo labels and the network never learns it: the
    collapse README.md describes). Background (channel 0) always has weight 0: the binary maps
    have no background score to measure. Returns [K+1].
    """
    w = (vlm - teacher).clamp_min(0) / vlm.clamp_min(eps)
    w = torch.where(vlm >= floor, w, torch.zeros_like(w))
    return F.pad(w.float(), (1, 0))


def rule_probabilities(teacher_logits: torch.Tensor, vlm: VlmMaps, rule: str) -> torch.Tensor:
    """Class probabilities of a rule, from the teacher's logits [B, C, H, W] and the VLM's maps.

    With ``T = softmax(teacher_logits)`` and ``V = vlm.probs``:

    - ``teacher``: ``T`` alone (plain Mean Teacher pseudo labels);
    - ``vlm``: ``V`` alone;
    - ``fused`` and ``agree``: ``(T + V) / 2`` (``agree`` keeps only pixels where
      ``argmax T = argmax V``, :func:`agreement`);
    - ``logit_sum``: ``softmax(teacher_logits + M)`` with ``M = vlm.similarity``, PromptSSL's
      released integration (``networks/trainer_2d.py`` 204-208): the normalised similarity maps
      added to the teacher's raw logits before the arg-max;
    - ``reliable``: per class ``c``, ``(1 - w_c) T_c + w_c V_c`` with ``w = vlm.weights``,
      renormalised: where the VLM is not more reliable than the teacher (``w = 0``) the labels
      are the teacher's, and with ``w = 0`` on every class the probabilities are ``T`` exactly.

    The base keeps a pixel when the top probability reaches its threshold (and, for ``agree``,
    the two agree).
    """
    if rule not in PSEUDO_LABEL_RULES:
        raise ValueError(f"unknown pseudo-label rule {rule!r}; use one of {PSEUDO_LABEL_RULES}")
    teacher = teacher_logits.float().softmax(1)
    if rule == "teacher":
        return teacher
    if rule == "vlm":
        return vlm.probs
    if rule == "logit_sum":
        if vlm.similarity is None:
            raise ValueError("the logit_sum rule needs the VLM's similarity maps")
        return (teacher_logits.float() + vlm.similarity).softmax(1)
    if rule == "reliable":
        if vlm.weights is None:
            raise ValueError("the reliable rule needs per-class VLM weights")
        if not bool(vlm.weights.any()):
            # no class trusts the VLM: the teacher's probabilities as they are, since
            # renormalising them anyway moves them by ~1e-7, enough to flip a confidence mask
            return teacher
        w = vlm.weights.view(1, -1, 1, 1).to(teacher)
        mixed = (1 - w) * teacher + w * vlm.probs
        return mixed / mixed.sum(1, keepdim=True).clamp_min(1e-12)
    return (teacher + vlm.probs) / 2


def agreement(teacher_logits: torch.Tensor, vlm: VlmMaps) -> torch.Tensor:
    """[B, H, W]: where the teacher's and the VLM's arg-max agree (the ``agree`` rule)."""
    teacher: torch.Tensor = teacher_logits.float().softmax(1).argmax(1) == vlm.probs.argmax(1)
    return teacher
