"""Data path vs model: can the data path feed each method without making it wait?

For every method, on its last (training) stage: slices/s the data path delivers alone (slice
cache + sampling + batched augmentation, the engine's ``TrainStreams``), slices/s the model
consumes alone (training steps on one pre-drawn batch), and the ``perf/<stage>/data_wait_frac``
the engine itself logs over a real stage loop. Target: data_wait_frac <= 0.05 (quick profile on
CPU; paper profile on a GPU).

    python -m benchmarks.data [--methods supervised,mean_teacher,...] [--profile quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import bench_env, make_bench
from spinebench.engine.trainer import build_optimizer
from spinebench.method import StepInfo

METHODS = "supervised,mean_teacher,unimatch,clipseg,cps4"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(method_name: str, profile: str, device: str, steps: int) -> dict[str, float]:
    n = steps
    bench = make_bench(
        method_name,
        [f"train.log_every={n}", f"train.val_every={n + 1}", f"train.checkpoint_every={n + 1}"],
        device=device,
        profile=profile,
    )
    dev = bench.runtime.device
    method = bench.method()
    stage = dataclasses.replace(method.stages()[-1], iterations=n)  # trains the segmenter
    streams = bench.streams()
    batch = streams.next(stage.unlabeled, stage.strong_views, stage.labeled_strong_views > 0)
    per_step = batch.image.shape[0] + (
        batch.unlabeled_weak.shape[0] if batch.unlabeled_weak is not None else 0
    )
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        streams.next(stage.unlabeled, stage.strong_views, stage.labeled_strong_views > 0)
    _sync(dev)
    data_s = time.perf_counter() - t0

    method.on_stage_start(stage)
    method.train()
    opt, _ = build_optimizer(method, stage, bench.config["train"])
    autocast = bench.runtime.autocast()
    for i in range(n + 2):  # two warm-up steps
        if i == 2:
            _sync(dev)
            t0 = time.perf_counter()
        with autocast():
            out = method.training_step(stage, batch, StepInfo(i, n))
        opt.zero_grad(set_to_none=True)
        out.losses["loss"].backward()
        opt.step()
    _sync(dev)
    model_s = time.perf_counter() - t0

    logged: dict[str, float] = {}
    fresh = bench.method()
    with tempfile.TemporaryDirectory() as tmp:
        bench.run_engine_stage(
            fresh, stage, bench.streams(), Path(tmp), lambda v, s: logged.update(v)
        )
    key = stage.prefix.replace("/", "") or stage.name
    return {
        "data_slices_per_s": n * per_step / data_s,
        "model_slices_per_s": n * per_step / model_s,
        "engine_data_wait_frac": logged[f"perf/{key}/data_wait_frac"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    with bench_env():
        print(
            f"{'method':14s} {'data sl/s':>10s} {'model sl/s':>11s} {'data/model':>11s} "
            f"{'engine data_wait_frac':>22s}"
        )
        worst = 0.0
        for name in args.methods.split(","):
            r = measure(name, args.profile, args.device, args.steps)
            worst = max(worst, r["engine_data_wait_frac"])
            print(
                f"{name:14s} {r['data_slices_per_s']:10.0f} {r['model_slices_per_s']:11.0f} "
                f"{r['data_slices_per_s'] / r['model_slices_per_s']:10.1f}x "
                f"{r['engine_data_wait_frac']:22.3f}",
                flush=True,
            )
        print(
            f"largest data_wait_frac: {worst:.3f} (target <= 0.05; {args.profile} profile, "
            f"{args.steps} steps per measurement, {args.device})"
        )


if __name__ == "__main__":
    main()
