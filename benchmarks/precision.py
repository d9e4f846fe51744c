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
import copy
import shutil
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import bench_env
from spinebench.engine.run import execute
from spinebench.engine.tracking import MlflowTracker, resolve_uri
from spinebench.models.backbone import UNet
from spinebench.paths import cache_dir
from spinebench.runinfo import RunRequest, RunResult

VARIANTS: dict[str, list[str]] = {
    "fp32": ["train.precision=fp32", "train.channels_last=false"],
    "bf16": ["train.precision=bf16", "train.channels_last=false"],
    "bf16+cl": ["train.precision=bf16", "train.channels_last=true"],
    "bf16+cl+compile": ["train.precision=bf16", "train.channels_last=true", "train.compile=true"],
}


def plain_mean_teacher_its(image_size: int, batch: int, steps: int, device: torch.device) -> float:
    """Iterations/s of a plain fp32 Mean Teacher step as SSL4MIS runs it (labeled + unlabeled
    halves, 5 classes), on random in-memory tensors."""
    half = batch // 2
    student = UNet(1, 5, [16, 32, 64, 128, 256], [0.05, 0.1, 0.2, 0.3, 0.5]).to(device)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 1, image_size, image_size, device=device)
    y = torch.randint(0, 5, (half, image_size, image_size), device=device)

    def step(i: int) -> None:
        out = student(x)
        soft = out.softmax(1)
        onehot = F.one_hot(y, 5).permute(0, 3, 1, 2).float()
        inter = (soft[:half] * onehot).sum((0, 2, 3))
        denom = (soft[:half] ** 2).sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = 1 - ((2 * inter + 1e-5) / (denom + 1e-5)).mean()
        sup = 0.5 * (F.cross_entropy(out[:half], y) + dice)
        with torch.no_grad():
            noise = torch.clamp(torch.randn_like(x[half:]) * 0.1, -0.2, 0.2)
            t_soft = teacher(x[half:] + noise).softmax(1)
        loss = sup + 0.1 * F.mse_loss(soft[half:], t_soft)
        opt.zero_grad()
        loss.backward()
        opt.step()
        alpha = min(1 - 1 / (i + 1), 0.99)
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(alpha).add_(s, alpha=1 - alpha)

    for i in range(3):
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i + 3)
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
        plain = plain_mean_teacher_its(args.image_size, batch, max(args.iterations // 4, 5), device)
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
