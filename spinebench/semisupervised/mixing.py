"""Mixing images and their labels: UniMatch's CutMix and BCP's bidirectional copy-paste.

CutMix (UniMatch ``dataset/transform.py`` ``obtain_cutmix_box``): one random box per image,
another image of the batch pasted into it. Copy-paste (BCP ``code/ACDC_BCP_train.py``
``generate_mask``, lines 131-140): one square box of 2/3 of the image side per step, shared by
the whole batch; the mask is 1 outside the box and 0 inside, so ``mix(a, b, mask)`` is ``a``
around a patch of ``b``. UniMatch's pasted images come from a second loader; here they come from
the same unlabeled batch through a random cyclic permutation (no image is pasted into itself
unless the batch holds one image), so no extra data is loaded.
"""

from __future__ import annotations

import math

import torch

#: CutMix box area as a fraction of the image, and its aspect-ratio range (transform.py line 32).
AREA = (0.02, 0.4)
RATIO = (0.3, 1 / 0.3)


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def cutmix_box(
    height: int, width: int, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A boolean [H, W] mask: with probability ``p`` one rectangle, else empty.

    Area U(0.02, 0.4) x H x W; aspect ratio U(0.3, 1/0.3); the top-left corner is uniform and
    redrawn (with the ratio) until the box fits, as the source does.
    """
    box = torch.zeros(height, width, dtype=torch.bool)
    if float(torch.rand((), generator=generator)) > p:
        return box
    area = _uniform(*AREA, generator) * height * width
    while True:
        ratio = _uniform(*RATIO, generator)
        w, h = int(math.sqrt(area / ratio)), int(math.sqrt(area * ratio))
        x = int(torch.randint(width, (), generator=generator))
        y = int(torch.randint(height, (), generator=generator))
        if x + w <= width and y + h <= height:
            box[y : y + h, x : x + w] = True
            return box


def cutmix_boxes(
    n: int,
    height: int,
    width: int,
    p: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One independent box per image: boolean [N, H, W] on ``device``."""
    return torch.stack([cutmix_box(height, width, p, generator) for _ in range(n)]).to(device)


def mix_partners(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index of the image pasted into each image: a random cycle through the batch."""
    order = torch.randperm(n, generator=generator)
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(-1)
    return partner


def paste(base: torch.Tensor, other: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``other`` inside ``box`` [N, H, W], ``base`` outside; images [N, C, H, W] or maps
    [N, H, W] (pseudo labels, confidences)."""
    mask = box[:, None] if base.dim() == 4 else box
    return torch.where(mask, other, base)


def copy_paste_mask(height: int, width: int, fraction: float, device: torch.device) -> torch.Tensor:
    """BCP's mask [H, W] (float): 0 inside one square-ish box of ``int(fraction x side)`` per
    axis, 1 outside; the top-left corner is uniform in ``[0, side - box)`` (the source's
    ``np.random.randint``, whose upper bound is exclusive), drawn from torch's global RNG."""
    box_h, box_w = int(height * fraction), int(width * fraction)
    y = int(torch.randint(max(height - box_h, 1), ()))
    x = int(torch.randint(max(width - box_w, 1), ()))
    mask = torch.ones(height, width, device=device)
    mask[y : y + box_h, x : x + box_w] = 0
    return mask


def copy_paste(outside: torch.Tensor, inside: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``outside`` where ``mask`` is 1, ``inside`` in the box (images [N, C, H, W])."""
    return outside * mask + inside * (1 - mask)
