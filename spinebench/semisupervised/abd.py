"""ABD (Adaptive Bidirectional Displacement, Chi et al., CVPR 2024) on BCP, as its ACDC code
trains it (chy-upc/ABD ``code/train_ACDC_BCP.py`` at 4efd525; plugins/abd/README.md cites every
line), shared by the ``abd`` plugin and CPS4 on the ABD base.

BCP's pre-training, then two students from its best model: student 1 learns from BCP's mixes of
the weak views, student 2 from the same mixes of the strong views (photometric jitter and blur,
and a cutout whose labels become background); one EMA teacher (of student 1) labels both views.
Each student also learns from the other's arg-max by Dice, on the mixed images and on the same
images after the displacement of patches between the two views (ABD-R).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spinebench.errors import ConfigError
from spinebench.method import Batch, StepOutput
from spinebench.semisupervised.bcp import BCP_OPTIONS, BCPStep
from spinebench.semisupervised.displacement import choose, displace
from spinebench.semisupervised.losses import MaskedDice
from spinebench.semisupervised.mixing import cutmix_box
from spinebench.semisupervised.refine import PseudoLabelRefiner

ABD_OPTIONS: dict[str, Any] = {
    **BCP_OPTIONS,
    "grid": 4,
    "top_num": 4,
    "adaptive_p": 0.5,
    "cutout_p": 0.5,
}
"""ABD's options: BCP's, plus the displacement grid (256 / patch 64 = 4, l.48-50), the number of
confident candidate patches (l.52), the probability of the KL-chosen candidate
(displacement.py l.67) and of the strong view's cutout (dataset.py ``cutout_gray``)."""


def check_displacement_config(config: dict[str, Any], method: str) -> None:
    """The grid must cut a slice into equal patches; the candidates must exist."""
    opts, size = config["method"], int(config["data"]["image_size"])
    if opts["grid"] < 1 or size % opts["grid"]:
        raise ConfigError(
            f"{method}.grid {opts['grid']} must divide data.image_size {size} into equal patches"
        )
    if not 1 <= opts["top_num"] <= opts["grid"] ** 2:
        raise ConfigError(f"{method}.top_num must be between 1 and {method}.grid squared")
    if not 0 <= opts["adaptive_p"] <= 1 or not 0 <= opts["cutout_p"] <= 1:
        raise ConfigError(f"{method}.adaptive_p and {method}.cutout_p must be in [0, 1]")


def cutout(
    images: torch.Tensor, labels: torch.Tensor | None, p: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ABD's ``cutout_gray``: with probability ``p`` per image, one box (area 2-40 %, aspect
    ratio 0.3-3.3, CutMix's sampler) filled with random pixels at the image's minimum or
    maximum (the source's random 0/1 in [0, 1] images); the labels there become background."""
    images = images.clone()
    labels = labels.clone() if labels is not None else None
    for i in range(images.shape[0]):
        box = cutmix_box(images.shape[-2], images.shape[-1], p).to(images.device)
        if not box.any():
            continue
        low, high = images[i].min(), images[i].max()
        coin = torch.rand(images.shape[-2:], device=images.device) < 0.5
        images[i] = torch.where(box, torch.where(coin, high, low), images[i])
        if labels is not None:
            labels[i] = torch.where(box, torch.zeros_like(labels[i]), labels[i])
    return images, labels


class ABDStep:
    """The self-training losses of ABD for two students and the teacher of student 1."""

    def __init__(self, options: dict[str, Any], class_names: list[str]) -> None:
        self.opts = options
        self.bcp = BCPStep(options, class_names)
        self.dice = MaskedDice()

    def _cross_dice(self, logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Dice of one student's prediction against the other's detached arg-max, every pixel
        (the source's unmasked ``DiceLoss``)."""
        target = other.detach().argmax(1)
        return self.dice(logits, target, torch.ones_like(target, dtype=torch.bool))

    def __call__(
        self,
        student1: nn.Module,
        student2: nn.Module,
        teacher: nn.Module,
        batch: Batch,
        refiner: PseudoLabelRefiner | None = None,
    ) -> StepOutput:
        if batch.unlabeled_weak is None or batch.unlabeled_strong is None:  # --labeled 1.0
            one, two = self.bcp.pretrain(student1, batch), self.bcp.pretrain(student2, batch)
            return StepOutput(losses={"loss": one.losses["loss"] + two.losses["loss"]})
        assert batch.image_strong is not None, "ABD's self-training stage draws strong views"
        o = self.opts
        weak, truth = batch.unlabeled_weak, batch.unlabeled_truth
        image_s, label_s = cutout(batch.image_strong, batch.label, float(o["cutout_p"]))
        strong, _ = cutout(batch.unlabeled_strong[0], None, float(o["cutout_p"]))
        assert label_s is not None
        # one refiner pass: the strong view keeps the weak view's geometry (l.364-372)
        prepared = refiner.prepare(weak) if refiner is not None else None
        pseudo = self.bcp.pseudo_labels(teacher, weak, truth, refiner, prepared)
        pseudo_s = self.bcp.pseudo_labels(teacher, strong, truth, refiner, prepared)
        mask = self.bcp.mask(weak)
        unl1, lab1 = self.bcp.mixes(batch.image, weak, mask)
        unl2, lab2 = self.bcp.mixes(image_s, strong, mask)
        out_unl1, out_l1 = student1(unl1), student1(lab1)
        out_unl2, out_l2 = student2(unl2), student2(lab2)
        dice1, ce1 = self.bcp.mixed_loss(out_unl1, out_l1, batch.label, pseudo, mask)
        dice2, ce2 = self.bcp.mixed_loss(out_unl2, out_l2, label_s, pseudo_s, mask)
        out1, out2 = torch.cat((out_unl1, out_l1)), torch.cat((out_unl2, out_l2))
        cross1, cross2 = self._cross_dice(out1, out2), self._cross_dice(out2, out1)

        probs1, probs2 = out1.detach().float().softmax(1), out2.detach().float().softmax(1)
        adaptive = torch.rand(out1.shape[0], device=out1.device) < float(o["adaptive_p"])
        grid, top = int(o["grid"]), int(o["top_num"])
        choice = choose(
            probs1.amax(1), probs2.amax(1), out1.detach().float(), out2.detach().float(),
            grid, top, adaptive,
        )  # fmt: skip
        moved1, moved2 = displace(torch.cat((unl1, lab1)), torch.cat((unl2, lab2)), choice, grid)
        displaced = torch.cat((moved1, moved2))
        disp1, disp2 = student1(displaced), student2(displaced)
        cross3, cross4 = self._cross_dice(disp1, disp2), self._cross_dice(disp2, disp1)

        loss1 = (dice1 + ce1) / 2 + cross1 + cross3
        loss2 = (dice2 + ce2) / 2 + cross2 + cross4
        diagnostics = dict(pseudo.diagnostics)
        diagnostics["pseudo/agreement"] = (probs1.argmax(1) == probs2.argmax(1)).float().mean()
        diagnostics["pseudo/adaptive_fraction"] = adaptive.float().mean()
        return StepOutput(
            losses={
                "loss": loss1 + loss2,
                "student1": loss1.detach(),
                "student2": loss2.detach(),
                "cross_mixed": ((cross1 + cross2) / 2).detach(),
                "cross_displaced": ((cross3 + cross4) / 2).detach(),
            },
            diagnostics=diagnostics,
        )


def abd_students(student1: nn.Module, student2: nn.Module) -> None:
    """Self-training starts both students from pre-training's best model (l.331-333)."""
    student2.load_state_dict(student1.state_dict())
