"""CLIPSeg with one text prompt per spine class: the vision-language model the ``clipseg``
baseline trains and CPS4 pretrains, kept in the core so both build on the same code.

Per image it gives K binary logit maps (CLIPSeg's decoder conditioned on each class prompt) and,
for CPS4, the patch-text similarities of its CLIP towers. The VLM works on square inputs of its
own size: slices are resized to it and the maps back to the slices' size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.data.classmap import ClassMap
from spinebench.models.tokenizer import build_tokenizer, tokenize_prompts
from spinebench.models.vlm import (
    DEFAULT_TEMPLATE,
    build_clipseg,
    class_prompts,
    clipseg_decode,
    clipseg_text_embeddings,
    freeze_backbone,
    patch_tokens,
    pixel_stats,
    to_clip_pixels,
)

#: CLIP clamps its learned logit scale at 100 (a temperature of 0.01).
MAX_LOGIT_SCALE = 100.0


class ClassPromptCLIPSeg(nn.Module):
    """CLIPSeg (``pretrained`` folder or hub id, else a small random model built for
    ``input_size``, sized by ``small``) and the tokenised prompt of every foreground class.

    ``flag`` names the option users set for the weights, for one-line errors.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __init__(
        self,
        class_map: ClassMap,
        *,
        pretrained: str | None,
        input_size: int,
        template: str = DEFAULT_TEMPLATE,
        small: dict[str, int] | None = None,
        allow_download: bool = False,
        flag: str = "method.pretrained",
    ) -> None:
        super().__init__()
        self.model = build_clipseg(
            pretrained,
            image_size=input_size,
            small=small,
            allow_download=allow_download,
            flag=flag,
        )
        tokenizer = build_tokenizer(pretrained, allow_download=allow_download, flag=flag)
        tokens = tokenize_prompts(tokenizer, class_prompts(class_map, template), padding="longest")
        # Derived from the config on every build, so kept out of the state dict.
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        self.size = input_size
        self.normalise = pretrained is not None
        self.mean, self.std = pixel_stats(self.model)
        self.backbone_frozen = False

    @property
    def patch_size(self) -> int:
        config: Any = self.model.config
        return int(config.vision_config.patch_size)

    def freeze_backbone(self) -> None:
        """Freeze the CLIP towers; only the decoder trains (CLIPSeg's own setting)."""
        freeze_backbone(self.model)
        self.backbone_frozen = True

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 1, H, W] slices -> [B, 3, S, S] CLIP input at the VLM's size."""
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(
                images, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        return to_clip_pixels(images, self.normalise, mean=self.mean, std=self.std)

    def text_embeddings(self) -> torch.Tensor:
        """[K, D] one embedding per class prompt, with gradients while the text tower trains."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            return clipseg_text_embeddings(self.model, self.input_ids, self.attention_mask)

    def binary_logits(self, images: torch.Tensor, *, vision_grad: bool = False) -> torch.Tensor:
        """[B, K, H, W] per-class binary logits at the slices' size ``H x W``."""
        logits, _ = self.maps(images, similarity=False, vision_grad=vision_grad)
        return logits

    def maps(
        self, images: torch.Tensor, *, similarity: bool, vision_grad: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Binary logits [B, K, H, W] and, when ``similarity``, the scaled cosine similarities
        [B, K, h, w] between the patch tokens and the class embeddings (``exp(logit_scale)``,
        CLIP's learned inverse temperature, clamped at 100), from one vision-encoder pass.

        The vision encoder runs without gradients unless ``vision_grad`` (and the backbone is
        not frozen): CLIPSeg keeps it frozen, CPS4's stage 1 trains it.
        """
        pixels = self.pixels(images)
        text = self.text_embeddings()
        grad = vision_grad and not self.backbone_frozen and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            vision = self.model.clip.vision_model(
                pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True
            )
        logits = clipseg_decode(self.model, vision.hidden_states, text)
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(
                logits, size=images.shape[-2:], mode="bilinear", align_corners=False
            )
        if not similarity:
            return logits, None
        patches = F.normalize(patch_tokens(self.model.clip, vision.last_hidden_state), dim=1)
        scale = self.model.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        sim = scale * torch.einsum("bdhw,kd->bkhw", patches, F.normalize(text, dim=-1))
        return logits, sim
