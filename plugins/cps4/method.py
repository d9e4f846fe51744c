"""CPS4: class-prompt-driven semi-supervised spine segmentation, in two engine stages.

``pretrain`` trains a vision-language model (the core's class-prompt CLIPSeg) on the labeled
slices with token- and pixel-level attention losses plus its decoder's binary segmentation loss.
``ssl`` freezes it and trains the shared segmentation network as a Mean Teacher student (the
core's student/teacher pair) whose pseudo labels on unlabeled slices combine the teacher's
prediction with the VLM's class maps. README.md gives the equations and every interpretation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.api import (
    FUSION_RULES,
    Batch,
    BinaryMapLoss,
    ClassPromptCLIPSeg,
    ConfigError,
    Method,
    MethodContext,
    OptimizerSpec,
    Stage,
    StepInfo,
    StepOutput,
    SupervisedLoss,
    binary_dice,
    binary_targets,
    build_backbone,
    deep_merge,
    fused_probabilities,
    semisupervised,
    vlm,
)

from .losses import PixelAttentionLoss, token_attention_loss
from .pseudo import PSEUDO_LABEL_RULES, VlmMaps, combine, reliability_weights, similarity_maps

PRETRAIN, SSL = "pretrain", "ssl"
#: Bump when stage 1's computation or its state's keys change, so cached VLMs of older code
#: are not reused.
STAGE1_VERSION = 3
UNLABELED_LOSSES = ("masked", "ce")
_STAGE1_OPTIONS = (
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


class CPS4(Method):
    vlm_reliability: torch.Tensor
    teacher_reliability: torch.Tensor
    options: ClassVar[dict[str, Any]] = {
        # stage 1: the vision-language model
        "pretrained": None,
        "allow_download": False,
        "small": {},
        "template": vlm.DEFAULT_TEMPLATE,
        "pretrain_iterations": 500,
        "pretrain_lr": 1e-3,
        "token_loss": True,
        "pixel_loss": True,
        "class_softmax": True,
        "w_token": 1.0,
        "w_pixel": 1.0,
        "w_seg": 1.0,
        "pretrained_vlm": "",
        # stage 2: pseudo labels and the Mean Teacher around them
        "fusion": FUSION_RULES,
        "pseudo_label": PSEUDO_LABEL_RULES,
        "unlabeled_loss": UNLABELED_LOSSES,
        "w_pseudo": 1.0,
        **semisupervised.MEAN_TEACHER_OPTIONS,
        "conf_thresh": 0.95,
    }

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.opts = opts = ctx.options
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
        # Per-class Dice on the validation split of the VLM (stage 1) and of the segmentation
        # network (stage 2): what the reliable rule weighs the VLM by (on_validated). Until
        # stage 2's first validation the network counts as perfect, so the VLM has weight 0:
        # an unmeasured teacher is not a reason to trust the VLM.
        k = len(ctx.class_map)
        self.register_buffer("vlm_reliability", torch.zeros(k))
        self.register_buffer("teacher_reliability", torch.ones(k))
        student = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        self.pair = semisupervised.MeanTeacherPair(student, opts)
        self.binary_loss = BinaryMapLoss()
        self.pixel_loss = PixelAttentionLoss(opts["class_softmax"])
        self.supervised = SupervisedLoss()
        self.masked_dice = semisupervised.MaskedDice()

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        """One-line errors for option values the types alone do not rule out."""
        opts = config["method"]
        if opts["pretrain_iterations"] < 1:
            raise ConfigError("cps4.pretrain_iterations must be at least 1")
        if opts["w_seg"] <= 0:
            raise ConfigError(
                "cps4.w_seg must be positive: the decoder it trains gives the VLM's class maps"
            )
        negative = [k for k in ("w_token", "w_pixel", "w_pseudo", "consistency") if opts[k] < 0]
        if negative:
            raise ConfigError(f"cps4.{negative[0]} must not be negative")
        if not 0 < opts["conf_thresh"] <= 1:
            raise ConfigError("cps4.conf_thresh must be in (0, 1]")
        if "{name}" not in opts["template"]:
            raise ConfigError(
                f"cps4.template {opts['template']!r} has no {{name}} placeholder for the class name"
            )
        if not opts["pretrained"]:
            try:
                vlm.small_sizes(int(config["data"]["image_size"]), dict(opts["small"]))
            except ValueError as exc:
                raise ConfigError(f"cps4.small: {exc}") from None

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        """Mean Teacher's optimiser, batches and stage-2 budget; the paper profile fine-tunes
        pretrained CLIPSeg (CLIP ViT-B/16) in stage 1."""
        if profile != "paper":
            return {}
        return deep_merge(
            {"train": dict(semisupervised.SOURCE_TRAIN)},
            {
                "method": {
                    "pretrained": vlm.DEFAULT_CLIPSEG,
                    "pretrain_iterations": 20000,
                    "pretrain_lr": 1e-4,
                }
            },
        )

    # -- stages ---------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        config = self.ctx.config
        source = self.opts["pretrained_vlm"] or None
        pretrain = Stage(
            name=PRETRAIN,
            iterations=int(self.opts["pretrain_iterations"]),
            prefix=f"{PRETRAIN}/",
            segments=False,
            optimizer=OptimizerSpec(name="adamw", lr=float(self.opts["pretrain_lr"])),
            cache_key=None if source else self._stage1_key(),
            load_from=source,
        )
        ssl = Stage(
            name=SSL,
            iterations=int(config["train"]["iterations"]),
            prefix=f"{SSL}/",
            unlabeled=True,
            strong_views=1,
        )
        return [pretrain, ssl]

    def _stage1_key(self) -> dict[str, Any]:
        """Everything stage 1 computes from, besides the split and data the engine adds."""
        config = self.ctx.config
        return {
            "version": STAGE1_VERSION,
            "options": {key: self.opts[key] for key in _STAGE1_OPTIONS},
            "prompts": self.vlm.input_ids.tolist(),
            "architecture": self.vlm.model.config.to_dict(),
            "image_size": self.ctx.image_size,
            "batch_size": config["train"]["batch_size"],
            "optimizer": {k: config["train"][k] for k in ("weight_decay", "poly_power")},
            "precision": config["train"]["precision"],
            "augment": config["augment"],
            "seed": config["run"]["seed"],
        }

    def _vlm_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.vlm.parameters()
        yield self.background

    def trainable_parameters(self, stage: Stage) -> Iterator[nn.Parameter]:
        return self._vlm_parameters() if stage.name == PRETRAIN else self.pair.student.parameters()

    def on_stage_start(self, stage: Stage) -> None:
        """The VLM trains in stage 1 and is frozen (and kept in eval mode) in stage 2."""
        for p in self._vlm_parameters():
            p.requires_grad_(stage.name == PRETRAIN)
        self.train(self.training)

    def train(self, mode: bool = True) -> CPS4:
        super().train(mode)
        if not self.background.requires_grad:  # frozen: never back to train mode
            self.vlm.eval()
        return self

    def stage_state_dict(self, stage: Stage) -> dict[str, Any]:
        return {
            "vlm": self.vlm.state_dict(),
            "background": self.background.detach().clone(),
            "vlm_reliability": self.vlm_reliability.clone(),
        }

    def load_stage_state_dict(self, stage: Stage, state: dict[str, Any]) -> None:
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

    # -- training -------------------------------------------------------------------------------
    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if stage.name == PRETRAIN:
            return self._pretrain_step(batch)
        return self._ssl_step(batch, step)

    def _pretrain_step(self, batch: Batch) -> StepOutput:
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

    def _ssl_step(self, batch: Batch, step: StepInfo) -> StepOutput:
        student = self.pair.student
        if batch.unlabeled_weak is None or batch.unlabeled_strong is None:  # --labeled 1.0
            return StepOutput(losses={"loss": self.supervised(student(batch.image), batch.label)})
        o = self.opts
        weak, strong = batch.unlabeled_weak, batch.unlabeled_strong[0]
        joint = self.ctx.config["train"]["ssl_forward"] == "joint"
        labeled_logits, student_u = self.pair.student_logits(batch.image, strong, joint)
        supervised = self.supervised(labeled_logits, batch.label)
        teacher_logits = self.pair.teacher_logits(weak)
        teacher = teacher_logits.softmax(1)
        with torch.no_grad():
            maps = self._vlm_maps(weak)
            pseudo = combine(teacher_logits, maps, o["pseudo_label"], o["conf_thresh"])
        ramp = semisupervised.consistency_weight(
            1.0, step.iteration, step.total, o["rampup_fraction"], o["start_fraction"]
        )
        if o["unlabeled_loss"] == "ce":  # PromptSSL: every pixel, hard labels, no ramp
            pseudo_loss = F.cross_entropy(student_u.float(), pseudo.labels)
            keep, pseudo_weight = torch.ones_like(pseudo.keep), o["w_pseudo"]
        else:
            keep, pseudo_weight = pseudo.keep, ramp * o["w_pseudo"]
            kept = keep.float()
            pseudo_loss = 0.5 * (
                semisupervised.masked_cross_entropy(student_u, pseudo.labels, kept)
                + self.masked_dice(student_u, pseudo.labels, kept)
            )
        mse = F.mse_loss(student_u.float().softmax(1), teacher)
        loss = supervised + pseudo_weight * pseudo_loss + ramp * o["consistency"] * mse
        diagnostics = semisupervised.pseudo_label_diagnostics(
            pseudo.probs, batch.unlabeled_truth, o["conf_thresh"], pseudo_weight, keep=keep
        )
        diagnostics |= self._class_diagnostics(pseudo.labels, keep, maps)
        truth = batch.unlabeled_truth
        if truth is not None:
            classes = self.ctx.num_classes
            # the paper's claim reads dice_fused (this rule's label) against dice_teacher;
            # dice_average is the plain average's label whatever the rule, as a what-if
            candidates = (
                ("teacher", teacher.argmax(1)),
                ("vlm", maps.probs.argmax(1)),
                ("average", (teacher + maps.probs).argmax(1)),
                ("fused", pseudo.labels),
            )
            for name, labels in candidates:
                diagnostics[f"{semisupervised.PSEUDO_DICE}_{name}"] = (
                    semisupervised.pseudo_label_dice(labels, truth, classes)
                )
        return StepOutput(
            losses={
                "loss": loss,
                "supervised": supervised.detach(),
                "pseudo": pseudo_loss.detach(),
                "consistency": mse.detach(),
            },
            diagnostics=diagnostics,
        )

    def _vlm_maps(self, images: torch.Tensor) -> VlmMaps:
        """The frozen VLM's fused class probabilities, plus what the chosen rule needs."""
        rule = self.opts["pseudo_label"]
        binary, similarity = self.vlm.maps(images, similarity=rule == "logit_sum")
        probs = fused_probabilities(binary, self.opts["fusion"])
        size = (images.shape[-2], images.shape[-1])
        return VlmMaps(
            probs,
            similarity_maps(similarity, size) if similarity is not None else None,
            reliability_weights(self.vlm_reliability, self.teacher_reliability)
            if rule == "reliable"
            else None,
        )

    def _class_diagnostics(
        self, labels: torch.Tensor, keep: torch.Tensor, maps: VlmMaps
    ) -> dict[str, torch.Tensor | float]:
        """Per class: the share of its pseudo-labelled pixels that are kept, and the VLM's
        weight with its reliabilities (reliable rule)."""
        names = ["background", *(c.name for c in self.ctx.class_map.classes)]
        out: dict[str, torch.Tensor | float] = {}
        for c, name in enumerate(names):
            mask = labels == c
            out[f"pseudo/kept_fraction/{name}"] = (mask & keep).sum() / mask.sum().clamp_min(1)
        if maps.weights is not None:
            for c, name in enumerate(names[1:]):
                out[f"pseudo/vlm_weight/{name}"] = maps.weights[c + 1]
                out[f"pseudo/vlm_reliability/{name}"] = self.vlm_reliability[c]
                out[f"pseudo/teacher_reliability/{name}"] = self.teacher_reliability[c]
        return out

    def on_validated(self, stage: Stage, scores: dict[str, float]) -> None:
        """Keep the per-class Dice on the validation split: the VLM's pooled binary Dice after
        each stage-1 validation, the segmentation network's after each stage-2 one."""
        classes = self.ctx.class_map.classes
        if stage.name == PRETRAIN:
            prefix = f"val/{stage.prefix}"
            values = []
            for c in classes:
                total = scores.get(f"{prefix}binary_total/{c.name}", 0.0)
                overlap = scores.get(f"{prefix}binary_overlap/{c.name}", 0.0)
                values.append(2 * overlap / total if total > 0 else 0.0)
            self.vlm_reliability.copy_(torch.tensor(values))
        else:
            values = [scores.get(f"val/dice/{c.name}", 0.0) for c in classes]
            self.teacher_reliability.copy_(torch.tensor(values))

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        if stage.name == SSL:
            self.pair.update_teacher(step.iteration)

    # -- inference and stage-1 validation -------------------------------------------------------
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.pair.student(images)
        return logits

    def validate_stage(
        self, stage: Stage, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
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
