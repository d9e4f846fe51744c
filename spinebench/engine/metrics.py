"""Per-class segmentation metrics for 3D (or 2D) evaluation at native voxel spacing.

Every metric takes integer label volumes ``pred`` and ``truth`` of identical shape, the class ids
to score and the voxel size in millimetres per axis, and returns ``{class_id: value}`` for exactly
the requested classes. The numbers come from MONAI (``compute_dice``,
``compute_hausdorff_distance`` with ``percentile=95``, ``compute_average_surface_distance`` with
``symmetric=True``, Euclidean distances scaled by ``spacing``); this module only decides what a
class that is missing somewhere scores, and feeds MONAI small binary masks.

Conventions (the project's contract, DESIGN.md "Metrics"; the README must state them too):

- class absent from both prediction and ground truth: NaN for Dice, HD95 and ASSD, so that
  ``spinebench.stats.nanmean`` leaves it out of the mean (nothing to get right or wrong);
- class present in exactly one of them: Dice 0, HD95 and ASSD equal the image diagonal in mm,
  ``sqrt(sum((shape_i * spacing_i) ** 2))`` -- the largest distance the image can hold, so a missed
  or hallucinated structure is the worst finite score and means stay finite;
- otherwise: MONAI's value. HD95 is MONAI's symmetric form, the larger of the two directed 95th
  percentiles (``torch.quantile``, linear interpolation) of surface-to-surface distances; ASSD is
  the mean over the pooled distances of both directions (not the mean of the two directed means).
  Surfaces are the mask voxels that binary erosion removes (an object touching the image border
  has a surface there).

Speed: each class is one-hot encoded on its own crop, the bounding box of (pred == c) | (truth == c)
grown by one voxel and clipped to the image. Cropping changes no result: voxels outside the crop are
background in both masks, so Dice counts are unchanged; both masks lie entirely inside the crop, so
erosion finds the same surface voxels (a voxel on the crop face has its outside neighbour in the
background either way, and where the crop face is the image border, nothing changed), and surface
distances are differences of voxel coordinates, which a common shift leaves alone. MONAI runs on
one torch thread during a call (restored afterwards), which keeps it fast on busy CPUs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
)
from scipy import ndimage

_Box = tuple[slice, ...]
# Scores a pair of present, cropped masks of shape (1, 1, *spatial) for one class.
_Scorer = Callable[[torch.Tensor, torch.Tensor, list[float]], torch.Tensor]

_CROP_MARGIN = 1  # one voxel of background around each class keeps the crop argument obvious


def dice(
    pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int], spacing: Sequence[float]
) -> dict[int, float]:
    """Dice per class; ``spacing`` is accepted for a uniform signature (Dice is unitless)."""
    return _per_class(
        pred, truth, class_ids, spacing, _dice_scorer, one_sided=lambda shape, sp: 0.0
    )


def hd95(
    pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int], spacing: Sequence[float]
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance per class, in mm (robust to a few outliers)."""
    return _per_class(pred, truth, class_ids, spacing, _hd95_scorer, one_sided=_diagonal)


def assd(
    pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int], spacing: Sequence[float]
) -> dict[int, float]:
    """Average symmetric surface distance per class, in mm (typical boundary error)."""
    return _per_class(pred, truth, class_ids, spacing, _assd_scorer, one_sided=_diagonal)


def _dice_scorer(p: torch.Tensor, t: torch.Tensor, spacing: list[float]) -> torch.Tensor:
    # One channel that is the class itself, hence include_background=True.
    return compute_dice(p, t, include_background=True)


def _hd95_scorer(p: torch.Tensor, t: torch.Tensor, spacing: list[float]) -> torch.Tensor:
    return compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)


def _assd_scorer(p: torch.Tensor, t: torch.Tensor, spacing: list[float]) -> torch.Tensor:
    return compute_average_surface_distance(
        p, t, include_background=True, symmetric=True, spacing=spacing
    )


def _per_class(
    pred: np.ndarray,
    truth: np.ndarray,
    class_ids: Sequence[int],
    spacing: Sequence[float],
    scorer: _Scorer,
    one_sided: Callable[[tuple[int, ...], list[float]], float],
) -> dict[int, float]:
    """Apply the conventions for missing classes, and ``scorer`` to each class present in both."""
    pred, truth, ids, sp = _validate(pred, truth, class_ids, spacing)
    pred_boxes, truth_boxes = _boxes(pred, ids), _boxes(truth, ids)
    out: dict[int, float] = {}
    with _one_torch_thread(), warnings.catch_warnings():
        # MONAI (1.6.1 here) passes its own deprecated argument to get_mask_edges on every call; the
        # warning is MONAI's to fix and says nothing about our inputs, so keep logs clean of it.
        warnings.filterwarnings(
            "ignore", message=".*always_return_as_numpy", category=FutureWarning
        )
        for c in ids:
            pb, tb = pred_boxes[c], truth_boxes[c]
            if pb is None and tb is None:
                out[c] = math.nan
            elif pb is None or tb is None:
                out[c] = one_sided(pred.shape, sp)
            else:
                crop = _grow(pb, tb, pred.shape)
                p = torch.from_numpy(pred[crop] == c)[None, None].float()
                t = torch.from_numpy(truth[crop] == c)[None, None].float()
                out[c] = float(scorer(p, t, sp).reshape(-1)[0])
    return out


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run MONAI's many small tensor ops on one intra-op thread, then restore the setting.

    Fanning ops on ~10^5 voxels out to threads gains nothing here, and when other processes hold
    the cores, OpenMP's waiting threads made a 19-class case take ~10 s instead of ~0.3 s.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _diagonal(shape: tuple[int, ...], spacing: list[float]) -> float:
    """Image diagonal in mm: the distance given to a class present in only one of the volumes."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


def _validate(
    pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, list[int], list[float]]:
    """Fail loudly on inputs that would otherwise give plausible but wrong numbers."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    for name, arr in (("pred", pred), ("truth", truth)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise TypeError(f"{name} must be an integer label volume, got dtype {arr.dtype}")
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth shapes differ: {pred.shape} vs {truth.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label volume, got shape {pred.shape}")
    sp = [float(s) for s in spacing]
    if len(sp) != pred.ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {pred.ndim} positive numbers (mm per axis), got {sp}")
    ids = list(dict.fromkeys(int(c) for c in class_ids))
    if any(c < 0 for c in ids):
        raise ValueError(f"class ids must be non-negative, got {ids}")
    return pred, truth, ids, sp


def _boxes(labels: np.ndarray, ids: list[int]) -> dict[int, _Box | None]:
    """Bounding box of each requested class (None if absent), in one pass over the volume."""
    out: dict[int, _Box | None] = {}
    positive = [c for c in ids if c > 0]
    if positive:
        arr = labels.astype(np.int64, copy=False)
        found = ndimage.find_objects(arr, max_label=max(positive))
        out.update({c: found[c - 1] for c in positive})
    if 0 in ids:  # find_objects ignores label 0
        hits = np.argwhere(labels == 0)
        out[0] = (
            tuple(slice(lo, hi + 1) for lo, hi in zip(hits.min(0), hits.max(0), strict=True))
            if hits.size
            else None
        )
    return out


def _grow(a: _Box, b: _Box, shape: tuple[int, ...]) -> _Box:
    """Union of two boxes plus the crop margin, clipped to the image."""
    return tuple(
        slice(
            max(min(sa.start, sb.start) - _CROP_MARGIN, 0),
            min(max(sa.stop, sb.stop) + _CROP_MARGIN, n),
        )
        for sa, sb, n in zip(a, b, shape, strict=True)
    )
