"""The synthetic phantom: deterministic, RAS, positional labels, and a faithful NIfTI round trip."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinebench.data.classmap import mrspineseg_class_map
from spinebench.data.phantom import (
    PHANTOM_VERSION,
    PhantomCase,
    generate_case,
    save_montage,
    write_dataset,
)

SEEDS = range(8)
LUMBAR = [1, 2, 3, 4, 5, 6]  # S, L5..L1
LUMBAR_DISCS = [11, 12, 13, 14, 15]  # L5/S..L1/L2


@cache
def case(seed: int) -> PhantomCase:
    return generate_case(seed)


def mid(c: PhantomCase) -> int:
    return c.label.shape[0] // 2


def test_shapes_dtypes_and_label_values() -> None:
    c = case(0)
    assert c.image.shape == c.label.shape == (12, 128, 128)
    assert c.image.dtype == np.float32 and c.label.dtype == np.uint8
    assert c.affine.shape == (4, 4) and c.affine.dtype == np.float64
    assert np.isfinite(c.image).all() and c.image.min() >= 0
    for seed in SEEDS:
        assert set(np.unique(case(seed).label)) <= set(range(20))


def test_same_seed_is_bit_identical_and_seeds_differ() -> None:
    a, b = generate_case(3), case(3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert np.array_equal(a.affine, b.affine)
    other = case(4)
    assert not np.array_equal(a.image, other.image)
    assert not np.array_equal(a.label, other.label)


def test_custom_geometry_is_honoured() -> None:
    c = generate_case(1, n_slices=5, size=(96, 112), spacing=(4.0, 3.0, 2.8))
    assert c.image.shape == c.label.shape == (5, 96, 112)
    assert np.allclose(np.diag(c.affine)[:3], [4.0, 3.0, 2.8])


def test_affine_is_ras_centred_with_lr_slice_spacing() -> None:
    c = case(0)
    assert nib.aff2axcodes(c.affine) == ("R", "A", "S")
    assert np.allclose(np.diag(c.affine), [4.4, 2.5, 2.5, 1.0])
    centre = c.affine @ np.array([*((np.array(c.image.shape) - 1) / 2), 1.0])
    assert np.allclose(centre[:3], 0.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_sacrum_and_lumbar_levels_present_in_mid_slice(seed: int) -> None:
    c = case(seed)
    assert (c.label == 1).any(), "the sacrum must always be in the field of view"
    present = set(np.unique(c.label[mid(c)]))
    assert set(LUMBAR + LUMBAR_DISCS) <= present


@pytest.mark.parametrize("seed", SEEDS)
def test_levels_are_ordered_from_the_sacrum_upwards(seed: int) -> None:
    """Class identity is positional: along S-I, S < L5/S < L5 < L4/L5 < L4 < ... ."""
    c = case(seed)
    plane = c.label[mid(c)]
    order = [1]
    for level in range(9):  # interleave disc (11 + k) above body (1 + k)
        order += [11 + level, 2 + level]
    heights = []
    for class_id in order:
        _, zs = np.nonzero(plane == class_id)
        if zs.size:
            heights.append(zs.mean())
    assert len(heights) >= 11
    assert np.all(np.diff(heights) > 0), heights


@pytest.mark.parametrize("seed", SEEDS)
def test_lateral_slices_cut_less_of_the_spine(seed: int) -> None:
    c = case(seed)
    counts = (c.label > 0).sum(axis=(1, 2))
    centre = counts[mid(c) - 1 : mid(c) + 1].max()
    assert counts[0] < centre and counts[-1] < centre
    bodies = (c.label >= 2) & (c.label <= 10)
    assert bodies[0].sum() < 0.5 * bodies[mid(c)].sum()
    assert bodies[-1].sum() < 0.5 * bodies[mid(c)].sum()


def test_top_level_varies_between_cases() -> None:
    """The FOV top cuts T8..T11, so the highest labelled vertebra (T11=8..T9=10) varies."""
    tops = set()
    for seed in SEEDS:
        ids = np.unique(case(seed).label)
        vertebrae = ids[(ids >= 2) & (ids <= 10)]
        tops.add(int(vertebrae.max()))
    assert len(tops) >= 2
    assert tops <= {8, 9, 10}


def test_write_dataset_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    pairs = write_dataset(out, cases=3, seed=7, n_slices=6, size=(64, 80))
    assert [p.name for p, _ in pairs] == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta == {
        "generator": "spinebench-phantom",
        "version": PHANTOM_VERSION,
        "cases": 3,
        "seed": 7,
        "class_map": mrspineseg_class_map().to_dict(),
    }
    first = None
    for image_path, label_path in pairs:
        assert image_path.parent == out / "images" and label_path.parent == out / "labels"
        img, lab = nib.load(image_path), nib.load(label_path)
        image, label = np.asanyarray(img.dataobj), np.asanyarray(lab.dataobj)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == label.shape == (6, 64, 80)
        assert img.header.get_qform(coded=True)[1] == 1
        assert img.header.get_sform(coded=True)[1] == 1
        assert np.allclose(img.affine, lab.affine)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        if first is None:
            first = (image, label, img.affine)
    # Same (seed, index) -> same case, whatever the number of cases written.
    again = write_dataset(tmp_path / "again", cases=1, seed=7, n_slices=6, size=(64, 80))
    image = np.asanyarray(nib.load(again[0][0]).dataobj)
    label = np.asanyarray(nib.load(again[0][1]).dataobj)
    assert first is not None
    assert np.array_equal(image, first[0]) and np.array_equal(label, first[1])
    assert again[0][0].read_bytes() == pairs[0][0].read_bytes()


def test_write_dataset_matches_generate_case(tmp_path: Path) -> None:
    from spinebench.data.phantom import case_seed

    pairs = write_dataset(tmp_path, cases=1, seed=2)
    c = generate_case(case_seed(2, 0))
    img = nib.load(pairs[0][0])
    assert np.array_equal(np.asanyarray(img.dataobj), c.image)
    assert np.array_equal(np.asanyarray(nib.load(pairs[0][1]).dataobj), c.label)
    assert np.allclose(img.affine, c.affine)


def test_save_montage_writes_png(tmp_path: Path) -> None:
    path = tmp_path / "montage.png"
    save_montage(path, seed=0, cases=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
