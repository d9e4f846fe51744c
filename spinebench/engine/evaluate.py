"""Evaluation: 3D, per case, at native resolution and spacing.

A case's slices are predicted at training resolution, their logits resized back to the native
in-plane grid, and the arg-max volume is scored against the native label with every registered
metric. Model selection uses the val split; the test split is scored once, at the end.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spinebench.data.classmap import ClassMap
from spinebench.data.slices import SliceCache
from spinebench.method import Method

MetricFn = Callable[[np.ndarray, np.ndarray, Sequence[int], Sequence[float]], dict[int, float]]


@torch.no_grad()
def predict_slices(
    method: Method,
    slices: np.ndarray,
    native_hw: tuple[int, int],
    device: torch.device,
    batch_size: int = 16,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> np.ndarray:
    """Label volume (slices, *native_hw) from preprocessed slices (slices, size, size).

    Shared by evaluation and ``spinebench predict`` so both give the same labels."""
    out = []
    for start in range(0, len(slices), batch_size):
        images = torch.from_numpy(np.array(slices[start : start + batch_size]))[:, None].to(device)
        with autocast():
            logits = method.predict(images)
        logits = F.interpolate(logits.float(), size=native_hw, mode="bilinear", align_corners=False)
        out.append(logits.argmax(1).to(torch.uint8).cpu())
    return torch.cat(out).numpy()


def predict_case(
    method: Method,
    cache: SliceCache,
    case_id: str,
    device: torch.device,
    batch_size: int = 16,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> np.ndarray:
    """Label volume (slices, rows, cols) on the case's native grid."""
    info = cache.cases[case_id]
    rows, cols = info.native_shape[1:]
    return predict_slices(
        method, cache.images[info.start : info.stop], (rows, cols), device, batch_size, autocast
    )


def score_case(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    class_map: ClassMap,
    metrics: dict[str, MetricFn],
) -> dict[str, dict[int, float]]:
    """Every metric for every foreground class of one case (NaN = absent from both)."""
    return {name: fn(pred, truth, class_map.ids, spacing) for name, fn in metrics.items()}


def nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(
    per_case: dict[str, dict[str, dict[int, float]]], class_map: ClassMap, prefix: str
) -> dict[str, float]:
    """``<prefix>/<metric>``: mean over cases of each case's foreground mean;
    ``<prefix>/<metric>/<class name>``: mean over the cases where the class is scored."""
    out: dict[str, float] = {}
    if not per_case:
        return out
    metric_names = next(iter(per_case.values())).keys()
    for metric in metric_names:
        case_means = [nanmean(list(scores[metric].values())) for scores in per_case.values()]
        out[f"{prefix}/{metric}"] = nanmean(case_means)
        for cls in class_map.classes:
            value = nanmean([scores[metric][cls.id] for scores in per_case.values()])
            if not math.isnan(value):
                out[f"{prefix}/{metric}/{cls.name}"] = value
    return out


def evaluate(
    method: Method,
    cache: SliceCache,
    case_ids: Sequence[str],
    class_map: ClassMap,
    metrics: dict[str, MetricFn],
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[dict[str, dict[str, dict[int, float]]], dict[str, np.ndarray]]:
    """Per-case scores and the predicted volumes, with the method in eval mode."""
    was_training = method.training
    method.eval()
    try:
        scores, preds = {}, {}
        for cid in case_ids:
            pred = predict_case(method, cache, cid, device, batch_size, autocast)
            scores[cid] = score_case(
                pred, cache.native_label(cid), cache.cases[cid].spacing, class_map, metrics
            )
            preds[cid] = pred
        return scores, preds
    finally:
        method.train(was_training)


def write_per_case_csv(
    path: Path, per_case: dict[str, dict[str, dict[int, float]]], class_map: ClassMap
) -> None:
    """One row per case: the foreground mean of each metric, then each class's value."""
    metric_names = list(next(iter(per_case.values())).keys())
    header = (
        ["case"] + metric_names + [f"{m}/{c.name}" for m in metric_names for c in class_map.classes]
    )
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for cid, scores in per_case.items():
            row: list[object] = [cid]
            row += [nanmean(list(scores[m].values())) for m in metric_names]
            row += [scores[m][c.id] for m in metric_names for c in class_map.classes]
            writer.writerow(row)


def save_overlays(
    folder: Path,
    cache: SliceCache,
    preds: dict[str, np.ndarray],
    class_map: ClassMap,
    count: int,
) -> list[Path]:
    """Middle-slice PNGs (image, truth, prediction) of the first ``count`` cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    cmap = plt.get_cmap("tab20", class_map.num_classes)
    written = []
    for cid in list(preds)[:count]:
        info = cache.cases[cid]
        mid = (info.stop - info.start) // 2
        truth = np.asarray(cache.native_label(cid)[mid])
        pred = preds[cid][mid]
        image = np.array(cache.images[info.start + mid])
        image = F.interpolate(
            torch.from_numpy(image)[None, None],
            size=truth.shape,
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
        for ax, title, lab in zip(
            axes, ("image", "ground truth", "prediction"), (None, truth, pred), strict=True
        ):
            ax.imshow(image, cmap="gray")
            if lab is not None:
                ax.imshow(
                    np.ma.masked_equal(lab, 0),
                    cmap=cmap,
                    vmin=0,
                    vmax=class_map.num_classes - 1,
                    alpha=0.5,
                    interpolation="nearest",
                )
            ax.set_title(f"{cid}: {title}", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        path = folder / f"overlay_{cid}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
