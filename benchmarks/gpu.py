"""GPU figures for the paper profile: every method's training stages next to a plain loop.

One process measures, side by side, on the same synthetic data at the paper profile's sizes
(512 px slices, batches of 12 labeled + 12 unlabeled):

1. the plain SSL4MIS-style Mean Teacher step (``gpu_plain``) in fp32 and in bf16 autocast +
   channels_last: every other figure is also a ratio to it, measured in the same process;
2. every registered method's training stages through the engine's stage loop
   (``gpu_stages``; methods come from the plugin registry, so one installed later is measured
   too) under both: iterations/s, the engine's ``data_wait_frac``, peak GPU memory;
3. CLIPSeg with the architecture of CIDAS/clipseg-rd64-refined (``gpu_clipseg``, random
   weights) as the VLM of every method whose paper profile loads it, and alone at 352 px;
4. the plain loop at the batch of the issue's anchor figures (16);
5. ``torch.compile``, last since compiling takes minutes, for the plain loop and mean_teacher
   only: mean_teacher as ``train.compile=true`` compiles it (each child module of the method,
   which leaves its UNets eager: the Mean Teacher pair's student and teacher are called
   directly, never through the pair) and with every segmentation network compiled
   (``compile-nets``).

Rows run in that order while ``--budget-s`` lasts (later rows are recorded as skipped); the
JSON file (``gpu_report``) is rewritten after every row and records the device, torch, CUDA and
cuDNN versions, the command and the date.

    python -m benchmarks.gpu [--out benchmarks/results/gpu-DATE.json] [--budget-s 200]
    python -m benchmarks.gpu --device cpu --image-size 32 --iterations 2 --warmup 1 \\
        --cases 8 --vlm small --vlm-size 32 --no-compile      # the CPU rehearsal
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import bench_env, make_bench
from benchmarks.gpu_clipseg import CLIPSEG_RD64_REFINED, CLIPSEG_SIZE, clipseg_alone, rd64_folder
from benchmarks.gpu_clipseg import vlm_overrides as clipseg_overrides
from benchmarks.gpu_plain import ANCHOR_BATCH, REFERENCE_BATCH, plain_mean_teacher
from benchmarks.gpu_report import Report, environment, table_header
from benchmarks.gpu_stages import method_rows
from benchmarks.gpu_timing import (
    COMPILED_VARIANTS,
    EAGER_VARIANTS,
    VARIANTS,
    Variant,
    peak_memory_mib,
    reset_between_rows,
)
from spinebench import plugins
from spinebench.data.classmap import ClassMap

COMPILED_METHODS = ("mean_teacher",)
"""Methods measured under torch.compile too (compiling every method would take the budget)."""


@dataclass(frozen=True)
class Job:
    """One planned measurement, giving one row (or one per stage for a method)."""

    kind: str  # "plain", "method" or "vlm"
    name: str
    variant: Variant
    measure: Callable[[], list[dict[str, Any]]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=REFERENCE_BATCH, help="plain loop's batch")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps; also the window")
    parser.add_argument("--iterations", type=int, default=10, help="timed steps per row")
    parser.add_argument("--cases", type=int, default=16, help="synthetic cases")
    parser.add_argument("--labeled", type=float, default=0.25)
    parser.add_argument("--methods", default="all", help="comma-separated, or all registered")
    parser.add_argument("--variants", default=",".join(EAGER_VARIANTS))
    parser.add_argument("--vlm", choices=("rd64", "small"), default="rd64")
    parser.add_argument("--vlm-size", type=int, default=0, help="CLIPSeg input (0: 352)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--budget-s", type=float, default=200.0, help="no new row after this")
    parser.add_argument("--threads", type=int, default=0, help="CPU: torch threads (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file")
    args = parser.parse_args(argv)
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in EAGER_VARIANTS]
    if unknown or args.warmup < 1:
        parser.error(f"--variants takes {', '.join(EAGER_VARIANTS)}; --warmup at least 1")
    # whole windows of --warmup steps: the engine logs its perf figures once per window
    args.iterations = max(args.warmup, math.ceil(args.iterations / args.warmup) * args.warmup)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.out is None:
        args.out = Path("benchmarks/results") / f"gpu-{datetime.date.today().isoformat()}.json"
    return args


def plan(
    args: argparse.Namespace,
    methods: list[str],
    class_map: ClassMap,
    overrides: list[str],
    root: Path,
) -> list[Job]:
    """Every measurement, in the order they run (see the module's docstring)."""
    device = torch.device(args.device)
    size = args.vlm_size or CLIPSEG_SIZE

    def plain(batch: int, variant: Variant) -> Job:
        def measure() -> list[dict[str, Any]]:
            speed = plain_mean_teacher(
                args.image_size,
                batch,
                class_map.num_classes,
                variant,
                args.warmup,
                args.iterations,
                device,
            )
            return [{"it_per_s": speed, "peak_gpu_mem_mb": peak_memory_mib(device), "batch": batch}]

        return Job("plain", f"plain mean teacher b{batch}", variant, measure)

    def stages(method: str, variant: Variant) -> Job:
        def measure() -> list[dict[str, Any]]:
            sets, note = clipseg_overrides(method, args.labeled, args.vlm, args.vlm_size, root)
            rows = method_rows(
                method,
                variant,
                [*overrides, *sets],
                args.device,
                args.labeled,
                args.warmup,
                args.iterations,
            )
            return [row | ({"vlm": note} if note else {}) for row in rows]

        return Job("method", method, variant, measure)

    def alone(variant: Variant) -> Job:
        def measure() -> list[dict[str, Any]]:
            folder = rd64_folder(root) if args.vlm == "rd64" else None
            return [
                clipseg_alone(
                    class_map, folder, size, variant, args.warmup, args.iterations, device
                )
            ]

        return Job("vlm", f"clipseg {args.vlm} {size}px alone", variant, measure)

    eager = [VARIANTS[name] for name in args.variants]
    batches = [args.batch] if args.batch == ANCHOR_BATCH else [args.batch, ANCHOR_BATCH]
    jobs = [plain(args.batch, v) for v in eager]
    jobs += [stages(method, v) for method in methods for v in eager]
    jobs += [alone(v) for v in eager]
    jobs += [plain(batch, v) for batch in batches[1:] for v in eager]
    if args.compile:
        compiled = VARIANTS["bf16+cl+compile"]
        jobs.append(plain(args.batch, compiled))
        for method in (m for m in COMPILED_METHODS if m in methods):
            jobs += [stages(method, VARIANTS[name]) for name in COMPILED_VARIANTS]
        jobs += [plain(batch, compiled) for batch in batches[1:]]
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Measure every planned row and write the JSON file; 1 if a row failed."""
    args = parse_args(argv)
    device = torch.device(args.device)
    methods = sorted(plugins.methods()) if args.methods == "all" else args.methods.split(",")
    header = environment(device)
    header["command"] = " ".join(
        ["python -m benchmarks.gpu", *(sys.argv[1:] if argv is None else argv)]
    )
    header["settings"] = {
        "profile": "paper",
        **{k: v for k, v in vars(args).items() if k not in ("out", "methods")},
        "vlm_size": args.vlm_size or CLIPSEG_SIZE,
    }
    header["methods"] = methods
    header["clipseg_rd64_refined"] = CLIPSEG_RD64_REFINED
    report = Report(args.out, header, args.batch)
    overrides = [
        f"data.cases={args.cases}",
        f"data.image_size={args.image_size}",
        "train.val_every=100000",
        "train.checkpoint_every=100000",
        f"train.log_every={args.warmup}",
        "eval.overlays=0",
        f"train.threads={args.threads}",
    ]
    with bench_env() as root:
        print(f"{report.data['device']} | torch {torch.__version__} | CUDA {torch.version.cuda}")
        t0 = time.perf_counter()
        base = make_bench("supervised", overrides, args.device, "paper", args.labeled)
        report.data["data_setup_s"] = round(time.perf_counter() - t0, 1)
        report.data["settings"]["classes"] = base.prepared.class_map.num_classes
        report.data["settings"]["torch_threads"] = torch.get_num_threads()
        print(table_header(), flush=True)
        for job in plan(args, methods, base.prepared.class_map, overrides, root):
            row: dict[str, Any] = {"kind": job.kind, "name": job.name, "variant": job.variant.name}
            if report.elapsed() > args.budget_s:
                report.add({**row, "skipped": f"budget of {args.budget_s:.0f} s spent"})
                continue
            reset_between_rows(device)
            try:
                for measured in job.measure():
                    report.add({**row, **measured})
            except Exception as exc:  # one broken row must not lose the others
                traceback.print_exc()
                report.add({**row, "error": f"{type(exc).__name__}: {exc}"[:500]})
        report.save()
    errors = report.data["errors"]
    print(f"wrote {args.out} ({report.elapsed():.0f} s, {errors} row(s) failed)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
