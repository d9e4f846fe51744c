"""Engine overhead: the spinebench loop vs a plain PyTorch loop doing the same work.

Both train the same `supervised` network from the same initial weights, on the same cached
slices with the same augmentation, loss, SGD optimiser and poly schedule. Blocks of each run
interleaved A B A B in one process; the printed figure is the median of per-pair time ratios
(engine / plain). Target: <= 1.05.

    python -m benchmarks.overhead [--iterations 40] [--pairs 5] [--device auto] [--threads N]

The ratio is only meaningful on an otherwise idle machine: a process whose torch threads
outnumber the free cores waits at every parallel region for a descheduled thread, and two
blocks a few seconds apart then see different neighbours. The script prints the load average
before and after and says when it was above the free cores' share; ``--threads 1`` measures
one thread, the setting for sharing the cores with other runs.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Bench, bench_env, make_bench, report_load
from spinebench.data.augment import random_affine
from spinebench.engine.trainer import build_optimizer
from spinebench.method import Stage


def plain_loop(bench: Bench, state: dict, iterations: int) -> float:
    """What a hand-written training script does, with the engine's data and model pieces."""
    method = bench.method()
    method.load_state_dict(state)
    method.train()
    stage = Stage(name="train", iterations=iterations)
    opt, sched = build_optimizer(method, stage, bench.config["train"])
    streams = bench.streams()
    aug = bench.config["augment"]
    device = bench.runtime.device
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iterations):
        image, label = streams.labeled.draw()
        image, label = image.to(device), label.to(device)
        image, label = random_affine(image, label, aug, streams.aug_generator)
        with bench.runtime.autocast()():
            loss = method.loss(method.net(image), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync(device)
    return time.perf_counter() - t0


def engine_loop(bench: Bench, state: dict, iterations: int, folder: Path) -> float:
    method = bench.method()
    method.load_state_dict(state)
    stage = Stage(name="train", iterations=iterations)
    streams = bench.streams()
    sync(bench.runtime.device)
    t0 = time.perf_counter()
    bench.run_engine_stage(method, stage, streams, folder)
    sync(bench.runtime.device)
    return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: all cores")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with bench_env():
        n = args.iterations
        bench = make_bench(
            "supervised",
            [
                f"data.image_size={args.image_size}",
                "data.cases=12",
                # logging/validation/checkpoint cadence as in a real run, never inside the block
                f"train.log_every={max(n // 4, 1)}",
                f"train.val_every={n + 1}",
                f"train.checkpoint_every={n + 1}",
                f"train.threads={args.threads}",
            ],
            device=args.device,
        )
        init = copy.deepcopy(bench.method().state_dict())
        plain_loop(bench, init, 5)  # warm-up: allocator, kernels, thread pools
        ratios = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.pairs):
                a = plain_loop(bench, init, n)
                b = engine_loop(bench, init, n, Path(tmp))
                ratios.append(b / a)
                print(f"pair {i}: plain {a:.3f}s engine {b:.3f}s ratio {b / a:.3f}", flush=True)
        dev = bench.runtime.device
        print(
            f"overhead ratio (engine/plain, median of {args.pairs} interleaved pairs, "
            f"{n} it, {args.image_size}px, batch {bench.config['train']['batch_size']}, "
            f"{dev} {bench.runtime.precision}): {statistics.median(ratios):.3f}"
        )
        report_load(load_before, os.getloadavg()[0], args.threads or os.cpu_count() or 1)


if __name__ == "__main__":
    main()
