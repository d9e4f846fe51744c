"""CPS4's class-prompt VLM as a pseudo-label refiner (``spinebench.api.semisupervised``'s
refiner contract): its own stage (class-specific VLM pretraining on the labeled slices), then,
frozen, per-class maps that a rule combines with any base's pseudo-label probabilities.

README.md gives the equations; ``pseudo.py`` the rules on plain tensors, ``losses.py`` the
stage-1 losses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from spinebench.api import (
    Batch,
    BinaryMapLoss,
    ClassPromptCLIPSeg,
    ConfigError,
    MethodContext,
    OptimizerSpec,
    Stage,
    StepOutput,
    binary_dice,
    binary_targets,
    fused_probabilities,
    semisupervised,
)

from .losses import PixelAttentionLoss, token_attention_loss
from .pseudo import VlmMaps, agreement, reliability_weights, rule_probabilities, similarity_maps

#: Bump when stage 1's computation or its state's keys change, so cached VLMs of older code
#: are not reused.
STAGE1_VERSION = 3
STAGE1_OPTIONS = (
    "pretrained",
    "small",
    "template",
    "pretrain_iterations",
    "pretrain_lr",
    "token_loss",
    "pixel_loss",
    "class_softmax",
    "w_token",
    "w_pixel",
    "w_seg",
)


class ClassPromptRefiner(nn.Module):
    """The VLM, its background score and the per-class reliabilities the ``reliable`` rule
    weighs it by: the VLM's Dice on the validation split (stage 1) and the base network's
    (each validation of a segmenting stage). Until the network is first measured it counts as
    perfect, so the VLM has weight 0: an unmeasured network is not a reason to trust the VLM."""

    vlm_reliability: torch.Tensor
    teacher_reliability: torch.Tensor

    def __init__(self, ctx: MethodContext, stage_name: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.opts = opts = ctx.options
        self.stage_name = stage_name
        try:
            self.vlm = ClassPromptCLIPSeg(
                ctx.class_map,
                pretrained=opts["pretrained"] or None,
                input_size=ctx.image_size,
                template=opts["template"],
                small=dict(opts["small"]),
                allow_download=opts["allow_download"],
            )
        except ValueError as exc:
            raise ConfigError(f"cps4.small: {exc}") from None
        self.background = nn.Parameter(torch.zeros(()))
        k = len(ctx.class_map)
        self.register_buffer("vlm_reliability", torch.zeros(k))
        self.register_buffer("teacher_reliability", torch.ones(k))
        self.binary_loss = BinaryMapLoss()
        self.pixel_loss = PixelAttentionLoss(opts["class_softmax"])

    # -- its stage ----------------------------------------------------------------------------
    def stage(self) -> Stage:
        source = self.opts["pretrained_vlm"] or None
        return Stage(
            name=self.stage_name,
            iterations=int(self.opts["pretrain_iterations"]),
            prefix=f"{self.stage_name}/",
            segments=False,
            optimizer=OptimizerSpec(name="adamw", lr=float(self.opts["pretrain_lr"])),
            cache_key=None if source else self._stage_key(),
            load_from=source,
        )

    def _stage_key(self) -> dict[str, Any]:
        """Everything stage 1 computes from, besides the split and data the engine adds."""
        config = self.ctx.config
        return {
            "version": STAGE1_VERSION,
            "options": {key: self.opts[key] for key in STAGE1_OPTIONS},
            "prompts": self.vlm.input_ids.tolist(),
            "architecture": self.vlm.model.config.to_dict(),
            "image_size": self.ctx.image_size,
            "batch_size": config["train"]["batch_size"],
            "optimizer": {k: config["train"][k] for k in ("weight_decay", "poly_power")},
            "precision": config["train"]["precision"],
            "augment": config["augment"],
            "seed": config["run"]["seed"],
        }

    def trainable(self) -> Iterator[nn.Parameter]:
        yield from self.vlm.parameters()
        yield self.background

    def set_trainable(self, on: bool) -> None:
        for p in self.trainable():
            p.requires_grad_(on)

    @property
    def frozen(self) -> bool:
        return not self.background.requires_grad

    def training_step(self, batch: Batch) -> StepOutput:
        o = self.opts
        token, pixel = o["token_loss"], o["pixel_loss"]
        logits, similarity = self.vlm.maps(batch.image, similarity=token or pixel, vision_grad=True)
        targets = binary_targets(batch.label, logits.shape[1])
        bce, dice = self.binary_loss(logits, targets)
        seg = bce + dice  # the clipseg baseline's loss
        losses = {"seg": seg}
        total = o["w_seg"] * seg
        if similarity is not None and token:
            losses["token"] = token_attention_loss(similarity, targets)
            total = total + o["w_token"] * losses["token"]
        if similarity is not None and pixel:
            losses["pixel"] = self.pixel_loss(similarity, self.background, batch.label)
            total = total + o["w_pixel"] * losses["pixel"]
        return StepOutput(losses={"loss": total, **{k: v.detach() for k, v in losses.items()}})

    def validate(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Per-class binary Dice of the VLM's maps, and the Dice of their fused label map.

        As the clipseg baseline's diagnostic: pooled over the batch, and a class absent from
        both prediction and truth scores 1 (the map rightly found nothing).
        """
        logits = self.vlm.binary_logits(images).float()
        targets = binary_targets(labels, logits.shape[1])
        dice = binary_dice(logits, targets)
        out = {"binary_dice": float(dice.mean())}
        # Per-slice means of each class's overlap and total: averaged over the val slices by
        # the engine, their ratio is the Dice pooled over the whole split (on_validated).
        predicted = (logits > 0).float()
        overlap = (predicted * targets).sum((2, 3)).mean(0)
        total = (predicted + targets).sum((2, 3)).mean(0)
        for c, d, o_c, t_c in zip(self.ctx.class_map.classes, dice, overlap, total, strict=True):
            out[f"binary_dice/{c.name}"] = float(d)
            out[f"binary_overlap/{c.name}"] = float(o_c)
            out[f"binary_total/{c.name}"] = float(t_c)
        fused = fused_probabilities(logits, self.opts["fusion"]).argmax(1)
        out["fused_dice"] = float(
            semisupervised.pseudo_label_dice(fused, labels, self.ctx.num_classes)
        )
        return out

    def on_validated(self, stage: Stage, scores: dict[str, float]) -> None:
        """Keep the per-class Dice on the validation split: the VLM's pooled binary Dice after
        each of its validations, the base network's after each segmenting validation."""
        classes = self.ctx.class_map.classes
        if stage.name == self.stage_name:
            prefix = f"val/{stage.prefix}"
            values = []
            for c in classes:
                total = scores.get(f"{prefix}binary_total/{c.name}", 0.0)
                overlap = scores.get(f"{prefix}binary_overlap/{c.name}", 0.0)
                values.append(2 * overlap / total if total > 0 else 0.0)
            self.vlm_reliability.copy_(torch.tensor(values))
        elif stage.segments:
            values = [scores.get(f"val/dice/{c.name}", 0.0) for c in classes]
            self.teacher_reliability.copy_(torch.tensor(values))

    def stage_state(self) -> dict[str, Any]:
        return {
            "vlm": self.vlm.state_dict(),
            "background": self.background.detach().clone(),
            "vlm_reliability": self.vlm_reliability.clone(),
        }

    def load_stage_state(self, state: dict[str, Any]) -> None:
        try:
            self.vlm.load_state_dict(state["vlm"])
            with torch.no_grad():
                self.background.copy_(state["background"])
                self.vlm_reliability.copy_(state["vlm_reliability"])
        except (RuntimeError, KeyError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"the stage-1 VLM state does not fit this model ({first}); set cps4.pretrained "
                "as in the run that trained it, or drop cps4.pretrained_vlm"
            ) from None

    # -- the refiner contract -----------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, images: torch.Tensor) -> VlmMaps:
        """The frozen VLM's fused class probabilities, plus what the chosen rule needs."""
        rule = self.opts["pseudo_label"]
        binary, similarity = self.vlm.maps(images, similarity=rule == "logit_sum")
        probs = fused_probabilities(binary, self.opts["fusion"])
        size = (images.shape[-2], images.shape[-1])
        return VlmMaps(
            probs,
            similarity_maps(similarity, size) if similarity is not None else None,
            reliability_weights(
                self.vlm_reliability, self.teacher_reliability, self.opts["vlm_min_reliability"]
            )
            if rule == "reliable"
            else None,
        )

    @torch.no_grad()
    def refine(self, logits: torch.Tensor, prepared: VlmMaps) -> semisupervised.Refined:
        rule = self.opts["pseudo_label"]
        teacher = logits.float().softmax(1)
        probs = rule_probabilities(logits, prepared, rule)
        names = [c.name for c in self.ctx.class_map.classes]
        diagnostics: dict[str, torch.Tensor | float] = {}
        if prepared.weights is not None:
            for c, name in enumerate(names):
                diagnostics[f"pseudo/vlm_weight/{name}"] = prepared.weights[c + 1]
                diagnostics[f"pseudo/vlm_reliability/{name}"] = self.vlm_reliability[c]
                diagnostics[f"pseudo/teacher_reliability/{name}"] = self.teacher_reliability[c]
        return semisupervised.Refined(
            probs=probs,
            restrict=agreement(logits, prepared) if rule == "agree" else None,
            # the paper's claim reads dice_fused (this rule's label) against dice_teacher;
            # dice_average is the plain average's label whatever the rule, as a what-if
            candidates={
                "vlm": prepared.probs.argmax(1),
                "average": (teacher + prepared.probs).argmax(1),
            },
            diagnostics=diagnostics,
        )
