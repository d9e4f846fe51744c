"""Shared semi-supervised pieces on hand-made tensors: strong views drawn on demand, per-image
normalisation, joint or separate student forwards, and the class balance of kept pseudo
labels."""

from __future__ import annotations

import pytest
import torch
from spinebench_mean_teacher.method import MeanTeacher

from spinebench.builtin.supervised import Supervised
from spinebench.config import resolve
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.method import Batch, MethodContext, StepInfo
from spinebench.models.backbone import build_backbone
from spinebench.semisupervised import (
    MEAN_TEACHER_OPTIONS,
    MeanTeacherPair,
    class_balance,
    pseudo_label_diagnostics,
)
from spinebench.semisupervised.diagnostics import classes_per_slice
from spinebench.testing import make_harness


@pytest.mark.parametrize("views", [0, 1, 2])
def test_streams_draw_only_the_strong_views_a_stage_reads(tmp_path, views):
    harness = make_harness(Supervised, tmp_path)
    batch = harness.streams().next(True, views)
    assert batch.unlabeled_strong is not None and len(batch.unlabeled_strong) == views
    for view in batch.unlabeled_strong:
        assert view.shape == batch.unlabeled_weak.shape
        assert not torch.equal(view, batch.unlabeled_weak)


def _net(norm: str) -> torch.nn.Module:
    model = {"backbone": "unet", "channels": [8, 16], "dropout": [0.0, 0.0], "norm": norm}
    torch.manual_seed(0)
    return build_backbone(model, 1, 3).train()


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_per_image_norms_never_mix_the_slices_of_a_batch(norm):
    net = _net(norm)
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(net(x)[:1], net(x[:1]))
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules()) == (norm == "group")


def test_batchnorm_mixes_them():
    net = _net("batch")
    x = torch.randn(4, 1, 16, 16)
    assert not torch.allclose(net(x)[:1], net(x[:1]))


def test_student_logits_joint_and_separate():
    x, u = torch.randn(2, 1, 16, 16), torch.randn(3, 1, 16, 16)
    for norm, same in (("group", True), ("batch", False)):
        pair = MeanTeacherPair(_net(norm), MEAN_TEACHER_OPTIONS)
        joint = pair.student_logits(x, u, joint=True)
        separate = pair.student_logits(x, u, joint=False)
        assert [t.shape[0] for t in joint] == [2, 3]
        assert torch.allclose(joint[0], separate[0], atol=1e-6) == same


def _mean_teacher(forward: str, norm: str) -> MeanTeacher:
    config = resolve(
        method="mean_teacher",
        method_options=MeanTeacher.options,
        method_defaults={},
        overrides={
            "model.channels": [4, 8],
            "model.dropout": [0.0, 0.0],
            "model.norm": norm,
            "train.ssl_forward": forward,
        },
    )
    ctx = MethodContext(mrspineseg_class_map(), 16, config["method"], config)
    torch.manual_seed(0)
    return MeanTeacher(ctx)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_mean_teacher_forward_mode_matters_only_with_batchnorm(norm):
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        image=torch.randn(2, 1, 16, 16, generator=g),
        label=torch.randint(20, (2, 16, 16), generator=g),
        unlabeled_weak=torch.randn(3, 1, 16, 16, generator=g),
    )
    losses = {}
    for forward in ("joint", "separate"):
        method = _mean_teacher(forward, norm)
        torch.manual_seed(1)
        out = method.training_step(method.stages()[0], batch, StepInfo(0, 10))
        losses[forward] = float(out.losses["loss"].detach())
    assert (losses["joint"] == pytest.approx(losses["separate"])) == (norm == "group")


def test_class_balance_shows_a_threshold_that_keeps_only_background():
    labels = torch.tensor([[[0, 0, 0, 0], [1, 1, 2, 2]]])
    keep = torch.tensor([[[1, 1, 1, 0], [0, 0, 0, 1]]], dtype=torch.bool)
    got = {k.split("/")[-1]: float(v) for k, v in class_balance(labels, keep).items()}
    assert got == pytest.approx(
        {
            "foreground_fraction": 0.5,
            "kept_foreground_fraction": 0.25,  # 1 of the 4 kept pixels is foreground
            "kept_fraction_foreground": 0.25,  # 1 of 4 foreground pixels kept
            "kept_fraction_background": 0.75,  # 3 of 4 background pixels kept
        }
    )


def test_class_balance_with_nothing_kept_is_zero_not_nan():
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    got = class_balance(labels, torch.zeros(1, 2, 2, dtype=torch.bool))
    assert all(float(v) == 0.0 for k, v in got.items() if "kept" in k)


def test_classes_per_slice_shows_a_collapse_that_the_foreground_share_hides():
    truth = torch.tensor([[[1, 1, 2, 2], [3, 3, 4, 4]], [[0, 0, 1, 1], [2, 2, 0, 0]]])
    # The same pixels called foreground, all given one class: the collapse ABD shows when its
    # unramped cross Dice meets a weak pre-trained model (README, Results).
    collapsed = (truth > 0).long()
    probs = torch.nn.functional.one_hot(collapsed, 5).permute(0, 3, 1, 2).float()
    got = pseudo_label_diagnostics(probs, truth, threshold=0.0, weight=1.0)
    assert float(got["pseudo/true_classes_per_slice"]) == 3.0  # (4 + 2) / 2
    assert float(got["pseudo/classes_per_slice"]) == 1.0
    assert float(got["pseudo/foreground_fraction"]) == float((truth > 0).float().mean())
    assert float(classes_per_slice(torch.zeros(2, 3, 3, dtype=torch.long), 5)) == 0.0
