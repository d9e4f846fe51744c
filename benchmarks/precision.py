"""Precision: fp32 vs bf16 autocast (+ channels_last, + torch.compile), speed and accuracy.

Runs, in one process and on the same data:

1. a plain fp32 SSL4MIS-style Mean Teacher step written here (the reference code's
   loop: UNet 16-256, EMA teacher on noisy inputs, 0.5 (CE + Dice) + MSE consistency, SGD;
   in-memory tensors, no data loading), timed for reference;
2. ``spinebench run --method mean_teacher`` for a short fixed budget under each precision
   variant: iterations/s (the engine's ``perf/*/iter_per_s``), its ratio to (1), and test Dice,
   so speed is never bought with accuracy;
3. the cps4 vision-language model's stage 1 under each variant: iterations/s and its val binary
   Dice (``--vlm`` gives a CLIPSeg folder, e.g. CIDAS/clipseg-rd64-refined saved locally;
   default: the small random VLM).

On a CPU only fp32 runs (bf16 autocast on CPU is not what a user trains with); on a GPU all
variants run. Defaults are the paper profile's 512 px, sized for a GPU run of under 8 minutes
(not yet measured on a GPU).

    python -m benchmarks.precision [--image-size 512] [--iterations 200] [--cases 24]
"""

from __future__ import annotations

import argparse
import shutil
import statistics

import torch

from benchmarks.common import bench_env
from benchmarks.gpu_plain import plain_mean_teacher
from benchmarks.gpu_timing import VARIANTS as PLAIN_VARIANTS
from spinebench.engine.run import execute
from spinebench.engine.tracking import MlflowTracker, resolve_uri
from spinebench.paths import cache_dir
from spinebench.runinfo import RunRequest, RunResult

VARIANTS: dict[str, list[str]] = {
    "fp32": ["train.precision=fp32", "train.channels_last=false"],
    "bf16": ["train.precision=bf16", "train.channels_last=false"],
    "bf16+cl": ["train.precision=bf16", "train.channels_last=true"],
    "bf16+cl+compile": ["train.precision=bf16", "train.channels_last=true", "train.compile=true"],
}


def _its(tracker: MlflowTracker, result: RunResult, stage: str) -> float:
    """The engine's iterations/s for ``stage``, the median of its logged windows after the
    first (which holds warm-up and compilation)."""
    history = tracker.metric_history(str(result.info.run_id), f"perf/{stage}/iter_per_s")
    values = [value for _, value in history]
    return statistics.median(values[1:] or values)


def _run(method: str, overrides: list[str], args: argparse.Namespace) -> RunResult:
    shutil.rmtree(cache_dir() / "stages", ignore_errors=True)  # stage 1 must train each time
    return execute(
        RunRequest(
            method=method,
            labeled=0.25,
            profile="paper",
            device=args.device,
            resume=False,
            overrides=[
                f"data.cases={args.cases}",
                f"data.image_size={args.image_size}",
                f"train.val_every={args.iterations}",
                f"train.log_every={max(args.iterations // 5, 1)}",
                f"train.checkpoint_every={args.iterations}",
                "eval.overlays=0",
                *overrides,
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vlm", default="", help="CLIPSeg folder for cps4 (default: small)")
    parser.add_argument("--variants", default="auto", help="comma-separated, or auto")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    names = (
        (list(VARIANTS) if cuda else ["fp32"])
        if args.variants == "auto"
        else args.variants.split(",")
    )
    device = torch.device("cuda" if cuda else "cpu")
    with bench_env():
        batch = 24  # paper profile: 12 labeled + 12 unlabeled
        plain = plain_mean_teacher(
            args.image_size,
            batch,
            5,
            PLAIN_VARIANTS["fp32"],
            3,
            max(args.iterations // 4, 5),
            device,
        )
        print(
            f"plain fp32 SSL4MIS-style mean teacher step: {plain:.2f} it/s "
            f"({args.image_size}px, batch {batch // 2}+{batch // 2}, {device})",
            flush=True,
        )
        tracker = MlflowTracker(resolve_uri(None), None)  # where execute() tracks in bench_env
        for name in names:
            mt = _run(
                "mean_teacher", [f"train.iterations={args.iterations}", *VARIANTS[name]], args
            )
            cps4 = _run(
                "cps4",
                [
                    f"cps4.pretrain_iterations={args.iterations}",
                    "train.iterations=1",
                    f"cps4.pretrained={args.vlm}",  # empty: the small random VLM
                    *VARIANTS[name],
                ],
                args,
            )
            row = {
                "mt_its": _its(tracker, mt, "train"),
                "mt_dice": mt.metrics["test/dice"],
                "vlm_its": _its(tracker, cps4, "pretrain"),
                "vlm_dice": tracker.metric_history(
                    str(cps4.info.run_id), "val/pretrain/binary_dice"
                )[-1][1],
            }
            print(
                f"{name:16s} mean_teacher {row['mt_its']:7.2f} it/s "
                f"({row['mt_its'] / plain:5.2f}x plain fp32), test Dice {row['mt_dice']:.3f} | "
                f"cps4 VLM stage 1 {row['vlm_its']:7.2f} it/s, val binary Dice "
                f"{row['vlm_dice']:.3f}",
                flush=True,
            )
    print(
        f"({args.iterations} iterations per run, {args.cases} synthetic cases at "
        f"{args.image_size}px, paper-profile batches; Dice after this short budget is for "
        "comparing variants, not a result)"
    )


if __name__ == "__main__":
    main()
