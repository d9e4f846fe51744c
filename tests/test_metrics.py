"""Metrics on hand-made masks with answers worked out on paper, plus the contract's edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
)
from monai.networks.utils import one_hot

from spinebench.engine.metrics import assd, dice, hd95
from spinebench.hookspecs import MetricFn
from spinebench.stats import nanmean

ALL: tuple[MetricFn, ...] = (dice, hd95, assd)


def _box(shape: tuple[int, ...], *slices: slice, label: int = 1) -> np.ndarray:
    vol = np.zeros(shape, dtype=np.int64)
    vol[slices] = label
    return vol


def test_identical_masks_are_perfect() -> None:
    truth = np.zeros((10, 16, 16), dtype=np.int64)
    truth[2:6, 3:9, 4:12] = 1
    truth[6:9, 10:15, 0:16] = 2  # touches the image border on one axis
    ids, sp = [1, 2], (3.0, 0.7, 0.7)
    assert dice(truth, truth, ids, sp) == {1: 1.0, 2: 1.0}
    assert hd95(truth, truth, ids, sp) == {1: 0.0, 2: 0.0}
    assert assd(truth, truth, ids, sp) == {1: 0.0, 2: 0.0}


def test_dice_of_two_overlapping_cubes() -> None:
    # 4x4x4 cubes shifted by 2 along axis 0: overlap 2*4*4 = 32, so Dice = 2*32 / (64+64) = 0.5.
    truth = _box((12, 12, 12), slice(2, 6), slice(2, 6), slice(2, 6))
    pred = _box((12, 12, 12), slice(4, 8), slice(2, 6), slice(2, 6))
    assert dice(pred, truth, [1], (1.0, 1.0, 1.0))[1] == pytest.approx(0.5)
    # 3x3x3 against 3x3x2 inside it: Dice = 2*18 / (27+18) = 0.8.
    truth = _box((8, 8, 8), slice(1, 4), slice(1, 4), slice(1, 4))
    pred = _box((8, 8, 8), slice(1, 4), slice(1, 4), slice(1, 3))
    assert dice(pred, truth, [1], (2.0, 1.0, 0.5))[1] == pytest.approx(0.8)


@pytest.mark.parametrize(("axis", "k"), [(0, 1), (0, 3), (1, 2), (2, 4)])
def test_shifted_plane_distance_is_shift_times_spacing(axis: int, k: int) -> None:
    # A one-voxel-thick plane is all surface. Shifted by k voxels along its normal, every surface
    # voxel of either mask is exactly k voxels from the nearest one of the other (any sideways step
    # only adds distance), so HD95 = ASSD = k * spacing[axis].
    shape, sp = (12, 14, 16), (3.0, 0.5, 0.8)
    truth_idx = [slice(2, n - 2) for n in shape]
    pred_idx = list(truth_idx)
    truth_idx[axis], pred_idx[axis] = slice(4, 5), slice(4 + k, 5 + k)
    truth, pred = _box(shape, *truth_idx), _box(shape, *pred_idx)
    assert hd95(pred, truth, [1], sp)[1] == pytest.approx(k * sp[axis], rel=1e-6)
    assert assd(pred, truth, [1], sp)[1] == pytest.approx(k * sp[axis], rel=1e-6)
    assert dice(pred, truth, [1], sp)[1] == 0.0


def test_class_absent_from_both_is_nan() -> None:
    truth = _box((6, 8, 8), slice(1, 3), slice(1, 3), slice(1, 3))
    for fn in ALL:
        values = fn(truth, truth, [1, 7], (1.0, 1.0, 1.0))
        assert set(values) == {1, 7}
        assert math.isnan(values[7])


@pytest.mark.parametrize("missing_in", ["pred", "truth"])
def test_class_in_one_volume_only_scores_worst(missing_in: str) -> None:
    shape, sp = (10, 20, 30), (2.0, 1.0, 0.5)
    present = _box(shape, slice(1, 4), slice(2, 5), slice(3, 9), label=2)
    absent = np.zeros(shape, dtype=np.int64)
    pred, truth = (absent, present) if missing_in == "pred" else (present, absent)
    diagonal = math.sqrt(20.0**2 + 20.0**2 + 15.0**2)
    assert dice(pred, truth, [2], sp) == {2: 0.0}
    assert hd95(pred, truth, [2], sp)[2] == pytest.approx(diagonal)
    assert assd(pred, truth, [2], sp)[2] == pytest.approx(diagonal)


def test_spacing_scales_distances_but_not_dice() -> None:
    truth = _box((10, 12, 12), slice(2, 6), slice(2, 8), slice(3, 9))
    pred = _box((10, 12, 12), slice(3, 7), slice(2, 9), slice(3, 9))
    unit, double = (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)
    assert dice(pred, truth, [1], unit) == dice(pred, truth, [1], double)
    for fn in (hd95, assd):
        d1, d2 = fn(pred, truth, [1], unit)[1], fn(pred, truth, [1], double)[1]
        assert d1 > 0
        assert d2 == pytest.approx(2 * d1)
    # Stretching only the axis of the shift stretches the distance with it.
    assert hd95(pred, truth, [1], (5.0, 1.0, 1.0))[1] > hd95(pred, truth, [1], unit)[1]


def test_works_on_2d_label_images() -> None:
    truth = _box((20, 20), slice(5, 6), slice(2, 18))
    pred = _box((20, 20), slice(8, 9), slice(2, 18))
    sp = (0.5, 2.0)
    assert hd95(pred, truth, [1], sp)[1] == pytest.approx(1.5)
    assert assd(pred, truth, [1], sp)[1] == pytest.approx(1.5)
    assert dice(truth, truth, [1], sp)[1] == 1.0


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """Labels as the argmax of smoothed noise: irregular shapes, some touching the border."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.random((n_classes + 1, *shape)), sigma=(0, 1.5, 2, 2))
    return field.argmax(0).astype(np.int64)


