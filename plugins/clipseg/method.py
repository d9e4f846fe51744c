"""CLIPSeg as a supervised baseline: one binary map per class prompt, fused to one label map.

The class-prompt model is the core's :class:`spinebench.api.ClassPromptCLIPSeg` (each slice
goes once through the CLIP vision encoder, the decoder once per class prompt). The K binary
maps are trained with BCE + Dice against each class's mask and fused into K+1 multi-class
scores for validation, test and prediction (:func:`spinebench.api.fuse_binary_maps`). With
pretrained weights the CLIP towers stay frozen and only the decoder trains, as in the paper;
from random weights everything trains. Defaults and their sources are in README.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from spinebench.api import (
    FUSION_RULES,
    Batch,
    BinaryMapLoss,
    ClassPromptCLIPSeg,
    ConfigError,
    Method,
    MethodContext,
    Stage,
    StepInfo,
    StepOutput,
    binary_dice,
    binary_targets,
    fuse_binary_maps,
    vlm,
)

FROZEN_CHOICES = ("auto", "backbone", "none")
#: The VLM input is rounded up to a multiple of this, so every patch size in use (8 and 16 for
#: the small models, 16 for the CIDAS weights) tiles it.
SIZE_MULTIPLE = 16
#: Where the CIDAS weights were trained and what their preprocessor resizes to.
PAPER_SIZE = 352
#: The quick profile's VLM input: what a small random CLIPSeg trains in a few CPU minutes
#: (README.md, "The quick profile").
QUICK_SIZE = 64


def vlm_input_size(requested: int, image_size: int) -> int:
    """The side of the square VLM input: ``requested`` (0: the slice size), rounded up."""
    size = requested or image_size
    return -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE


class ClipSeg(Method):
    description = "CLIPSeg (CVPR 2022) with one prompt per class, fused to one label map"
    options: ClassVar[dict[str, Any]] = {
        "pretrained": None,
        "template": vlm.DEFAULT_TEMPLATE,
        "frozen": FROZEN_CHOICES,
        "fusion": FUSION_RULES,
        "threshold": 0.5,
        "background_scale": 3.0,
        "vlm_image_size": 0,
        "small": {},
        "allow_download": False,
    }

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        opts = ctx.options
        pretrained = opts["pretrained"]
        try:
            self.vlm = ClassPromptCLIPSeg(
                ctx.class_map,
                pretrained=pretrained,
                input_size=vlm_input_size(int(opts["vlm_image_size"]), ctx.image_size),
                template=opts["template"],
                small=dict(opts["small"]),
                allow_download=bool(opts["allow_download"]),
            )
        except ValueError as exc:
            raise ConfigError(f"method.small or method.vlm_image_size: {exc}") from None
        if opts["frozen"] == "backbone" or (opts["frozen"] == "auto" and pretrained is not None):
            self.vlm.freeze_backbone()
        self.loss = BinaryMapLoss()

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        opts = config["method"]
        if not 0.0 < float(opts["threshold"]) < 1.0:
            raise ConfigError(f"method.threshold {opts['threshold']} must be between 0 and 1")
        if not float(opts["background_scale"]) > 0.0:
            raise ConfigError(
                f"method.background_scale {opts['background_scale']} must be positive"
            )
        if int(opts["vlm_image_size"]) < 0:
            raise ConfigError(
                f"method.vlm_image_size {opts['vlm_image_size']} must be 0 (the slice size) "
                "or a size"
            )
        if "{name}" not in opts["template"]:
            raise ConfigError(
                f"method.template {opts['template']!r} has no {{name}} placeholder for the "
                "class name"
            )
        if opts["pretrained"] is None:
            size = vlm_input_size(int(opts["vlm_image_size"]), int(config["data"]["image_size"]))
            try:
                vlm.small_sizes(size, dict(opts["small"]))
            except ValueError as exc:
                raise ConfigError(f"method.small or method.vlm_image_size: {exc}") from None

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        # timojl/clipseg experiments/phrasecut.yaml: AdamW (PyTorch defaults otherwise), lr 1e-3.
        train: dict[str, Any] = {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01}
        if profile == "paper":
            return {
                "train": train,
                "method": {"pretrained": vlm.DEFAULT_CLIPSEG, "vlm_image_size": PAPER_SIZE},
            }
        # CPU: the profile's budget; a 64 px VLM input (8 x 8 patches) whatever the slice size.
        return {"train": train, "method": {"vlm_image_size": QUICK_SIZE}}

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        logits = self.vlm.binary_logits(batch.image, vision_grad=True)
        targets = binary_targets(batch.label, logits.shape[1])
        bce, dice = self.loss(logits, targets)
        per_class = binary_dice(logits.detach(), targets)
        diagnostics: dict[str, torch.Tensor | float] = {"clipseg/binary_dice": per_class.mean()}
        for cls, value in zip(self.ctx.class_map.classes, per_class, strict=True):
            diagnostics[f"clipseg/binary_dice/{cls.name}"] = value
        return StepOutput(
            losses={"loss": bce + dice, "bce": bce.detach(), "dice": dice.detach()},
            diagnostics=diagnostics,
        )

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        opts = self.ctx.options
        return fuse_binary_maps(
            self.vlm.binary_logits(images),
            rule=opts["fusion"],
            threshold=float(opts["threshold"]),
            background_scale=float(opts["background_scale"]),
        )
