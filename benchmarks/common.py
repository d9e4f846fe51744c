"""Pieces the benchmark scripts share: a prepared engine setup without tracking."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from spinebench.data.slices import SliceCache, build_or_load
from spinebench.data.streams import TrainStreams
from spinebench.engine.prepare import Prepared, build_method, prepare
from spinebench.engine.progress import StageProgress
from spinebench.engine.runtime import Runtime, setup
from spinebench.engine.stages import RunCheckpoints
from spinebench.engine.trainer import StageContext, StopFlag, TrainState, run_stage
from spinebench.method import Method, Stage
from spinebench.models.backbone import SegmentationNet
from spinebench.runinfo import RunRequest


@dataclass
class Bench:
    prepared: Prepared
    runtime: Runtime
    cache: SliceCache

    @property
    def config(self) -> dict[str, Any]:
        return self.prepared.config

    def method(self) -> Method:
        return build_method(self.prepared).to(self.runtime.device)

    def engine_method(self) -> Method:
        """The method as the engine sets it up for one process (``engine.run.Engine._setup``):
        ``train.compile`` compiles each child module in place, then device, then
        channels_last."""
        method = build_method(self.prepared)
        if self.config["train"]["compile"]:
            for module in method.children():
                module.compile()
        method = method.to(self.runtime.device)
        if self.runtime.channels_last:
            method = method.to(memory_format=torch.channels_last)
        return method

    def streams(self) -> TrainStreams:
        return TrainStreams(
            self.cache,
            self.prepared.split,
            self.config,
            self.prepared.request.seed,
            self.runtime.device,
        )

    def run_engine_stage(
        self,
        method: Method,
        stage: Stage,
        streams: TrainStreams,
        folder: Path,
        log: Callable[[dict[str, float], int], None] = lambda values, step: None,
    ) -> None:
        """The engine's own stage loop, without validation; logged values go to ``log``."""
        quiet = Console(quiet=True)
        with StopFlag() as stop, StageProgress(quiet) as progress:
            ctx = StageContext(
                streams,
                self.runtime,
                self.config["train"],
                log,
                lambda s: {},
                progress,
                stop,
                RunCheckpoints(folder),
            )
            run_stage(method, stage, TrainState(), ctx, None)


def compile_networks(method: Method) -> int:
    """Compile every segmentation network of ``method`` in place; the count compiled.

    ``train.compile`` compiles the method's children, and a child is compiled only where it is
    called: a Mean Teacher pair's student and teacher are called directly, never through the
    pair, so their UNets stay eager. Benchmarks measure both.
    """
    nets = [m for m in method.modules() if isinstance(m, SegmentationNet)]
    for net in nets:
        net.compile()
    return len(nets)


@contextmanager
def bench_env() -> Any:
    """Keep benchmark caches apart from the user's unless SPINEBENCH_CACHE is set."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SPINEBENCH_CACHE", str(Path(tmp) / "cache"))
        os.environ.setdefault("SPINEBENCH_RUNS", str(Path(tmp) / "runs"))
        yield Path(tmp)


def make_bench(
    method: str,
    overrides: list[str],
    device: str = "auto",
    profile: str = "quick",
    labeled: float = 0.05,
) -> Bench:
    prepared = prepare(
        RunRequest(
            method=method, labeled=labeled, overrides=overrides, device=device, profile=profile
        )
    )
    runtime = setup(prepared.config["train"], device, 0)
    cache = build_or_load("synthetic", prepared.dataset, prepared.config)
    return Bench(prepared, runtime, cache)


def report_load(before: float, after: float, threads: int) -> None:
    """Say whether other processes shared the cores while the blocks ran."""
    cores = os.cpu_count() or 1
    print(f"load average (1 min) before {before:.2f}, after {after:.2f}, on {cores} cores")
    # this process itself adds about `threads` to the load while it runs
    if max(before, after - threads) > 0.5:
        print(
            "warning: other processes were running; with more busy threads than cores the "
            "ratio measures the scheduler, not the engine (rerun idle, or with --threads 1)"
        )
