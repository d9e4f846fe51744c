"""BCP: the copy-paste box and both mixes, the region weights of the mixed loss, the
largest-component filter and the EMA on hand-made tensors; then the engine hands pre-training's
best model (not its last) to self-training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import TINY
from spinebench_bcp.method import BCP

from spinebench.engine.run import execute
from spinebench.engine.stages import RunCheckpoints
from spinebench.runinfo import RunRequest
from spinebench.semisupervised import (
    BCPStep,
    CopyPasteLoss,
    copy_paste,
    copy_paste_mask,
    ema_state_update,
    largest_component_per_class,
    region_cross_entropy,
)
from spinebench.semisupervised.bcp import halves


def test_the_box_is_two_thirds_of_the_side_at_a_random_position_inside_the_image():
    torch.manual_seed(0)
    corners = set()
    for _ in range(200):
        mask = copy_paste_mask(30, 24, 2 / 3, torch.device("cpu"))
        inside = (mask == 0).nonzero()
        (y0, x0), (y1, x1) = inside.min(0).values.tolist(), inside.max(0).values.tolist()
        assert (y1 - y0 + 1, x1 - x0 + 1) == (20, 16)  # int(30 * 2/3), int(24 * 2/3)
        assert int((mask == 0).sum()) == 20 * 16 and set(mask.unique().tolist()) == {0.0, 1.0}
        assert 0 <= y0 < 30 - 20 and 0 <= x0 < 24 - 16  # the source's exclusive randint
        corners.add((y0, x0))
    assert len(corners) > 20


def test_both_mixes_are_exactly_the_box_composition_in_both_directions():
    g = torch.Generator().manual_seed(1)
    labeled = torch.randn(4, 1, 12, 12, generator=g)
    unlabeled = torch.randn(4, 1, 12, 12, generator=g) + 10  # tell the sources apart
    mask = torch.ones(12, 12)
    mask[2:10, 3:11] = 0
    mix_unl, mix_l = BCPStep.mixes(labeled, unlabeled, mask)
    img_a, img_b = halves(labeled)
    uimg_a, uimg_b = halves(unlabeled)
    box = mask == 0
    # labeled patch in an unlabeled slice, and unlabeled patch in a labeled slice
    assert torch.equal(mix_unl[..., box], img_a[..., box])
    assert torch.equal(mix_unl[..., ~box], uimg_a[..., ~box])
    assert torch.equal(mix_l[..., box], uimg_b[..., box])
    assert torch.equal(mix_l[..., ~box], img_b[..., ~box])
    assert torch.equal(copy_paste(img_a, img_b, mask), torch.where(box, img_b, img_a))


def _loss_inputs():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 10, 10, generator=g, requires_grad=True)
    outside = torch.randint(5, (2, 10, 10), generator=g)
    inside = torch.randint(5, (2, 10, 10), generator=g)
    mask = torch.ones(10, 10)
    mask[1:7, 2:8] = 0
    return logits, outside, inside, mask


def test_each_region_is_supervised_by_its_own_labels_only():
    logits, outside, inside, mask = _loss_inputs()
    loss = CopyPasteLoss()
    dice, ce = loss(logits, outside, inside, mask, 0.5, 1.0)
    box = (mask == 0).expand_as(outside)
    # labels outside a region never matter to it: change the outside labels inside the box
    outside2 = torch.where(box, (outside + 1) % 5, outside)
    inside2 = torch.where(~box, (inside + 2) % 5, inside)
    dice2, ce2 = loss(logits, outside2, inside2, mask, 0.5, 1.0)
    torch.testing.assert_close((dice, ce), (dice2, ce2))


def test_the_unlabeled_weight_falls_on_the_unlabeled_region_only():
    """In the mix "unlabeled around a labeled patch" the outside is pseudo-labelled: its Dice
    and its CE (a mean over that region's pixels) carry u_weight, the box's carry 1."""
    logits, pseudo, truth, mask = _loss_inputs()
    loss = CopyPasteLoss()
    region_out = mask.expand(2, 10, 10)
    pseudo_ce = region_cross_entropy(logits, pseudo, region_out)
    truth_ce = region_cross_entropy(logits, truth, 1 - region_out)
    manual_ce = F.cross_entropy(logits, pseudo, reduction="none")[region_out.bool()].mean()
    torch.testing.assert_close(pseudo_ce, manual_ce)
    pseudo_dice = loss.dice(logits, pseudo, region_out)
    truth_dice = loss.dice(logits, truth, 1 - region_out)
    for w in (0.0, 0.5, 1.0):
        dice, ce = loss(logits, pseudo, truth, mask, w, 1.0)
        torch.testing.assert_close(dice, w * pseudo_dice + truth_dice)
        torch.testing.assert_close(ce, w * pseudo_ce + truth_ce)


def test_the_selftrain_step_weighs_pseudo_labels_by_half_in_both_mixes():
    torch.manual_seed(3)
    step = BCPStep({"box_fraction": 0.5, "u_weight": 0.5, "largest_component": False}, [])
    logits, outside, inside, mask = _loss_inputs()
    pseudo = type("P", (), {})()
    pseudo.labels = torch.cat((outside, inside))
    pseudo.refined = type("R", (), {"restrict": None})()
    labels = torch.cat((inside, outside))
    dice, ce = step.mixed_loss(logits, logits * 2, labels, pseudo, mask)
    loss = step.loss
    d1, c1 = loss(logits, outside, inside, mask, 0.5, 1.0)  # pseudo outside, truth in the box
    d2, c2 = loss(logits * 2, outside, inside, mask, 1.0, 0.5)  # truth outside, pseudo inside
    torch.testing.assert_close((dice, ce), (d1 + d2, c1 + c2))


def test_largest_component_keeps_the_largest_blob_of_every_class_per_image():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0, 0:2, 0:3] = 1  # 6 pixels
    labels[0, 5:7, 5:6] = 1  # 2 pixels: removed
    labels[0, 4, 0] = 2
    labels[0, 5, 1] = 2  # diagonal neighbour: one 8-connected component of 2
    labels[0, 7, 7] = 2  # single pixel: removed
    labels[1, 6:8, 0:2] = 1  # the other image keeps its own largest blob of class 1
    labels[1, 0, 7] = 1
    out = largest_component_per_class(labels, 3)
    expected = labels.clone()
    expected[0, 5:7, 5:6] = 0
    expected[0, 7, 7] = 0
    expected[1, 0, 7] = 0
    assert torch.equal(out, expected)
    assert torch.equal(
        largest_component_per_class(torch.zeros_like(labels), 3), torch.zeros_like(labels)
    )


def test_ema_blends_every_state_entry_from_the_first_step():
    teacher, student = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.running_mean.fill_(2.0)
    student.num_batches_tracked.fill_(7)
    ema_state_update(teacher, student, 0.99)
    torch.testing.assert_close(teacher.weight, torch.full((2,), 0.99 + 0.03))
    torch.testing.assert_close(teacher.running_mean, torch.full((2,), 0.02))
    assert int(teacher.num_batches_tracked) == 7


def test_selftraining_starts_from_pretrainings_best_model_not_its_last(isolated_env, monkeypatch):
    """Pre-training validates after every step; the student that self-training starts from is
    the one saved as the best, which is not the last one (scores are scripted)."""
    saved: list[dict[str, torch.Tensor]] = []
    started: list[dict[str, torch.Tensor]] = []
    scores = iter([0.1, 0.9, 0.2] + [0.5] * 100)
    original_start = BCP.on_stage_start

    validated: list[dict[str, torch.Tensor]] = []

    def fake_validate(self, method, stage):
        validated.append({k: v.clone() for k, v in method.pair.student.state_dict().items()})
        return {"val/dice": next(scores)}

    def save_best(self, method):
        saved.append({k: v.clone() for k, v in method.pair.student.state_dict().items()})
        original_save(self, method)

    def on_stage_start(self, stage):
        if stage.name == "selftrain":
            started.append({k: v.clone() for k, v in self.pair.student.state_dict().items()})
        original_start(self, stage)

    original_save = RunCheckpoints.save_best
    monkeypatch.setattr("spinebench.engine.run.Engine._validate", fake_validate)
    monkeypatch.setattr(RunCheckpoints, "save_best", save_best)
    monkeypatch.setattr(BCP, "on_stage_start", on_stage_start)
    overrides = [v for k, v in zip(TINY[::2], TINY[1::2], strict=True) if k == "--set"]
    overrides += ["train.iterations=9", "train.val_every=1"]  # 3 pre-training iterations
    execute(RunRequest(method="bcp", labeled=0.5, overrides=overrides))
    assert len(started) == 1
    # scores 0.1, 0.9, 0.2: the second of pre-training's three validations is the best
    for name, value in started[0].items():
        torch.testing.assert_close(value, validated[1][name])
        torch.testing.assert_close(value, saved[1][name])
    last = validated[2]
    assert not all(torch.equal(v, last[k]) for k, v in started[0].items())