def test_matches_monai_on_whole_one_hot_volume() -> None:
    # The per-class crop must not change anything: compare with MONAI on the uncropped one-hot.
    rng = np.random.default_rng(0)
    shape, n, sp = (8, 24, 20), 4, [2.5, 0.6, 0.9]
    truth, pred = _blobs(rng, shape, n), _blobs(rng, shape, n)
    ids = list(range(1, n + 1))
    assert all((truth == c).any() and (pred == c).any() for c in ids)
    p = one_hot(torch.from_numpy(pred)[None, None], n + 1)
    t = one_hot(torch.from_numpy(truth)[None, None], n + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = {
            dice: compute_dice(p, t, include_background=False),
            hd95: compute_hausdorff_distance(
                p, t, include_background=False, percentile=95, spacing=sp
            ),
            assd: compute_average_surface_distance(
                p, t, include_background=False, symmetric=True, spacing=sp
            ),
        }
    for fn, ref in expected.items():
        got = fn(pred, truth, ids, sp)
        assert [got[c] for c in ids] == pytest.approx(ref[0].tolist(), rel=1e-5, abs=1e-6)


def test_only_requested_classes_and_no_empty_mask_warnings() -> None:
    truth = _box((6, 10, 10), slice(1, 4), slice(1, 4), slice(1, 4), label=3)
    pred = _box((6, 10, 10), slice(1, 4), slice(2, 5), slice(1, 4), label=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI warns on empty masks; we must never hand it one
        for fn in ALL:
            assert set(fn(pred, truth, [3, 5, 9], (1.0, 1.0, 1.0))) == {3, 5, 9}


def test_background_class_can_be_requested() -> None:
    truth = _box((6, 6, 6), slice(0, 3), slice(0, 6), slice(0, 6))
    pred = _box((6, 6, 6), slice(0, 4), slice(0, 6), slice(0, 6))
    # Background: 108 voxels against 72, all shared: 2*72 / 180 = 0.8.
    assert dice(pred, truth, [0], (1.0, 1.0, 1.0))[0] == pytest.approx(0.8)


def test_nanmean_skips_absent_classes() -> None:
    assert nanmean({1: 0.5, 2: math.nan, 3: 1.0}.values()) == pytest.approx(0.75)
    assert math.isnan(nanmean([math.nan, math.nan]))
    assert math.isnan(nanmean([]))


@pytest.mark.parametrize(
    ("pred", "truth", "spacing", "error"),
    [
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int), (1, 1, 1), ValueError),
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 4), int), (1, 1), ValueError),
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 4), int), (1, 0, 1), ValueError),
        (np.zeros((4, 4, 4), float), np.zeros((4, 4, 4), int), (1, 1, 1), TypeError),
    ],
)
def test_rejects_inputs_that_would_give_wrong_numbers(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], error: type[Exception]
) -> None:
    for fn in ALL:
        with pytest.raises(error):
            fn(pred, truth, [1], spacing)


def test_typical_case_gives_finite_values_for_every_class() -> None:
    # 12 sagittal slices of 128x128 with all 19 MRSpineSeg classes, prediction slightly off.
    rng = np.random.default_rng(1)
    shape = (12, 128, 128)
    truth = np.zeros(shape, dtype=np.int64)
    for c in range(1, 20):
        truth[2:10, 5 + 6 * c : 10 + 6 * c, 40:90] = c
    pred = np.roll(truth, 2, axis=2)
    noise = rng.random(shape) < 0.002
    pred[noise] = rng.integers(0, 20, int(noise.sum()))
    ids, sp = list(range(1, 20)), (4.0, 0.6, 0.6)
    for fn in ALL:
        values = fn(pred, truth, ids, sp)
        assert set(values) == set(ids)
        assert all(math.isfinite(v) for v in values.values())


def test_leaves_torch_thread_setting_as_it_found_it() -> None:
    before = torch.get_num_threads()
    truth = _box((6, 8, 8), slice(1, 4), slice(1, 4), slice(1, 4))
    hd95(truth, truth, [1], (1.0, 1.0, 1.0))
    assert torch.get_num_threads() == before
