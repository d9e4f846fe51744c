"""UniMatch as its medical scenario trains it (``more-scenarios/medical/unimatch.py``).

The weak view's prediction is the pseudo label; two strong views (the engine's colour jitter and
blur, then CutMix between unlabeled images here) and a feature-perturbed decoding of the weak
view must match it where it is confident. Every default and its source line is in README.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from spinebench.api import (
    Batch,
    Method,
    MethodContext,
    Stage,
    StepInfo,
    StepOutput,
    SupervisedLoss,
    build_backbone,
    semisupervised,
)

from .cutmix import cutmix_boxes, mix_partners, paste

#: Weights of (labeled, strong 1, strong 2, feature-perturbed) losses and the overall divisor
#: (unimatch.py line 175).
WEIGHTS = (1.0, 0.25, 0.25, 0.5)
DIVISOR = 2.0
#: Weight of all unlabeled terms together in the total loss, logged as the consistency weight.
UNLABELED_WEIGHT = sum(WEIGHTS[1:]) / DIVISOR


def total_loss(
    labeled: torch.Tensor, strong1: torch.Tensor, strong2: torch.Tensor, perturbed: torch.Tensor
) -> torch.Tensor:
    """``(Lx + 0.25 Ls1 + 0.25 Ls2 + 0.5 Lfp) / 2``."""
    w_x, w_s1, w_s2, w_fp = WEIGHTS
    return (w_x * labeled + w_s1 * strong1 + w_s2 * strong2 + w_fp * perturbed) / DIVISOR


class UniMatch(Method):
    options: ClassVar[dict[str, Any]] = {
        "conf_thresh": 0.95,
        "fp_dropout": 0.5,
        "cutmix_p": 0.5,
    }

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.opts = ctx.options
        self.net = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.supervised = SupervisedLoss()
        self.unsupervised = semisupervised.MaskedDice()

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        # quick: the engine's CPU optimiser (AdamW 1e-3), shared by every method so the short
        # budget converges; paper: the source's SGD schedule and 12 + 12 slices (README.md).
        return {"train": dict(semisupervised.SOURCE_TRAIN)} if profile == "paper" else {}

    def stages(self) -> list[Stage]:
        return [
            Stage(
                name="train",
                iterations=int(self.ctx.config["train"]["iterations"]),
                unlabeled=True,
                strong_views=2,
            )
        ]

    @torch.no_grad()
    def _eval_mode_pseudo_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Confidence and label maps of the images pasted in, from an eval-mode forward (BN
        running statistics, no dropout) as the source predicts its mix batch."""
        was_training = self.net.training
        self.net.eval()
        try:
            probs = self.net(images).float().softmax(1)
        finally:
            self.net.train(was_training)
        return probs.max(1)

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if batch.unlabeled_weak is None or batch.unlabeled_strong is None:  # --labeled 1.0
            return StepOutput(losses={"loss": self.supervised(self.net(batch.image), batch.label)})
        threshold = self.opts["conf_thresh"]
        weak = batch.unlabeled_weak
        n_lab, n_unl = batch.image.shape[0], weak.shape[0]
        height, width = weak.shape[-2:]

        partner = mix_partners(n_unl).to(weak.device)
        box1, box2 = (
            cutmix_boxes(n_unl, height, width, self.opts["cutmix_p"], weak.device) for _ in range(2)
        )
        conf_mix, label_mix = self._eval_mode_pseudo_labels(weak)
        conf_mix, label_mix = conf_mix[partner], label_mix[partner]
        strong1, strong2 = batch.unlabeled_strong
        strong1 = paste(strong1, strong1[partner], box1)
        strong2 = paste(strong2, strong2[partner], box2)

        p = self.opts["fp_dropout"]
        if self.ctx.config["train"]["ssl_forward"] == "joint":  # unimatch.py 145-147
            clean, perturbed = self.net.forward_feature_dropout(torch.cat((batch.image, weak)), p)
            pred_lab, pred_weak = clean.split([n_lab, n_unl])
            pred_fp = perturbed[n_lab:]
        else:
            pred_lab = self.net(batch.image)
            pred_weak, pred_fp = self.net.forward_feature_dropout(weak, p)
        pred_s1, pred_s2 = self.net(torch.cat((strong1, strong2))).chunk(2)

        probs_weak = pred_weak.detach().float().softmax(1)
        conf, label = probs_weak.max(1)
        conf1, label1 = paste(conf, conf_mix, box1), paste(label, label_mix, box1)
        conf2, label2 = paste(conf, conf_mix, box2), paste(label, label_mix, box2)

        loss_x = self.supervised(pred_lab, batch.label)
        loss_s1 = self.unsupervised(pred_s1, label1, conf1 >= threshold)
        loss_s2 = self.unsupervised(pred_s2, label2, conf2 >= threshold)
        loss_fp = self.unsupervised(pred_fp, label, conf >= threshold)
        return StepOutput(
            losses={
                "loss": total_loss(loss_x, loss_s1, loss_s2, loss_fp),
                "labeled": loss_x.detach(),
                "strong": ((loss_s1 + loss_s2) / 2).detach(),
                "feature_perturbed": loss_fp.detach(),
            },
            diagnostics=semisupervised.pseudo_label_diagnostics(
                probs_weak, batch.unlabeled_truth, threshold, UNLABELED_WEIGHT
            ),
        )

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(images)
        return logits
