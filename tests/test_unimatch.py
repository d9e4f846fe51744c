"""UniMatch (medical): CutMix boxes and mixing, confidence-masked Dice, the loss weights and the
feature perturbation on hand-made tensors, then one tiny tracked run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from mlflow.tracking import MlflowClient
from spinebench_unimatch.method import UniMatch

from spinebench.config import resolve
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.method import Batch, MethodContext, StepInfo
from spinebench.models.backbone import UNet
from spinebench.semisupervised import (
    UNLABELED_WEIGHT,
    MaskedDice,
    cutmix_box,
    cutmix_boxes,
    masked_cross_entropy,
    mix_partners,
    paste,
    total_loss,
)


def _method(**options) -> UniMatch:
    config = resolve(
        method="unimatch",
        method_options=UniMatch.options,
        method_defaults=UniMatch.default_config("quick"),
        overrides={
            "model.channels": [4, 8],
            "model.dropout": [0.0, 0.0],
            **{f"method.{k}": v for k, v in options.items()},
        },
    )
    ctx = MethodContext(
        class_map=mrspineseg_class_map(), image_size=16, options=config["method"], config=config
    )
    return UniMatch(ctx)


def _batch(unlabeled: bool = True) -> Batch:
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        image=torch.randn(2, 1, 16, 16, generator=g),
        label=torch.randint(20, (2, 16, 16), generator=g),
    )
    if unlabeled:
        weak = torch.randn(3, 1, 16, 16, generator=g)
        batch.unlabeled_weak = weak
        batch.unlabeled_strong = (weak * 1.2, weak * 0.8)
        batch.unlabeled_truth = torch.randint(20, (3, 16, 16), generator=g)
    return batch


def _source_dice(probs: torch.Tensor, labels: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """UniMatch util/utils.py DiceLoss, written out: per class over the kept pixels of the
    whole batch, squared denominators, smooth 1e-5, mean over all classes."""
    keep = ignore != 1
    losses = []
    for c in range(probs.shape[1]):
        score, target = probs[:, c][keep], (labels == c).float()[keep]
        inter = (score * target).sum()
        losses.append(1 - (2 * inter + 1e-5) / ((score**2).sum() + (target**2).sum() + 1e-5))
    return torch.stack(losses).mean()


# -- CutMix -------------------------------------------------------------------------------------
def _bounding_box(box: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def test_cutmix_box_is_one_rectangle_of_the_source_size_inside_the_image():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        box = cutmix_box(64, 48, p=1.0, generator=g)
        y0, y1, x0, x1 = _bounding_box(box)
        assert box.sum() == (y1 - y0) * (x1 - x0), "one filled rectangle"
        assert box[y0:y1, x0:x1].all()
        area = (y1 - y0) * (x1 - x0)
        assert area <= 0.4 * 64 * 48
        # w = int(sqrt(a / r)), h = int(sqrt(a r)) with r in [0.3, 1/0.3]
        aspect = (x1 - x0) / (y1 - y0)
        assert 0.3 * 0.5 < aspect < (1 / 0.3) * 2


def test_cutmix_box_probability():
    g = torch.Generator().manual_seed(1)
    assert not cutmix_box(32, 32, p=0.0, generator=g).any()
    drawn = [bool(cutmix_box(32, 32, p=0.5, generator=g).any()) for _ in range(1000)]
    assert 0.45 < sum(drawn) / len(drawn) < 0.55
    boxes = cutmix_boxes(5, 8, 12, 1.0, torch.device("cpu"), generator=g)
    assert boxes.shape == (5, 8, 12) and boxes.dtype == torch.bool


def test_mix_partners_form_one_cycle_without_fixed_points():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7):
        partner = mix_partners(n, generator=g)
        assert sorted(partner.tolist()) == list(range(n))
        assert all(partner[i] != i for i in range(n))
        seen, i = set(), 0
        while i not in seen:
            seen.add(i)
            i = int(partner[i])
        assert len(seen) == n
    assert mix_partners(1).tolist() == [0]


def test_paste_mixes_images_labels_and_confidences_inside_the_box_only():
    box = torch.zeros(2, 3, 4, dtype=torch.bool)
    box[0, 1:3, 1:3] = True
    base, other = torch.zeros(2, 1, 3, 4), torch.ones(2, 1, 3, 4)
    mixed = paste(base, other, box)
    assert torch.equal(mixed[:, 0], box.float())
    labels = paste(torch.full((2, 3, 4), 5), torch.full((2, 3, 4), 9), box)
    assert labels[0, 1, 1] == 9 and labels[0, 0, 0] == 5 and (labels[1] == 5).all()
    conf = paste(torch.full((2, 3, 4), 0.99), torch.full((2, 3, 4), 0.5), box)
    assert (conf[box] == 0.5).all() and (conf[~box] == 0.99).all()


# -- confidence masking -------------------------------------------------------------------------
def test_masked_dice_equals_the_source_dice_with_ignore():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    labels = torch.randint(4, (2, 5, 6), generator=g)
    keep = torch.rand(2, 5, 6, generator=g) > 0.4
    ours = MaskedDice()(logits, labels, keep)
    torch.testing.assert_close(ours, _source_dice(logits.softmax(1), labels, (~keep).float()))


def test_masked_dice_ignores_what_is_not_kept():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, generator=g)
    labels = torch.randint(3, (1, 4, 4), generator=g)
    keep = torch.zeros(1, 4, 4, dtype=torch.bool)
    keep[:, :2] = True
    dice = MaskedDice()
    changed = logits.clone()
    changed[:, :, 2:] = torch.randn(1, 3, 2, 4, generator=g) * 10
    torch.testing.assert_close(dice(logits, labels, keep), dice(changed, labels, keep))
    assert float(dice(logits, labels, torch.zeros_like(keep))) == pytest.approx(0.0)
    perfect = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 50
    assert float(dice(perfect, labels, keep)) == pytest.approx(0.0, abs=1e-5)


def test_masked_cross_entropy_counts_ignored_pixels_as_zero():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    labels = torch.tensor([[[0, 1]]])
    keep = torch.tensor([[[True, False]]])
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0] / 2
    torch.testing.assert_close(masked_cross_entropy(logits, labels, keep), expected)


# -- loss weighting -----------------------------------------------------------------------------
def test_total_loss_weights():
    terms = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert float(total_loss(*terms)) == pytest.approx((1 + 0.25 * 2 + 0.25 * 3 + 0.5 * 4) / 2)
    assert UNLABELED_WEIGHT == 0.5


def test_step_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    method = _method()
    stage = method.stages()[0]
    assert stage.unlabeled
    out = method.training_step(stage, _batch(), StepInfo(0, 10))
    lx, ls, lfp = out.losses["labeled"], out.losses["strong"], out.losses["feature_perturbed"]
    torch.testing.assert_close(out.losses["loss"], (lx + 0.5 * ls + 0.5 * lfp) / 2)
    assert out.diagnostics["pseudo/consistency_weight"] == 0.5
    assert {"pseudo/confident_fraction", "pseudo/dice"} <= out.diagnostics.keys()


@pytest.mark.parametrize(("threshold", "confident"), [(0.0, 1.0), (1.01, 0.0)])
def test_confidence_threshold_gates_the_unlabeled_losses(threshold, confident):
    torch.manual_seed(0)
    method = _method(conf_thresh=threshold)
    out = method.training_step(method.stages()[0], _batch(), StepInfo(0, 10))
    assert float(out.diagnostics["pseudo/confident_fraction"]) == confident
    unlabeled = float(out.losses["strong"]) + float(out.losses["feature_perturbed"])
    assert (unlabeled > 0) == bool(confident)


def test_without_unlabeled_data_it_trains_supervised_only():
    method = _method().eval()
    batch = _batch(unlabeled=False)
    out = method.training_step(method.stages()[0], batch, StepInfo(0, 10))
    assert set(out.losses) == {"loss"} and not out.diagnostics
    torch.testing.assert_close(
        out.losses["loss"], method.step.supervised(method.net(batch.image), batch.label)
    )


def test_eval_mode_pseudo_labels_keep_the_net_in_training_mode():
    from spinebench.semisupervised.unimatch import _eval_mode_logits

    method = _method()
    method.train()
    _eval_mode_logits(method.net, torch.randn(2, 1, 16, 16))
    assert method.net.training


# -- feature perturbation in the shared backbone ------------------------------------------------
def test_feature_dropout_forward_shares_the_encoder_pass():
    torch.manual_seed(0)
    net = UNet(1, 3, [4, 8, 16], [0.0, 0.0, 0.0]).eval()
    x = torch.randn(2, 1, 16, 16)
    clean, perturbed = net.forward_feature_dropout(x, 0.5)
    torch.testing.assert_close(clean, net(x))
    assert perturbed.shape == clean.shape and not torch.allclose(perturbed, clean)
    clean, unperturbed = net.forward_feature_dropout(x, 0.0)
    torch.testing.assert_close(clean, unperturbed)


def test_paper_profile_uses_the_source_batch():
    paper = UniMatch.default_config("paper")["train"]
    assert (paper["batch_size"], paper["unlabeled_batch_size"]) == (12, 12)
    assert paper["lr"] == 0.01 and paper["poly_power"] == 0.9


# -- end to end ---------------------------------------------------------------------------------
def test_cli_run_finishes_tracked_with_pseudo_diagnostics(isolated_env: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinebench",
            "run",
            "--method",
            "unimatch",
            "--labeled",
            "0.5",
            *TINY,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spinebench/synthetic")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in (
        "pseudo/dice",
        "pseudo/confident_fraction",
        "pseudo/consistency_weight",
        "train/labeled",
        "train/strong",
        "train/feature_perturbed",
        "test/dice",
    ):
        assert key in m, key
    assert 0 <= m["pseudo/dice"] <= 1
