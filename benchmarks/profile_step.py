"""Where a training step's time goes: spinebench's Mean Teacher step beside SSL4MIS's.

spinebench's engine stage loop (data, augmentation, step, optimiser, EMA) runs in this process
under ``torch.profiler`` at the peers benchmark's setting (paper profile: UNet 16-256 with
BatchNorm, 12 labeled + 12 unlabeled slices, SGD, fp32, consistency term on), once in the
deterministic mode it uses by default on the CPU and once without it. With ``--ssl4mis PATH``
the peer's own ``train_mean_teacher_2D.py`` runs the same iterations through the peers
launcher under the profiler too (loader workers 0, so its augmentation is on the profiled
thread as spinebench's is). Each prints its step time and the operators that take most of it.

    python -m benchmarks.profile_step [--image-size 64,256] [--iterations 20] [--threads 2]
        [--ssl4mis PATH] [--top 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from benchmarks import peers
from benchmarks.common import bench_env, make_bench, report_load
from spinebench.engine.runtime import torch_settings_kept

SORT = "self_cpu_time_total"


def engine_profile(size: int, args: argparse.Namespace, deterministic: bool) -> str:
    """spinebench's stage loop under the profiler: seconds per step after warm-up (from its
    logged rates, as the peers benchmark reads them) and the top operators of every step."""
    overrides = peers.engine_overrides("mean_teacher", size, args)
    overrides.append(f"train.deterministic={str(deterministic).lower()}")
    with torch_settings_kept():
        bench = make_bench("mean_teacher", overrides, "cpu", peers.PROFILE, peers.LABELED)
        method = bench.engine_method()
        stage = dataclasses.replace(method.stages()[-1], iterations=args.iterations)
        history: list[tuple[int, float]] = []
        data: list[float] = []  # the share of each window spent drawing and augmenting

        def log(values: dict[str, float], step: int) -> None:
            if "perf/train/iter_per_s" in values:  # not the validation's scores
                history.append((step, values["perf/train/iter_per_s"]))
                data.append(values["perf/train/data_wait_frac"])

        with bench_env() as tmp, profile(activities=[ProfilerActivity.CPU]) as prof:
            bench.run_engine_stage(method, stage, bench.streams(), tmp / "ckpt", log)
    mode = "deterministic" if deterministic else "not deterministic"
    table = prof.key_averages().table(sort_by=SORT, row_limit=args.top)
    rate = peers.engine_rate(history)
    share = sum(data[1:]) / len(data[1:])
    return (
        f"spinebench, {mode}: {1 / rate:.3f} s/step after {args.warmup}, {share:.1%} of it "
        f"drawing and augmenting the batch\n{table}"
    )


def peer_profile(size: int, args: argparse.Namespace, tmp: Path) -> str:
    """The peer's script through the launcher under the profiler (its table is its output)."""
    phantom = peers.write_phantom(size, tmp / f"ACDC-{size}px")
    work = tmp / f"peer-{size}"
    table = tmp / f"peer-{size}-profile.txt"
    options = ("--profile", str(table), "--profile-top", str(args.top))
    timing = peers.run_peer(args.ssl4mis, "mean_teacher", phantom, 0, args, work, options)
    return (
        f"SSL4MIS {peers.METHODS['mean_teacher'].script}, loader workers 0: "
        f"{1 / timing.it_s:.3f} s/step after {args.warmup} (from its log)\n{table.read_text()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=peers._ints, default=[64, 256], help="comma list")
    parser.add_argument("--iterations", type=int, default=20, help="at least 10")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ssl4mis", type=Path, default=None, help="a checkout of SSL4MIS")
    parser.add_argument("--top", type=int, default=12, help="operators listed per profile")
    args = parser.parse_args(argv)
    if args.iterations < 10:
        parser.error("--iterations must be at least 10 (a fifth is warm-up, then 4 windows)")
    args.warmup = args.iterations // 5
    if args.ssl4mis is not None:
        args.ssl4mis = args.ssl4mis.resolve()
        if not (args.ssl4mis / peers.METHODS["mean_teacher"].script).is_file():
            parser.error(
                f"{args.ssl4mis} has no {peers.METHODS['mean_teacher'].script}: is it SSL4MIS?"
            )
    load_before = os.getloadavg()[0]
    with bench_env() as tmp:
        for size in args.image_size:
            print(f"==== {size} px, {args.threads} threads ====", flush=True)
            for deterministic in (True, False):
                print(engine_profile(size, args, deterministic), flush=True)
            if args.ssl4mis is not None:
                print(peer_profile(size, args, tmp), flush=True)
    report_load(load_before, os.getloadavg()[0], args.threads)


if __name__ == "__main__":
    main()
