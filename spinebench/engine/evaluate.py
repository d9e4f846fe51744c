"""Evaluation: 3D, per case, at native resolution and spacing.

A case's slices are predicted at training resolution, their logits resized back to the native
in-plane grid, and the arg-max volume is scored against the native label with every registered
metric. Model selection uses the val split; the test split is scored once, at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spinebench.data.classmap import ClassMap
from spinebench.data.slices import SliceCache
from spinebench.engine.runtime import Runtime
from spinebench.hookspecs import MetricFn
from spinebench.method import Method, Stage
from spinebench.stats import nanmean


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


def classes_present(truth: np.ndarray, class_map: ClassMap) -> dict[int, bool]:
    """Which foreground classes the case's truth contains: a score of 0 then means "present and
    missed", and a NaN "absent from both" (the coverage the leaderboard reports per class)."""
    found = set(np.unique(truth).tolist())
    return {c: c in found for c in class_map.ids}


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
        case_means = [nanmean(scores[metric].values()) for scores in per_case.values()]
        out[f"{prefix}/{metric}"] = nanmean(case_means)
        for cls in class_map.classes:
            value = nanmean([scores[metric][cls.id] for scores in per_case.values()])
            if not math.isnan(value):
                out[f"{prefix}/{metric}/{cls.name}"] = value
    return out


@dataclass
class Evaluation:
    """Per-case scores (case -> metric -> class id -> value), which classes each case's truth
    contains, and the predicted label volumes."""

    scores: dict[str, dict[str, dict[int, float]]]
    present: dict[str, dict[int, bool]]
    preds: dict[str, np.ndarray]


def evaluate(
    method: Method,
    cache: SliceCache,
    case_ids: Sequence[str],
    class_map: ClassMap,
    metrics: dict[str, MetricFn],
    device: torch.device,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> Evaluation:
    """Every case scored, with the method in eval mode."""
    was_training = method.training
    method.eval()
    try:
        result = Evaluation({}, {}, {})
        for cid in case_ids:
            pred = predict_case(method, cache, cid, device, batch_size, autocast)
            truth = cache.native_label(cid)
            result.scores[cid] = score_case(
                pred, truth, cache.cases[cid].spacing, class_map, metrics
            )
            result.present[cid] = classes_present(truth, class_map)
            result.preds[cid] = pred
        return result
    finally:
        method.train(was_training)


def coverage(
    present: dict[str, dict[int, bool]], class_map: ClassMap, prefix: str
) -> dict[str, float]:
    """``<prefix>/cases``: how many cases were scored; ``<prefix>/coverage/<class name>``: in how
    many of them the truth contains the class (a class that is often absent moves the mean)."""
    out = {f"{prefix}/cases": float(len(present))}
    for cls in class_map.classes:
        out[f"{prefix}/coverage/{cls.name}"] = float(sum(p[cls.id] for p in present.values()))
    return out


def validate(
    method: Method,
    stage: Stage,
    cache: SliceCache,
    case_ids: Sequence[str],
    class_map: ClassMap,
    dice: MetricFn,
    runtime: Runtime,
    batch_size: int,
) -> dict[str, float]:
    """A stage's validation numbers: 3D ``val/dice`` and ``val/dice/<class>`` for a segmenting
    stage, else the method's :meth:`~spinebench.method.Method.validate_stage` averaged over
    val slices."""
    if stage.segments:
        scores = evaluate(
            method,
            cache,
            case_ids,
            class_map,
            {"dice": dice},
            runtime.device,
            batch_size,
            runtime.autocast(),
        ).scores
        return {k: v for k, v in summarize(scores, class_map, "val").items() if not math.isnan(v)}
    rows = cache.slice_indices(list(case_ids))
    totals: dict[str, float] = {}
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                idx = rows[start : start + batch_size]
                images = torch.from_numpy(np.array(cache.images[idx]))[:, None]
                labels = torch.from_numpy(cache.labels[idx].astype("int64"))
                with runtime.autocast()():
                    values = method.validate_stage(
                        stage, images.to(runtime.device), labels.to(runtime.device)
                    )
                for k, v in values.items():
                    totals[k] = totals.get(k, 0.0) + float(v) * len(idx)
    finally:
        method.train(was_training)
    return {f"val/{stage.prefix}{k}": v / max(len(rows), 1) for k, v in totals.items()}
