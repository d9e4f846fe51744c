"""UniMatch's training step as its medical scenario trains it (``more-scenarios/medical/
unimatch.py``), shared by the ``unimatch`` plugin and CPS4 on the UniMatch base.

The weak view's prediction is the pseudo label; two strong views (the engine's colour jitter and
blur, then CutMix between unlabeled images) and a feature-perturbed decoding of the weak view
must match it where it is confident. With a refiner, the weak view's probabilities and the
pasted images' eval-mode ones are the refiner's; without one the step is UniMatch's own.
plugins/unimatch/README.md cites every default.
"""

from __future__ import annotations

from typing import Any

import torch

from spinebench.losses import SupervisedLoss
from spinebench.method import Batch, Stage, StepOutput
from spinebench.models.backbone import SegmentationNet
from spinebench.semisupervised.diagnostics import pseudo_label_diagnostics
from spinebench.semisupervised.losses import MaskedDice
from spinebench.semisupervised.mixing import cutmix_boxes, mix_partners, paste
from spinebench.semisupervised.refine import (
    PseudoLabelRefiner,
    kept,
    pseudo_probabilities,
    refinement_diagnostics,
)

UNIMATCH_OPTIONS: dict[str, Any] = {"conf_thresh": 0.95, "fp_dropout": 0.5, "cutmix_p": 0.5}
"""UniMatch's options (``method.<name>``) and their defaults (``configs/acdc.yaml`` 11,
``model/unet.py`` 171, ``dataset/transform.py`` 32)."""

#: Weights of (labeled, strong 1, strong 2, feature-perturbed) losses and the overall divisor
#: (unimatch.py line 175).
WEIGHTS = (1.0, 0.25, 0.25, 0.5)
DIVISOR = 2.0
#: Weight of all unlabeled terms together in the total loss, logged as the consistency weight.
UNLABELED_WEIGHT = sum(WEIGHTS[1:]) / DIVISOR


def unimatch_stage(config: dict[str, Any]) -> Stage:
    """UniMatch's one stage: ``train.iterations`` steps with two strong views."""
    return Stage(
        name="train", iterations=int(config["train"]["iterations"]), unlabeled=True, strong_views=2
    )


def total_loss(
    labeled: torch.Tensor, strong1: torch.Tensor, strong2: torch.Tensor, perturbed: torch.Tensor
) -> torch.Tensor:
    """``(Lx + 0.25 Ls1 + 0.25 Ls2 + 0.5 Lfp) / 2``."""
    w_x, w_s1, w_s2, w_fp = WEIGHTS
    return (w_x * labeled + w_s1 * strong1 + w_s2 * strong2 + w_fp * perturbed) / DIVISOR


@torch.no_grad()
def _eval_mode_logits(net: SegmentationNet, images: torch.Tensor) -> torch.Tensor:
    """Logits of the images pasted in, from an eval-mode forward (BN running statistics, no
    dropout), as the source predicts its mix batch."""
    was_training = net.training
    net.eval()
    try:
        logits: torch.Tensor = net(images)
    finally:
        net.train(was_training)
    return logits


class UniMatchStep:
    """The losses of one UniMatch step for ``net``; ``refiner`` rewrites its pseudo labels."""

    def __init__(self, options: dict[str, Any], joint: bool, class_names: list[str]) -> None:
        self.opts = options
        self.joint = joint  # train.ssl_forward=joint: labeled and weak views in one forward
        self.class_names = class_names
        self.supervised = SupervisedLoss()
        self.unsupervised = MaskedDice()

    def __call__(
        self, net: SegmentationNet, batch: Batch, refiner: PseudoLabelRefiner | None = None
    ) -> StepOutput:
        if batch.unlabeled_weak is None or batch.unlabeled_strong is None:  # --labeled 1.0
            return StepOutput(losses={"loss": self.supervised(net(batch.image), batch.label)})
        threshold = self.opts["conf_thresh"]
        weak = batch.unlabeled_weak
        n_lab, n_unl = batch.image.shape[0], weak.shape[0]
        height, width = weak.shape[-2:]

        partner = mix_partners(n_unl).to(weak.device)
        box1, box2 = (
            cutmix_boxes(n_unl, height, width, self.opts["cutmix_p"], weak.device) for _ in range(2)
        )
        prepared = refiner.prepare(weak) if refiner is not None else None
        mix = pseudo_probabilities(_eval_mode_logits(net, weak), refiner, prepared)
        conf_mix, label_mix = mix.probs.max(1)
        keep_mix = kept(conf_mix, threshold, mix)[partner]
        conf_mix, label_mix = conf_mix[partner], label_mix[partner]
        strong1, strong2 = batch.unlabeled_strong
        strong1 = paste(strong1, strong1[partner], box1)
        strong2 = paste(strong2, strong2[partner], box2)

        p = self.opts["fp_dropout"]
        if self.joint:  # unimatch.py 145-147
            clean, perturbed = net.forward_feature_dropout(torch.cat((batch.image, weak)), p)
            pred_lab, pred_weak = clean.split([n_lab, n_unl])
            pred_fp = perturbed[n_lab:]
        else:
            pred_lab = net(batch.image)
            pred_weak, pred_fp = net.forward_feature_dropout(weak, p)
        pred_s1, pred_s2 = net(torch.cat((strong1, strong2))).chunk(2)

        refined = pseudo_probabilities(pred_weak, refiner, prepared)
        conf, label = refined.probs.max(1)
        keep = kept(conf, threshold, refined)
        label1, label2 = paste(label, label_mix, box1), paste(label, label_mix, box2)
        keep1, keep2 = paste(keep, keep_mix, box1), paste(keep, keep_mix, box2)

        loss_x = self.supervised(pred_lab, batch.label)
        loss_s1 = self.unsupervised(pred_s1, label1, keep1)
        loss_s2 = self.unsupervised(pred_s2, label2, keep2)
        loss_fp = self.unsupervised(pred_fp, label, keep)
        diagnostics = pseudo_label_diagnostics(
            refined.probs, batch.unlabeled_truth, threshold, UNLABELED_WEIGHT, keep=keep
        )
        if refiner is not None:
            base = pseudo_probabilities(pred_weak, None, None)
            diagnostics |= refinement_diagnostics(
                base.probs, refined, keep, batch.unlabeled_truth, self.class_names
            )
        return StepOutput(
            losses={
                "loss": total_loss(loss_x, loss_s1, loss_s2, loss_fp),
                "labeled": loss_x.detach(),
                "strong": ((loss_s1 + loss_s2) / 2).detach(),
                "feature_perturbed": loss_fp.detach(),
            },
            diagnostics=diagnostics,
        )
