"""The engine's rows of the GPU benchmark: a method's training stages through the engine's loop.

Each stage runs through ``engine.trainer.run_stage`` (data streams, augmentation, autocast,
backward, optimiser, logging), so the figures include what a real run pays beyond the plain
loop; the speed and ``data_wait_frac`` are read from the engine's own ``perf/*`` logs.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Bench, compile_networks, make_bench
from benchmarks.gpu_timing import Variant, peak_memory_mib


def measure_stages(
    bench: Bench, warmup: int, steps: int, folder: Path, compile_nets: bool = False
) -> list[dict[str, Any]]:
    """One row per stage of ``bench``'s method, trained in order on one method object as a run
    trains them: ``warmup`` untimed steps, then ``steps`` timed ones (a multiple of ``warmup``,
    which must also be ``train.log_every``: the loop logs ``perf/*`` once per window)."""
    if steps % warmup or int(bench.config["train"]["log_every"]) != warmup:
        raise ValueError("steps must be a multiple of warmup, and train.log_every = warmup")
    device = bench.runtime.device
    method = bench.engine_method()
    compiled = compile_networks(method) if compile_nets else 0
    rows: list[dict[str, Any]] = []
    logged: list[dict[str, float]] = []  # what the stage loop logs, one stage at a time

    def log(values: dict[str, float], step: int) -> None:
        logged.append(values)

    for stage in method.stages():
        stage = dataclasses.replace(
            stage, iterations=warmup + steps, cache_key=None, load_from=None
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        logged.clear()
        bench.run_engine_stage(method, stage, bench.streams(), folder, log)
        key = stage.prefix.replace("/", "") or stage.name  # as the trainer names perf/<key>/*
        windows = [w for w in logged if f"perf/{key}/iter_per_s" in w]  # not validation's
        timed = windows[1:]  # the first window is the warm-up
        if len(timed) != steps // warmup:
            raise RuntimeError(f"stage {stage.name}: {len(windows)} perf windows logged")
        seconds = [warmup / w[f"perf/{key}/iter_per_s"] for w in timed]
        waits = [w[f"perf/{key}/data_wait_frac"] for w in timed]
        train = bench.config["train"]
        rows.append(
            {
                "stage": stage.name,
                "it_per_s": steps / sum(seconds),
                "data_wait_frac": sum(f * s for f, s in zip(waits, seconds, strict=True))
                / sum(seconds),
                "peak_gpu_mem_mb": peak_memory_mib(device),
                "labeled_batch": int(train["batch_size"]),
                "unlabeled_batch": int(train["unlabeled_batch_size"]) if stage.unlabeled else 0,
                "timed_iterations": steps,
                **({"compiled_networks": compiled} if compile_nets else {}),
            }
        )
    return rows


def method_rows(
    method: str,
    variant: Variant,
    overrides: list[str],
    device: str,
    labeled: float,
    warmup: int,
    steps: int,
) -> list[dict[str, Any]]:
    """Every stage of ``method`` under the paper profile with ``overrides`` and ``variant``,
    as rows named ``<method>/<stage>``."""
    bench = make_bench(method, [*overrides, *variant.overrides()], device, "paper", labeled)
    with tempfile.TemporaryDirectory() as folder:
        rows = measure_stages(bench, warmup, steps, Path(folder), variant.compile_nets)
    return [{"name": f"{method}/{r['stage']}", "method": method, **r} for r in rows]
