"""The pseudo-label refiner contract: what a semi-supervised base hands a refiner at the one
place it makes pseudo labels, and what it gets back.

A base (UniMatch's weak view, BCP's and ABD's teacher, CPS4's own Mean Teacher stage) computes
logits on unlabeled images and turns them into class probabilities; with a refiner it turns the
*refined* probabilities into its labels, confidences and kept pixels instead. A refiner sees the
images once per step (:meth:`PseudoLabelRefiner.prepare`, e.g. the frozen VLM's class maps)
and then any number of logit maps of those images (:meth:`PseudoLabelRefiner.refine`). It never
sees the hidden truth; the diagnostics that compare labels with it are computed by the base
(:func:`refinement_diagnostics`). A refiner is an ``nn.Module`` owned by the method that hosts
it, so its weights travel in the method's state; its training (the VLM's stage) is the
method's stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from spinebench.data.classmap import ClassMap
from spinebench.semisupervised.diagnostics import PSEUDO_DICE, pseudo_label_dice


@dataclass(frozen=True)
class Refined:
    """Pseudo-label probabilities after refinement.

    ``probs`` [B, C, H, W]: what the base takes labels (arg-max) and confidences (max) from.
    ``restrict`` [B, H, W] bool or None: pixels the refiner vouches for; the base keeps a pixel
    only where its own rule and ``restrict`` agree (None: no restriction). ``candidates``: other
    label maps [B, H, W] the refiner considered (``pseudo/dice_<name>`` against the truth).
    ``diagnostics``: the refiner's own numbers (weights, reliabilities), logged as they are.
    """

    probs: torch.Tensor
    restrict: torch.Tensor | None = None
    candidates: dict[str, torch.Tensor] = field(default_factory=dict)
    diagnostics: dict[str, torch.Tensor | float] = field(default_factory=dict)


class PseudoLabelRefiner(Protocol):
    """Rewrites a base's pseudo-label probabilities on unlabeled images."""

    def prepare(self, images: torch.Tensor) -> Any:
        """What the refiner computes once from the unlabeled images of a step (no gradient)."""
        ...

    def refine(self, logits: torch.Tensor, prepared: Any) -> Refined:
        """Refined probabilities from the base's logits [B, C, H, W] of the same images."""
        ...


def pseudo_probabilities(
    logits: torch.Tensor, refiner: PseudoLabelRefiner | None, prepared: Any
) -> Refined:
    """The base's own softmax (no refiner: exactly what the base computes alone) or the
    refiner's probabilities, from detached logits."""
    if refiner is None:
        return Refined(logits.detach().float().softmax(1))
    return refiner.refine(logits.detach(), prepared)


def kept(confidence: torch.Tensor, threshold: float, refined: Refined) -> torch.Tensor:
    """The pixels a thresholding base keeps: confident, and vouched for by the refiner."""
    keep = confidence >= threshold
    return keep if refined.restrict is None else keep & refined.restrict


def label_names(class_map: ClassMap) -> list[str]:
    """The name of every label value, background first (per-class diagnostics)."""
    return ["background", *(c.name for c in class_map.classes)]


def refinement_diagnostics(
    base_probs: torch.Tensor,
    refined: Refined,
    keep: torch.Tensor,
    truth: torch.Tensor | None,
    class_names: list[str],
) -> dict[str, torch.Tensor | float]:
    """How the refined labels compare with the base's own, so a reader sees whether the
    refiner helped this base: ``pseudo/dice_teacher`` (the base's labels, whichever network
    made them), ``pseudo/dice_fused`` (the refined labels it trains with), one
    ``pseudo/dice_<name>`` per candidate, the share of pixels whose label the refiner changed,
    the kept share of each class (``class_names``: background first), and the refiner's own
    numbers. Diagnostics only, never a loss."""
    labels = refined.probs.argmax(1)
    out: dict[str, torch.Tensor | float] = dict(refined.diagnostics)
    out["pseudo/changed_fraction"] = (labels != base_probs.argmax(1)).float().mean()
    for c, name in enumerate(class_names):
        mask = labels == c
        out[f"pseudo/kept_fraction/{name}"] = (mask & keep).sum() / mask.sum().clamp_min(1)
    if truth is not None:
        classes = base_probs.shape[1]
        maps = {"teacher": base_probs.argmax(1), **refined.candidates, "fused": labels}
        for name, candidate in maps.items():
            out[f"{PSEUDO_DICE}_{name}"] = pseudo_label_dice(candidate, truth, classes)
    return out
