"""The reference of every GPU figure: a Mean Teacher step as SSL4MIS writes it, without the engine.

Measured in the same process as the engine's rows, so a ratio to it removes the card, the
driver and the torch build from the comparison.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from benchmarks.gpu_timing import Variant, autocast, iterations_per_second
from spinebench.models.backbone import UNet

REFERENCE_BATCH = 24
"""12 labeled + 12 unlabeled slices: the paper profile's Mean Teacher batches."""
ANCHOR_BATCH = 16
"""The batch of the issue's anchor figures (one H200, torch 2.11: fp32 10.7 it/s, bf16 +
channels_last 26.5 it/s, + torch.compile 33.0 it/s)."""
CHANNELS = [16, 32, 64, 128, 256]
DROPOUT = [0.05, 0.1, 0.2, 0.3, 0.5]


def plain_mean_teacher(
    image_size: int,
    batch: int,
    classes: int,
    variant: Variant,
    warmup: int,
    steps: int,
    device: torch.device,
) -> float:
    """Iterations/s of SSL4MIS's Mean Teacher step on random in-memory tensors (no data path).

    The labeled and unlabeled halves go through the student in one forward; the EMA teacher
    sees the unlabeled half with clipped Gaussian noise; loss 0.5 (CE + Dice) + 0.1 MSE of the
    softmaxes; SGD with momentum; EMA decay min(1 - 1/(step + 1), 0.99).
    """
    half = batch // 2
    student = UNet(1, classes, CHANNELS, DROPOUT).to(device)
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    memory = torch.channels_last if variant.channels_last else torch.contiguous_format
    student, teacher = student.to(memory_format=memory), teacher.to(memory_format=memory)
    if variant.compiled:
        student.compile()
        teacher.compile()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 1, image_size, image_size, device=device)
    x = x.contiguous(memory_format=memory)
    y = torch.randint(0, classes, (half, image_size, image_size), device=device)
    onehot = F.one_hot(y, classes).permute(0, 3, 1, 2).float()

    def step(i: int) -> None:
        with autocast(device, variant.precision):
            out = student(x)
            with torch.no_grad():
                noise = torch.clamp(torch.randn_like(x[half:]) * 0.1, -0.2, 0.2)
                t_out = teacher(x[half:] + noise)
        out, t_out = out.float(), t_out.float()
        soft = out.softmax(1)
        inter = (soft[:half] * onehot).sum((0, 2, 3))
        denom = (soft[:half] ** 2).sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = 1 - ((2 * inter + 1e-5) / (denom + 1e-5)).mean()
        sup = 0.5 * (F.cross_entropy(out[:half], y) + dice)
        loss = sup + 0.1 * F.mse_loss(soft[half:], t_out.softmax(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        alpha = min(1 - 1 / (i + 1), 0.99)
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(alpha).add_(s, alpha=1 - alpha)

    return iterations_per_second(step, warmup, steps, device)
