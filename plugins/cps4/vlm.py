"""CPS4's vision-language model: CLIPSeg with one text prompt per spine class.

CLIPSeg's CLIP vision encoder gives the patch tokens and its text encoder the class embeddings
(stage 1's token- and pixel-level attention losses compare the two); its decoder, conditioned on
a class embedding, gives that class's binary map (what stage 2 fuses into pseudo labels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.data.classmap import ClassMap
from spinebench.models.tokenizer import build_tokenizer, tokenize_prompts
from spinebench.models.vlm import (
    build_clipseg,
    class_prompts,
    clip_patch_embeddings,
    clipseg_logits,
    clipseg_text_embeddings,
    pixel_stats,
    to_clip_pixels,
)

#: CLIP clamps its learned logit scale at 100 (a temperature of 0.01).
MAX_LOGIT_SCALE = 100.0


class ClassPromptVLM(nn.Module):
    """CLIPSeg, its tokenised class prompts and the learned background score of stage 1."""

    def __init__(
        self,
        class_map: ClassMap,
        image_size: int,
        *,
        pretrained: str | None,
        allow_download: bool,
        template: str,
    ) -> None:
        super().__init__()
        flag = "method.pretrained"
        self.model = build_clipseg(
            pretrained, image_size=image_size, allow_download=allow_download, flag=flag
        )
        tokenizer = build_tokenizer(pretrained, allow_download=allow_download, flag=flag)
        tokens = tokenize_prompts(tokenizer, class_prompts(class_map, template), padding="longest")
        # Derived from the config on every build, so kept out of the state dict.
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        self.background = nn.Parameter(torch.zeros(()))
        self.normalise = pretrained is not None
        self.mean, self.std = pixel_stats(self.model)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        return to_clip_pixels(images, self.normalise, mean=self.mean, std=self.std)

    def text_embeddings(self) -> torch.Tensor:
        """[K, D] one embedding per class prompt (with gradients while the VLM trains)."""
        return clipseg_text_embeddings(self.model, self.input_ids, self.attention_mask)

    def binary_logits(self, images: torch.Tensor) -> torch.Tensor:
        """[B, K, H, W] the decoder's per-class binary logits, the frozen VLM's output."""
        return clipseg_logits(self.model, self.pixels(images), self.text_embeddings())

    def forward(
        self, images: torch.Tensor, *, similarity: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage-1 outputs with gradients everywhere, the vision encoder included.

        Returns the decoder's binary logits [B, K, H, W] and, when ``similarity``, the scaled
        cosine similarities [B, K, h, w] between patch tokens and class embeddings
        (``exp(logit_scale)``, CLIP's learned inverse temperature, clamped at 100).
        """
        pixels = self.pixels(images)
        text = self.text_embeddings()
        logits = clipseg_logits(self.model, pixels, text, vision_grad=True)
        if not similarity:
            return logits, None
        patches = F.normalize(clip_patch_embeddings(self.model.clip, pixels), dim=1)
        scale = self.model.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        sim = scale * torch.einsum("bdhw,kd->bkhw", patches, F.normalize(text, dim=-1))
        return logits, sim
