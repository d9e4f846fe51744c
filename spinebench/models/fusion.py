"""Fusion of per-class binary logit maps into one multi-class map.

A vision-language segmenter (CLIPSeg, CPS4's VLM) predicts one independent sigmoid map per class
prompt and no background map. Evaluation and pseudo labels need one label per pixel, so the K
binary maps become K+1 multi-class scores (channel 0 is background). Both rules build
unnormalised weights ``w = [w_bg, p_1, ..., p_K]`` with ``p_k = sigmoid(logit_k)``, so the arg-max
of ``w`` is the rule and ``w / sum(w)`` is a probability vector a consumer can average with a
softmax:

- ``"threshold"``: background where no class is above ``threshold``, else the arg-max class.
  ``w_bg = (1 - max_k p_k) * t / (1 - t)``, which is at least every ``p_k`` exactly when
  ``max_k p_k <= t`` (at ``t = 0.5``, ``w_bg = 1 - max_k p_k``). Ties go to background: a class
  must be strictly above the threshold.
- ``"clipseg"``: the multi-label rule of the CLIPSeg repository (timojl/clipseg
  ``models/clipseg.py`` ``CLIPSegMultiLabel``, lines 521-530 @ a55510bc): every class channel
  gets its sigmoid, the background channel ``3 x`` its sigmoid, then arg-max. The repository has
  a "background" prompt; here there is none, so the background map is the probability that no
  class claims the pixel if the binary maps were independent: ``w_bg = s * prod_k (1 - p_k)``
  with ``s = background_scale``.

Everything is computed in log space (``log sigmoid``), so saturated logits give finite scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FUSION_RULES = ("threshold", "clipseg")
"""Names accepted by :func:`fuse_binary_maps`."""


def fuse_binary_maps(
    logits: torch.Tensor,
    rule: str = "threshold",
    threshold: float = 0.5,
    background_scale: float = 3.0,
) -> torch.Tensor:
    """[B, K, H, W] binary logits -> [B, K+1, H, W] log-probabilities (channel 0: background).

    ``argmax(dim=1)`` of the result is the fusion ``rule``; ``softmax(dim=1)`` (or ``exp``) gives
    :func:`fused_probabilities`. ``threshold`` applies to ``"threshold"``, ``background_scale``
    to ``"clipseg"``. Computed in float32 whatever the input precision.
    """
    if logits.ndim != 4:
        raise ValueError(f"expected binary logits [B, K, H, W], got shape {list(logits.shape)}")
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; use one of {', '.join(FUSION_RULES)}")
    logits = logits.float()
    log_p = F.logsigmoid(logits)
    if rule == "threshold":
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        # log(1 - sigmoid(max logit)) = logsigmoid(-max logit): finite where sigmoid saturates.
        top = logits.amax(dim=1, keepdim=True)
        log_bg = F.logsigmoid(-top) + math.log(threshold / (1.0 - threshold))
    else:
        if not background_scale > 0.0:
            raise ValueError(f"background_scale must be positive, got {background_scale}")
        log_bg = F.logsigmoid(-logits).sum(dim=1, keepdim=True) + math.log(background_scale)
    return torch.cat((log_bg, log_p), dim=1).log_softmax(dim=1)


def fused_probabilities(
    logits: torch.Tensor,
    rule: str = "threshold",
    threshold: float = 0.5,
    background_scale: float = 3.0,
) -> torch.Tensor:
    """[B, K, H, W] binary logits -> [B, K+1, H, W] probabilities that sum to 1 over classes.

    The normalised weights of the rule (module docstring): background ``(1 - max p) t/(1 - t)``
    or ``s * prod(1 - p)``, class ``k`` its sigmoid, divided by their sum. Same arg-max as
    :func:`fuse_binary_maps`.
    """
    return fuse_binary_maps(logits, rule, threshold, background_scale).exp()


def binary_targets(labels: torch.Tensor, num_foreground: int) -> torch.Tensor:
    """[B, H, W] integer labels -> [B, K, H, W] float one-hot of the foreground classes 1..K."""
    classes = torch.arange(1, num_foreground + 1, device=labels.device).view(1, -1, 1, 1)
    return (labels[:, None] == classes).float()


__all__ = ["FUSION_RULES", "binary_targets", "fuse_binary_maps", "fused_probabilities"]
