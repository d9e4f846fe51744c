"""Per-stage speed and memory: iterations/s, share of time waiting for data, peak memory.

Timing uses wall clock between step boundaries; on CUDA the data timer does not synchronise, so
``data_wait_frac`` counts host time spent producing batches (what a slow data path costs).
"""

from __future__ import annotations

import resource
import sys
import time

import torch


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes vs KiB


class PerfMeter:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.data = 0.0
        self.steps = 0
        self._d0 = 0.0

    def data_start(self) -> None:
        self._d0 = time.perf_counter()

    def data_end(self) -> None:
        self.data += time.perf_counter() - self._d0

    def step_end(self) -> None:
        self.steps += 1

    def summary(self, stage: str) -> dict[str, float]:
        """Figures since the last summary, then start a new window."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        out = {
            f"perf/{stage}/iter_per_s": self.steps / elapsed,
            f"perf/{stage}/data_wait_frac": self.data / elapsed,
            f"perf/{stage}/peak_mem_mb": peak_rss_mb(),
        }
        if self.device.type == "cuda":
            out[f"perf/{stage}/peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        self.reset()
        return out
