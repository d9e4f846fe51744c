"""Batched augmentation on tensors (runs on the training device, no per-sample Python loops
except the blur). Weak: a small random similarity transform shared by image and label; it never
flips, so superior stays superior and level identity (counted from the sacrum) is preserved.
Strong: photometric only, so strong views stay pixel-aligned with their weak view.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

Shard = tuple[int, int]
"""(index, count): this batch is part ``index`` of ``count`` equal parts of a global batch."""


def _uniform(b: int, k: int, generator: torch.Generator, shard: Shard) -> torch.Tensor:
    """Random draws for the whole global batch, of which this part keeps its own rows: a
    distributed run then augments each slice exactly as one process would."""
    index, count = shard
    return torch.rand(b * count, k, generator=generator)[index * b : (index + 1) * b]


def random_affine(
    image: torch.Tensor,
    label: torch.Tensor,
    cfg: dict[str, Any],
    generator: torch.Generator,
    shard: Shard = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate, scale and shift a batch [B,1,H,W] with its labels [B,H,W] by random amounts."""
    b = image.shape[0]
    u = _uniform(b, 4, generator, shard)
    angle = (u[:, 0] * 2 - 1) * math.radians(cfg["rotate_degrees"])
    lo, hi = cfg["scale"]
    scale = lo + u[:, 1] * (hi - lo)
    shift = (u[:, 2:] * 2 - 1) * cfg["translate"] * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(image.device, image.dtype)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    label = F.grid_sample(
        label[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0].long()
    return image, label


def strong_view(
    image: torch.Tensor, cfg: dict[str, Any], generator: torch.Generator, shard: Shard = (0, 1)
) -> torch.Tensor:
    """Brightness/contrast jitter (p=jitter_p) and Gaussian blur (p=blur_p), per image."""
    b = image.shape[0]
    flat = image.flatten(1)
    lo = flat.min(1).values.view(b, 1, 1, 1)
    hi = flat.max(1).values.view(b, 1, 1, 1)
    unit = (image - lo) / (hi - lo).clamp_min(1e-6)
    u = _uniform(b, 5, generator, shard)
    j = cfg["jitter"]
    apply = (u[:, 0] < cfg["jitter_p"]).float()
    bright = 1 + apply * (u[:, 1] * 2 - 1) * j
    contrast = 1 + apply * (u[:, 2] * 2 - 1) * j
    bright = bright.view(b, 1, 1, 1).to(image)
    contrast = contrast.view(b, 1, 1, 1).to(image)
    unit = (unit * bright).clamp(0, 1)
    mean = unit.mean(dim=(1, 2, 3), keepdim=True)
    unit = ((unit - mean) * contrast + mean).clamp(0, 1)
    s_lo, s_hi = cfg["blur_sigma"]
    blurred = []
    for i in range(b):
        if u[i, 3] < cfg["blur_p"]:
            sigma = float(s_lo + u[i, 4] * (s_hi - s_lo))
            k = 2 * math.ceil(3 * sigma) + 1
            blurred.append(TF.gaussian_blur(unit[i], [k, k], [sigma, sigma]))
        else:
            blurred.append(unit[i])
    unit = torch.stack(blurred)
    return unit * (hi - lo) + lo
