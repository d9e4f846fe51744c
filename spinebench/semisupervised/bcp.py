"""Bidirectional Copy-Paste (BCP, Bai et al., CVPR 2023) as its ACDC code trains it
(DeepMed-Lab-ECNU/BCP ``code/ACDC_BCP_train.py`` at 7879f98; plugins/bcp/README.md cites every
line), shared by the ``bcp`` and ``abd`` plugins and CPS4 on those bases.

Two stages. ``pretrain``: labeled slices only, each pair pasted into each other through one box
of 2/3 of the side, supervised region by region. ``selftrain`` starts from pre-training's best
validation model (``Stage.restore_best``); an EMA teacher labels the unlabeled slices (arg-max,
then the largest component of each class) and the student learns from two mixes: an unlabeled
slice around a labeled patch, and a labeled slice around an unlabeled patch; in both, pixels
that come from an unlabeled slice weigh ``u_weight`` (0.5).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.config import UNHASHED, flatten
from spinebench.errors import ConfigError
from spinebench.method import Batch, Stage, StepOutput, frozen
from spinebench.semisupervised.components import largest_component_per_class
from spinebench.semisupervised.diagnostics import (
    PSEUDO_DICE,
    pseudo_label_diagnostics,
    pseudo_label_dice,
)
from spinebench.semisupervised.losses import MaskedDice
from spinebench.semisupervised.mixing import copy_paste, copy_paste_mask
from spinebench.semisupervised.refine import (
    PseudoLabelRefiner,
    Refined,
    pseudo_probabilities,
    refinement_diagnostics,
)

PRETRAIN, SELFTRAIN = "pretrain", "selftrain"
#: The source's budgets: 10000 pre-training and 30000 self-training iterations (lines 37-38).
SOURCE_PRETRAIN, SOURCE_SELFTRAIN = 10000, 30000

BCP_OPTIONS: dict[str, Any] = {
    "pretrain_fraction": SOURCE_PRETRAIN / SOURCE_SELFTRAIN,
    "selftrain_fraction": 1.0,
    "ema_decay": 0.99,
    "u_weight": 0.5,
    "box_fraction": 2 / 3,
    "largest_component": True,
}
"""BCP's options (``method.<name>``): the two stages' budgets as fractions of
``train.iterations`` (the source's 10000 + 30000 with the paper profile's 30000), EMA decay
(l.390), weight of unlabeled pixels (l.48), box side (l.134), the connected-component filter of
pseudo labels (l.365-366)."""

#: The quick profile trains every method's network for ``train.iterations`` in all: BCP's two
#: stages share them in the source's proportion, 1 : 3 (250 + 750 of 1000).
QUICK_BUDGET: dict[str, Any] = {"pretrain_fraction": 0.25, "selftrain_fraction": 0.75}

#: The paper profile's ``train.*`` for BCP and ABD: SGD 0.01, momentum 0.9, weight decay 1e-4
#: (l.223, l.334), 12 labeled + 12 unlabeled slices (l.39, l.46), and no learning-rate decay:
#: the ACDC script never changes the rate (poly power 0 keeps it constant).
BCP_SOURCE_TRAIN: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "poly_power": 0.0,
    "batch_size": 12,
    "unlabeled_batch_size": 12,
}


def check_copy_paste_config(config: dict[str, Any], method: str) -> None:
    """BCP pairs the two halves of the labeled batch with the two halves of the unlabeled one."""
    train = config["train"]
    if train["batch_size"] % 2 or train["batch_size"] != train["unlabeled_batch_size"]:
        raise ConfigError(
            f"{method} pastes the halves of each batch into each other: train.batch_size "
            f"({train['batch_size']}) must be even and equal to train.unlabeled_batch_size "
            f"({train['unlabeled_batch_size']})"
        )
    opts = config["method"]
    for key in ("pretrain_fraction", "selftrain_fraction"):
        if not 0 < opts[key] <= 10:
            raise ConfigError(f"{method}.{key} must be in (0, 10]")
    if not 0 < opts["box_fraction"] < 1:
        raise ConfigError(f"{method}.box_fraction must be in (0, 1)")
    if not 0 <= opts["ema_decay"] < 1 or opts["u_weight"] < 0:
        raise ConfigError(f"{method}.ema_decay must be in [0, 1) and {method}.u_weight >= 0")


def stage_iterations(config: dict[str, Any], stage: str) -> int:
    """A stage's budget: ``<stage>_fraction x train.iterations`` (paper: 10000 and 30000 of
    30000, the source's; quick: 250 and 750 of 1000, :data:`QUICK_BUDGET`)."""
    fraction = float(config["method"][f"{stage}_fraction"])
    return max(1, round(fraction * int(config["train"]["iterations"])))


