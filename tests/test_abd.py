"""ABD: patches are cut and put back exactly; the displacement moves the chosen patches and
nothing else; the choice is the least confident patch replaced by the other view's most
confident one, or by the KL-closest of its top candidates; the strong view's cutout."""

from __future__ import annotations

import torch

from spinebench.semisupervised import cutout
from spinebench.semisupervised.displacement import (
    Choice,
    choose,
    displace,
    from_patches,
    to_patches,
)


def _views(n: int = 3, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views whose every patch (grid 4, patch 2) holds its own constant value."""
    patch_ids = torch.arange(16).reshape(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
    view1 = torch.stack([patch_ids + 100 * i for i in range(n)])[:, None].float()
    return view1, -view1 - 1


def test_patches_round_trip_in_row_major_grid_order():
    x = torch.randn(2, 3, 8, 8)
    p = to_patches(x, 4)
    assert p.shape == (2, 16, 3, 2, 2)
    torch.testing.assert_close(p[:, 5], x[:, :, 2:4, 2:4])  # row 1, column 1
    torch.testing.assert_close(from_patches(p, 4), x)


def test_displacement_moves_the_chosen_patches_and_nothing_else():
    view1, view2 = _views()
    choice = Choice(
        target1=torch.tensor([0, 7, 15]),
        source_for1=torch.tensor([3, 3, 9]),
        target2=torch.tensor([1, 2, 4]),
        source_for2=torch.tensor([11, 0, 15]),
    )
    moved1, moved2 = displace(view1, view2, choice, 4)
    p1, p2 = to_patches(view1, 4), to_patches(view2, 4)
    m1, m2 = to_patches(moved1, 4), to_patches(moved2, 4)
    for i in range(3):
        for k in range(16):
            expect1 = p2[i, choice.source_for1[i]] if k == choice.target1[i] else p1[i, k]
            expect2 = p1[i, choice.source_for2[i]] if k == choice.target2[i] else p2[i, k]
            assert torch.equal(m1[i, k], expect1) and torch.equal(m2[i, k], expect2)
    assert (moved1 != view1).float().mean() == 1 / 16


def _confidence(low: int, high: int, others: float = 0.5) -> torch.Tensor:
    """A [8, 8] confidence map (grid 4) with one low and one high patch."""
    patch = torch.full((16,), others)
    patch[low], patch[high] = 0.1, 0.9
    return patch.reshape(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)


def test_plain_choice_replaces_the_least_confident_patch_by_the_others_most_confident():
    conf1, conf2 = _confidence(3, 12)[None], _confidence(6, 9)[None]
    logits = torch.zeros(1, 2, 8, 8)
    choice = choose(conf1, conf2, logits, logits, 4, 4, torch.tensor([False]))
    assert (choice.target1.item(), choice.source_for1.item()) == (3, 9)
    assert (choice.target2.item(), choice.source_for2.item()) == (6, 12)


def test_adaptive_choice_takes_the_top_candidate_closest_in_class_distribution():
    # view 1's least confident patch is 3; view 2's top-4 candidates are 9 (most confident),
    # 2, 5 and 8; of them only patch 2 predicts what view 1's patch 3 predicts
    conf1 = _confidence(3, 12)[None]
    patch = torch.full((16,), 0.5)
    patch[9], patch[2], patch[5], patch[8], patch[6] = 0.9, 0.8, 0.7, 0.6, 0.1
    conf2 = patch.reshape(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)[None]
    logits1 = torch.zeros(1, 2, 8, 8)
    logits1[0, 1, 0:2, 6:8] = 5.0  # view 1, patch 3: class 1
    logits2 = torch.zeros(1, 2, 8, 8)
    logits2[0, 1, 0:2, 4:6] = 5.0  # view 2, patch 2: class 1; the other candidates: a tie
    choice = choose(conf1, conf2, logits1, logits2, 4, 4, torch.tensor([True]))
    assert (choice.target1.item(), choice.source_for1.item()) == (3, 2)
    plain = choose(conf1, conf2, logits1, logits2, 4, 4, torch.tensor([False]))
    assert plain.source_for1.item() == 9


def test_cutout_fills_one_box_with_the_image_extremes_and_clears_its_labels():
    torch.manual_seed(0)
    images = torch.linspace(-2, 3, 2 * 32 * 32).reshape(2, 1, 32, 32)
    labels = torch.ones(2, 32, 32, dtype=torch.long)
    out, out_labels = cutout(images, labels, p=1.0)
    assert out_labels is not None
    for i in range(2):
        changed = (out[i, 0] != images[i, 0]) | (out_labels[i] == 0)
        assert changed.any()
        box = out_labels[i] == 0
        assert torch.equal(out[i, 0][~box], images[i, 0][~box])
        values = set(out[i, 0][box].unique().tolist())
        assert values <= {images[i].min().item(), images[i].max().item()}
    same, same_labels = cutout(images, labels, p=0.0)
    assert (
        torch.equal(same, images) and same_labels is not None and torch.equal(same_labels, labels)
    )
