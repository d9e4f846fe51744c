"""What every row of the GPU benchmark shares: the variants it compares, a timed loop, memory.

Kept apart from the rows so that the plain loop, the engine's stages and CLIPSeg are timed and
reset the same way, and so their figures can be set side by side.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Variant:
    """Precision, memory layout and compilation of one column of figures.

    ``compile`` is ``train.compile`` (the engine compiles each child module of the method);
    ``compile_nets`` has the benchmark compile every segmentation network instead, which is
    what the engine's compile would give if it reached the networks a method calls directly.
    """

    name: str
    precision: str  # "fp32" or "bf16" (autocast)
    channels_last: bool
    compile: bool = False
    compile_nets: bool = False

    @property
    def compiled(self) -> bool:
        return self.compile or self.compile_nets

    @property
    def reference(self) -> str:
        """The plain loop's variant this one is compared with (the plain loop compiles whole
        networks, so both compile variants compare with its compiled row)."""
        return "bf16+cl+compile" if self.compiled else self.name

    def overrides(self) -> list[str]:
        """The ``--set`` overrides that give this variant in a run."""
        return [
            f"train.precision={self.precision}",
            f"train.channels_last={str(self.channels_last).lower()}",
            f"train.compile={str(self.compile).lower()}",
        ]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fp32", "fp32", channels_last=False),
        Variant("bf16+cl", "bf16", channels_last=True),
        Variant("bf16+cl+compile", "bf16", channels_last=True, compile=True),
        Variant("bf16+cl+compile-nets", "bf16", channels_last=True, compile_nets=True),
    )
}
EAGER_VARIANTS = ("fp32", "bf16+cl")
COMPILED_VARIANTS = ("bf16+cl+compile", "bf16+cl+compile-nets")


def synchronize(device: torch.device) -> None:
    """Wait for the GPU, so that a wall-clock interval covers the work queued in it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_between_rows(device: torch.device) -> None:
    """Free the previous row's memory and compiled graphs, and restart the peak-memory count,
    so that a row's peak and compile time are its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch._dynamo.reset()


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset; None on the CPU."""
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast as the engine applies it, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def iterations_per_second(
    step: Callable[[int], None], warmup: int, steps: int, device: torch.device
) -> float:
    """Speed of ``step`` over ``steps`` calls after ``warmup`` untimed ones (cuDNN autotuning,
    compilation and allocator growth happen in the warm-up)."""
    for i in range(warmup):
        step(i)
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    synchronize(device)
    return steps / (time.perf_counter() - t0)