def bcp_stages(
    config: dict[str, Any], cache_key: dict[str, Any] | None, strong: bool = False
) -> list[Stage]:
    """Pre-training (validated; its best model is what self-training starts from, and what the
    stage cache keeps) and self-training (``strong``: ABD's strong views of both batches)."""
    return [
        Stage(
            name=PRETRAIN,
            iterations=stage_iterations(config, PRETRAIN),
            prefix=f"{PRETRAIN}/",
            unlabeled=False,
            strong_views=0,
            restore_best=True,
            cache_key=cache_key,
        ),
        Stage(
            name=SELFTRAIN,
            iterations=stage_iterations(config, SELFTRAIN),
            prefix=f"{SELFTRAIN}/",
            unlabeled=True,
            strong_views=1 if strong else 0,
            labeled_strong_views=1 if strong else 0,
        ),
    ]


def pretrain_cache_key(
    config: dict[str, Any], version: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What pre-training computes from, besides the split and data the engine adds: the whole
    config but the self-training options; ``extra``: whatever else changes it in the hosting
    method (CPS4's VLM is built first and trained first, which moves the network's random
    start and the stage's seed)."""
    kept = ("method.pretrain_fraction", "method.box_fraction")
    flat = {k: v for k, v in flatten(config).items() if k not in UNHASHED}
    return {
        "version": version,
        "config": {k: v for k, v in flat.items() if not k.startswith("method.") or k in kept},
        **({"extra": extra} if extra else {}),
    }


@torch.no_grad()
def ema_state_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """BCP's ``update_model_ema`` (l.123-129): every entry of the state (BatchNorm statistics
    included) becomes ``decay x teacher + (1 - decay) x student``, from the first step (no
    warm-up, unlike SSL4MIS's Mean Teacher); integer entries are copied."""
    source = student.state_dict()
    for name, value in teacher.state_dict().items():
        if value.is_floating_point():
            value.lerp_(source[name].detach(), 1.0 - decay)
        else:
            value.copy_(source[name])


def region_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, region: torch.Tensor
) -> torch.Tensor:
    """Pixel cross-entropy averaged over ``region`` [B, H, W] (its pixels only, l.177-178)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * region).sum() / region.sum().clamp_min(1)


class CopyPasteLoss(nn.Module):
    """BCP's ``mix_loss`` (l.167-179): Dice and cross-entropy of one mixed batch, the outside
    of the box against ``outside`` labels with weight ``w_out``, the box against ``inside``
    labels with ``w_in``. Dice: softmax, all classes including background, squared
    denominators, pooled over the batch, counted inside the region only (BCP after its
    2023-10-29 fix; the paper's code counted background over the whole image)."""

    def __init__(self) -> None:
        super().__init__()
        self.dice = MaskedDice()

    def forward(
        self,
        logits: torch.Tensor,
        outside: torch.Tensor,
        inside: torch.Tensor,
        mask: torch.Tensor,
        w_out: float,
        w_in: float,
        keep_out: torch.Tensor | None = None,
        keep_in: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Dice, CE); ``mask`` [H, W] is 1 outside the box; ``keep_*`` [B, H, W] drop pixels
        a refiner does not vouch for from a region."""
        out_region = mask.expand(logits.shape[0], *mask.shape)
        in_region = 1 - out_region
        if keep_out is not None:
            out_region = out_region * keep_out
        if keep_in is not None:
            in_region = in_region * keep_in
        dice = w_out * self.dice(logits, outside, out_region) + w_in * self.dice(
            logits, inside, in_region
        )
        ce = w_out * region_cross_entropy(logits, outside, out_region) + w_in * (
            region_cross_entropy(logits, inside, in_region)
        )
        return dice, ce


@dataclass
class PseudoLabels:
    """The teacher's labels of the unlabeled halves: ``labels`` [B, H, W] after the component
    filter, the probabilities they came from, and the refiner's restriction (or None)."""

    labels: torch.Tensor
    refined: Refined
    diagnostics: dict[str, torch.Tensor | float]


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's ``img_a``/``img_b`` (and ``uimg_a``/``uimg_b``): first and second half."""
    half = x.shape[0] // 2
    return x[:half], x[half:]


class BCPStep:
    """The losses of BCP's two stages; a refiner rewrites the teacher's probabilities."""

    def __init__(self, options: dict[str, Any], class_names: list[str]) -> None:
        self.opts = options
        self.class_names = class_names
        self.loss = CopyPasteLoss()

    def mask(self, images: torch.Tensor) -> torch.Tensor:
        """One box per step, for the whole batch and both mixes (l.367)."""
        return copy_paste_mask(
            images.shape[-2], images.shape[-1], float(self.opts["box_fraction"]), images.device
        )

    def pretrain(self, net: nn.Module, batch: Batch) -> StepOutput:
        """Labeled A around a patch of labeled B, every region weight 1 (l.241-251)."""
        img_a, img_b = halves(batch.image)
        lab_a, lab_b = halves(batch.label)
        mask = self.mask(batch.image)
        logits = net(copy_paste(img_a, img_b, mask))
        dice, ce = self.loss(logits, lab_a, lab_b, mask, 1.0, 1.0)
        return StepOutput(
            losses={"loss": (dice + ce) / 2, "dice": dice.detach(), "ce": ce.detach()}
        )

    @torch.no_grad()
    def pseudo_labels(
        self,
        teacher: nn.Module,
        unlabeled: torch.Tensor,
        truth: torch.Tensor | None,
        refiner: PseudoLabelRefiner | None,
        prepared: Any,
    ) -> PseudoLabels:
        """The teacher's arg-max on each unlabeled half (one forward each, l.363-364), refined
        when there is a refiner, then filtered to each class's largest component."""
        logits = torch.cat([teacher(half).float() for half in halves(unlabeled)])
        refined = pseudo_probabilities(logits, refiner, prepared)
        raw = refined.probs.argmax(1)
        classes = refined.probs.shape[1]
        labels = (
            largest_component_per_class(raw, classes) if self.opts["largest_component"] else raw
        )
        keep = (
            torch.ones_like(labels, dtype=torch.bool)
            if refined.restrict is None
            else refined.restrict
        )
        diagnostics = pseudo_label_diagnostics(
            refined.probs, truth, 0.0, self.opts["u_weight"], keep=keep
        )
        foreground = (raw > 0).sum().clamp_min(1)
        diagnostics["pseudo/component_removed_fraction"] = (
            (raw > 0) & (labels == 0)
        ).sum() / foreground
        if truth is not None:
            diagnostics[f"{PSEUDO_DICE}_before_filter"] = diagnostics[PSEUDO_DICE]
            diagnostics[PSEUDO_DICE] = pseudo_label_dice(labels, truth, classes)
        if refiner is not None:
            base = pseudo_probabilities(logits, None, None).probs
            diagnostics |= refinement_diagnostics(base, refined, keep, truth, self.class_names)
        return PseudoLabels(labels, refined, diagnostics)

    @staticmethod
    def mixes(
        labeled: torch.Tensor, unlabeled: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(unlabeled A around labeled A, labeled B around unlabeled B), l.372-373."""
        img_a, img_b = halves(labeled)
        uimg_a, uimg_b = halves(unlabeled)
        return copy_paste(uimg_a, img_a, mask), copy_paste(img_b, uimg_b, mask)

    def mixed_loss(
        self,
        out_unl: torch.Tensor,
        out_l: torch.Tensor,
        labels: torch.Tensor,
        pseudo: PseudoLabels,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Dice, CE) of both mixes, ``u_weight`` on pixels from unlabeled slices (l.376-381)."""
        w = float(self.opts["u_weight"])
        lab_a, lab_b = halves(labels)
        plab_a, plab_b = halves(pseudo.labels)
        restrict = pseudo.refined.restrict
        keep_a, keep_b = halves(restrict) if restrict is not None else (None, None)
        dice_u, ce_u = self.loss(out_unl, plab_a, lab_a, mask, w, 1.0, keep_out=keep_a)
        dice_l, ce_l = self.loss(out_l, lab_b, plab_b, mask, 1.0, w, keep_in=keep_b)
        return dice_u + dice_l, ce_u + ce_l

    def selftrain(
        self,
        student: nn.Module,
        teacher: nn.Module,
        batch: Batch,
        refiner: PseudoLabelRefiner | None = None,
    ) -> StepOutput:
        """``(Dice + CE) / 2`` over both mixes; the source's ramp-up weight is computed and
        never used (l.370, l.395), so there is none."""
        if batch.unlabeled_weak is None:  # --labeled 1.0: pre-training's mixing continues
            return self.pretrain(student, batch)
        unlabeled = batch.unlabeled_weak
        prepared = refiner.prepare(unlabeled) if refiner is not None else None
        pseudo = self.pseudo_labels(teacher, unlabeled, batch.unlabeled_truth, refiner, prepared)
        mask = self.mask(unlabeled)
        mix_unl, mix_l = self.mixes(batch.image, unlabeled, mask)
        out_unl, out_l = student(mix_unl), student(mix_l)
        dice, ce = self.mixed_loss(out_unl, out_l, batch.label, pseudo, mask)
        return StepOutput(
            losses={"loss": (dice + ce) / 2, "dice": dice.detach(), "ce": ce.detach()},
            diagnostics=pseudo.diagnostics,
        )


class StudentTeacher(nn.Module):
    """BCP's student and its EMA teacher: the teacher becomes the student's copy when
    self-training starts (both from pre-training's best model, l.309, 335-336), runs in the
    student's mode (train mode, as the source's, l.344) and follows it after every step."""

    def __init__(self, student: nn.Module, decay: float) -> None:
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        frozen(self.teacher.parameters())
        self.decay = decay

    def start_teacher(self) -> None:
        self.teacher.load_state_dict(self.student.state_dict())

    def update_teacher(self) -> None:
        ema_state_update(self.teacher, self.student, self.decay)
