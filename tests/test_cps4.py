"""CPS4: the stage-1 losses and the pseudo-label rules on hand-made tensors, the ablation switches,
the frozen VLM of stage 2, then tiny tracked runs: both stages' metrics, the stage-1 cache."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import mlflow
import pytest
import torch
from conftest import TINY
from mlflow.tracking import MlflowClient
from spinebench_cps4.losses import PixelAttentionLoss, token_attention_loss
from spinebench_cps4.method import CPS4
from spinebench_cps4.pseudo import (
    VlmMaps,
    agreement,
    reliability_weights,
    rule_probabilities,
    similarity_maps,
)

from spinebench.config import resolve
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.engine.run import execute
from spinebench.errors import ConfigError
from spinebench.losses import BinaryMapLoss, SupervisedLoss
from spinebench.method import Batch, MethodContext, StepInfo
from spinebench.models.fusion import binary_targets
from spinebench.models.vlm import PretrainedUnavailable
from spinebench.runinfo import RunRequest

PSEUDO_DIAGNOSTICS = (
    "pseudo/dice_teacher",
    "pseudo/dice_vlm",
    "pseudo/dice_average",
    "pseudo/dice_fused",
)


def _method(profile: str = "quick", **options) -> CPS4:
    config = resolve(
        method="cps4",
        method_options=CPS4.options,
        method_defaults=CPS4.default_config(profile),
        profile=profile,
        overrides={
            "data.image_size": 16,
            "model.channels": [4, 8],
            "model.dropout": [0.0, 0.0],
            **{f"method.{k}": v for k, v in options.items()},
        },
    )
    CPS4.validate_config(config)  # as the engine does when it resolves a run
    ctx = MethodContext(
        class_map=mrspineseg_class_map(), image_size=16, options=config["method"], config=config
    )
    torch.manual_seed(0)
    return CPS4(ctx)


def _batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(2, 16, 16, dtype=torch.long)
    label[:, 2:6, 4:12], label[:, 6:9, 4:12], label[:, 9:14, 4:12] = 4, 13, 3  # L3, L3/L4, L4
    weak = torch.randn(2, 1, 16, 16, generator=g)
    return Batch(
        image=torch.randn(2, 1, 16, 16, generator=g),
        label=label,
        unlabeled_weak=weak,
        unlabeled_strong=(weak + 0.1, weak - 0.1),
        unlabeled_truth=label.clone(),
    )


def _two_regions() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels [1, 8, 8]: class 1 in the top half, class 2 in the bottom half (left columns)."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4], labels[0, 4:, :4] = 1, 2
    return labels, binary_targets(labels, 2)


# -- stage-1 losses -----------------------------------------------------------------------------
def test_token_loss_is_lower_when_attention_falls_on_the_class_region():
    _, targets = _two_regions()
    on_region = 8.0 * torch.nn.functional.avg_pool2d(targets, 2)  # [1, 2, 4, 4] patch grid
    wrong = on_region.flip(1)  # each class attends to the other's region
    right_loss = token_attention_loss(on_region, targets)
    assert right_loss < token_attention_loss(wrong, targets)
    assert right_loss < token_attention_loss(torch.zeros_like(on_region), targets)  # uniform
    assert float(token_attention_loss(1e3 * on_region, targets)) == pytest.approx(0.0, abs=1e-4)


def test_token_loss_skips_absent_classes_and_keeps_the_graph():
    _, targets = _two_regions()
    scores = torch.randn(1, 3, 4, 4, requires_grad=True)
    with_absent = torch.cat((targets, torch.zeros(1, 1, 8, 8)), dim=1)
    torch.testing.assert_close(
        token_attention_loss(scores, with_absent), token_attention_loss(scores[:, :2], targets)
    )
    empty = token_attention_loss(scores, torch.zeros(1, 3, 8, 8))
    empty.backward()
    assert float(empty.detach()) == 0.0 and scores.grad is not None


def test_pixel_loss_with_class_softmax_rises_when_two_class_masks_are_swapped():
    labels, targets = _two_regions()
    similarity = 6.0 * torch.nn.functional.avg_pool2d(targets, 2) - 3.0
    swapped = labels.clone()
    swapped[labels == 1], swapped[labels == 2] = 2, 1
    loss = PixelAttentionLoss(class_softmax=True)
    background = torch.tensor(0.0)
    assert loss(similarity, background, labels) < loss(similarity, background, swapped)


def test_pixel_loss_equations_with_and_without_class_softmax():
    """Scores relative to the background, upsampled: one softmax over [0, z_1..z_K] trained with
    the supervised loss, or K independent sigmoids of z_k trained with BCE + Dice."""
    labels, targets = _two_regions()
    similarity = torch.randn(1, 2, 4, 4)
    background = torch.tensor(0.7)
    z = torch.nn.functional.interpolate(similarity, size=(8, 8), mode="bilinear") - background
    softmax = PixelAttentionLoss(class_softmax=True)(similarity, background, labels)
    scores = torch.cat((torch.zeros(1, 1, 8, 8), z), dim=1)
    torch.testing.assert_close(softmax, SupervisedLoss()(scores, labels))
    independent = PixelAttentionLoss(class_softmax=False)(similarity, background, labels)
    bce, dice = BinaryMapLoss()(z, targets)
    torch.testing.assert_close(independent, 0.5 * (bce + dice))


# -- pseudo labels ------------------------------------------------------------------------------
def _probs(*rows: list[float]) -> torch.Tensor:
    """Pixels given as probability rows -> [1, C, 1, P]."""
    return torch.tensor(rows).T[None, :, None, :]


def _maps(vlm: torch.Tensor, **kw: torch.Tensor) -> VlmMaps:
    return VlmMaps(vlm, **kw)


class _Labels:
    """A rule's probabilities, labels and kept pixels, as a thresholding base takes them."""

    def __init__(self, logits: torch.Tensor, vlm: VlmMaps, rule: str, threshold: float) -> None:
        self.probs = rule_probabilities(logits, vlm, rule)
        confidence, self.labels = self.probs.max(1)
        self.keep = confidence >= threshold
        if rule == "agree":
            self.keep &= agreement(logits, vlm)


combine = _Labels


def _logits(probs: torch.Tensor) -> torch.Tensor:
    """Teacher logits whose softmax is ``probs``."""
    return probs.clamp_min(1e-12).log()


def test_pseudo_label_rules_on_hand_made_probabilities():
    # pixel 0: both sure of class 1; pixel 1: teacher says 2, VLM says 1; pixel 2: both say 0.
    teacher = _probs([0.0, 1.0, 0.0], [0.02, 0.0, 0.98], [0.9, 0.1, 0.0])
    vlm = _maps(_probs([0.0, 0.96, 0.04], [0.0, 0.97, 0.03], [0.99, 0.0, 0.01]))

    t = combine(_logits(teacher), vlm, "teacher", 0.95)
    assert t.labels.flatten().tolist() == [1, 2, 0] and t.keep.flatten().tolist() == [1, 1, 0]
    v = combine(_logits(teacher), vlm, "vlm", 0.95)
    assert v.labels.flatten().tolist() == [1, 1, 0] and v.keep.flatten().tolist() == [1, 1, 1]
    f = combine(_logits(teacher), vlm, "fused", 0.9)
    torch.testing.assert_close(f.probs, (teacher + vlm.probs) / 2)
    # averages: pixel 0 -> 0.98 for 1; pixel 1 -> 0.505 for 2; pixel 2 -> 0.945 for 0
    assert f.labels.flatten().tolist() == [1, 2, 0] and f.keep.flatten().tolist() == [1, 0, 1]
    a = combine(_logits(teacher), vlm, "agree", 0.5)
    assert a.labels.flatten().tolist() == [1, 2, 0]
    assert a.keep.flatten().tolist() == [1, 0, 1]  # pixel 1 passes 0.5 but they disagree
    with pytest.raises(ValueError, match="unknown pseudo-label rule"):
        combine(_logits(teacher), vlm, "mean", 0.5)


def test_similarity_maps_are_min_max_normalised_per_image_and_class_and_nearest_upsampled():
    sim = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]]])  # [1, K=2, 2, 2]
    maps = similarity_maps(sim, (4, 4))
    assert maps.shape == (1, 3, 4, 4)
    assert torch.equal(maps[0, 0], torch.zeros(4, 4))  # no background text: channel 0 is 0
    assert torch.equal(maps[0, 2], torch.zeros(4, 4))  # a constant map carries no information
    expected = torch.tensor([[0.0, 0.5], [0.25, 1.0]])
    torch.testing.assert_close(maps[0, 1], expected.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_logit_sum_adds_the_maps_to_the_teacher_logits():
    """PromptSSL trainer_2d.py 204-208: argmax(teacher logits + M), M in [0, 1]."""
    # pixel 0: confident teacher (class 2 by 5 logits) against the VLM (class 1 map 1):
    # a map of at most 1 cannot override it. pixel 1: wrong, unsure teacher (class 2 by 0.3)
    # and a VLM sure of class 1: the map fixes the label.
    logits = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.3, 0.6]]).T[None, :, None, :]
    similarity = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]).T[None, :, None, :]
    vlm = _maps(torch.full_like(logits, 1 / 3), similarity=similarity)
    out = combine(logits, vlm, "logit_sum", 0.5)
    assert out.labels.flatten().tolist() == [2, 1]
    torch.testing.assert_close(out.probs, (logits + similarity).softmax(1))


def test_reliability_weights_favour_the_vlm_only_where_it_beats_the_teacher():
    w = reliability_weights(torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0.6, 0.3, 0.5]))
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, (0.9 - 0.3) / 0.9, 0.0]))
    assert reliability_weights(torch.zeros(2), torch.zeros(2)).tolist() == [0.0, 0.0, 0.0]


def test_a_vlm_below_the_floor_is_never_trusted_however_poor_the_network():
    # the UniMatch-base collapse: a network at 0 on L3 at its first validation handed the
    # class to a VLM at 0.164; with the floor the VLM keeps only classes it segments well
    vlm, network = torch.tensor([0.164, 0.8, 0.5]), torch.tensor([0.0, 0.2, 0.0])
    assert reliability_weights(vlm, network).tolist()[1] == 1.0
    w = reliability_weights(vlm, network, floor=0.5)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, (0.8 - 0.2) / 0.8, 1.0]))


def test_reliable_rule_with_a_weak_vlm_is_the_teacher_exactly():
    teacher = _probs([0.02, 0.0, 0.98], [0.9, 0.1, 0.0], [0.0, 0.5, 0.5])
    weak = _probs([0.0, 0.97, 0.03], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0])
    weights = reliability_weights(torch.tensor([0.1, 0.2]), torch.tensor([0.6, 0.7]))
    got = combine(_logits(teacher), _maps(weak, weights=weights), "reliable", 0.95)
    ref = combine(_logits(teacher), _maps(weak), "teacher", 0.95)
    assert torch.equal(got.labels, ref.labels) and torch.equal(got.keep, ref.keep)
    assert torch.equal(got.probs, ref.probs)  # bit for bit: no renormalisation rounding


def test_reliable_rule_with_a_perfect_vlm_fixes_a_wrong_teacher():
    # truth: pixel 0 is class 1, pixel 1 background; the teacher is confidently wrong on both.
    teacher = _probs([0.02, 0.0, 0.98], [0.01, 0.0, 0.99])
    perfect = _probs([0.0, 1.0, 0.0], [1.0, 0.0, 0.0])
    weights = reliability_weights(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]))
    got = combine(_logits(teacher), _maps(perfect, weights=weights), "reliable", 0.6)
    assert got.labels.flatten().tolist() == [1, 0]
    assert got.keep.flatten().tolist() == [1, 1]


# -- the method ---------------------------------------------------------------------------------
def test_stages_budgets_prefixes_and_cache_key():
    method = _method(pretrain_iterations=7)
    pretrain, ssl = method.stages()
    assert (pretrain.name, pretrain.iterations, pretrain.prefix) == ("pretrain", 7, "pretrain/")
    assert not pretrain.segments and not pretrain.unlabeled and pretrain.load_from is None
    assert pretrain.optimizer.name == "adamw" and pretrain.optimizer.lr == 1e-3
    budget = method.ctx.config["train"]["iterations"]
    assert (ssl.name, ssl.prefix, ssl.iterations) == ("ssl", "ssl/", budget)
    assert ssl.unlabeled and ssl.segments and ssl.cache_key is None
    assert (
        pretrain.cache_key != _method(pretrain_iterations=7, token_loss=False).stages()[0].cache_key
    )
    assert (
        pretrain.cache_key
        == _method(pretrain_iterations=7, pseudo_label="vlm").stages()[0].cache_key
    )
    source = _method(pretrained_vlm="/some/run.pt").stages()[0]
    assert source.load_from == "/some/run.pt" and source.cache_key is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"seg", "token", "pixel"}),
        ({"token_loss": False}, {"seg", "pixel"}),
        ({"pixel_loss": False}, {"seg", "token"}),
        ({"token_loss": False, "pixel_loss": False}, {"seg"}),
    ],
)
def test_loss_switches_change_what_stage_1_computes(options, expected):
    method = _method(**options)
    out = method.training_step(method.stages()[0], _batch(), StepInfo(0, 10))
    assert set(out.losses) == {"loss", *expected}
    terms = {"seg": 1.0, "token": 1.0, "pixel": 1.0}
    torch.testing.assert_close(
        out.losses["loss"].detach(), sum(terms[k] * out.losses[k] for k in expected)
    )


def test_loss_weights_and_class_softmax_switch():
    batch, step = _batch(), StepInfo(0, 10)
    base = _method()
    ref = base.training_step(base.stages()[0], batch, step).losses
    weighted = _method(w_token=0.5, w_pixel=2.0, w_seg=3.0)
    out = weighted.training_step(weighted.stages()[0], batch, step).losses
    torch.testing.assert_close(
        out["loss"].detach(), 3.0 * ref["seg"] + 0.5 * ref["token"] + 2.0 * ref["pixel"]
    )
    independent = _method(class_softmax=False)
    assert not independent.refiner.pixel_loss.class_softmax
    other = independent.training_step(independent.stages()[0], batch, step).losses
    torch.testing.assert_close(other["token"], ref["token"])
    assert not torch.allclose(other["pixel"], ref["pixel"])


def test_stage_2_freezes_the_vlm_and_trains_the_student_only():
    method = _method()
    pretrain, ssl = method.stages()
    assert {id(p) for p in method.trainable_parameters(pretrain)} == {
        id(p) for p in [*method.refiner.vlm.parameters(), method.refiner.background]
    }
    method.on_stage_start(ssl)
    method.train()
    assert {id(p) for p in method.trainable_parameters(ssl)} == {
        id(p) for p in method.pair.student.parameters()
    }
    assert not any(p.requires_grad for p in method.refiner.vlm.parameters())
    assert not method.refiner.vlm.training and method.pair.student.training
    out = method.training_step(ssl, _batch(), StepInfo(1400, 1500))
    out.losses["loss"].backward()
    assert all(p.grad is None for p in method.refiner.vlm.parameters())
    assert {"supervised", "pseudo", "consistency"} <= set(out.losses)
    assert set(PSEUDO_DIAGNOSTICS) <= set(out.diagnostics)
    method.on_stage_start(pretrain)
    method.train()
    assert method.refiner.vlm.training and all(
        p.requires_grad for p in method.refiner.vlm.parameters()
    )


@pytest.mark.parametrize(
    ("rule", "candidate"), [("teacher", "teacher"), ("vlm", "vlm"), ("fused", "average")]
)
def test_pseudo_label_switch_picks_the_label_that_trains(rule, candidate):
    method = _method(pseudo_label=rule)
    ssl = method.stages()[1]
    method.on_stage_start(ssl)
    method.eval()  # deterministic teacher and student: the diagnostics compare exactly
    out = method.training_step(ssl, _batch(), StepInfo(1400, 1500))
    d = out.diagnostics
    assert float(d["pseudo/dice"]) == float(d[f"pseudo/dice_{candidate}"])
    assert float(d["pseudo/dice_fused"]) == float(d["pseudo/dice"])  # always the rule's label


def test_loss_is_supervised_plus_ramped_pseudo_and_consistency_terms():
    method = _method(w_pseudo=2.0, consistency=0.5, conf_thresh=0.05)
    ssl = method.stages()[1]
    method.on_stage_start(ssl)
    method.eval()
    late = method.training_step(ssl, _batch(), StepInfo(1500, 1500)).losses
    torch.testing.assert_close(
        late["loss"].detach(),
        late["supervised"] + 2.0 * late["pseudo"] + 0.5 * late["consistency"],
    )
    early = method.training_step(ssl, _batch(), StepInfo(10, 1500)).losses
    torch.testing.assert_close(early["loss"].detach(), early["supervised"])


def test_validate_stage_reports_per_class_binary_dice():
    method = _method().eval()
    batch = _batch()
    with torch.no_grad():
        values = method.validate_stage(method.stages()[0], batch.image, batch.label)
    names = mrspineseg_class_map().names
    per_class = [
        f"{kind}/{n}" for kind in ("binary_dice", "binary_overlap", "binary_total") for n in names
    ]
    assert {"binary_dice", "fused_dice", *per_class} == set(values)
    assert all(0.0 <= values[k] <= 1.0 for k in values if "binary_dice" in k or k == "fused_dice")


def test_validation_sets_the_per_class_reliabilities():
    method = _method()
    pretrain, ssl = method.stages()
    names = mrspineseg_class_map().names
    scores = {f"val/pretrain/binary_overlap/{n}": 0.5 for n in names}
    scores |= {f"val/pretrain/binary_total/{n}": 4.0 for n in names}
    scores["val/pretrain/binary_total/L3"] = 0.0  # never present nor predicted
    method.on_validated(pretrain, scores)
    expected = torch.full((19,), 0.25)
    expected[names.index("L3")] = 0.0
    torch.testing.assert_close(method.refiner.vlm_reliability, expected)
    assert torch.equal(method.stage_state_dict(pretrain)["vlm_reliability"], expected)
    assert (
        reliability_weights(
            method.refiner.vlm_reliability, method.refiner.teacher_reliability
        ).sum()
        == 0
    )
    method.on_validated(ssl, {"val/dice": 0.5, "val/dice/L4": 0.8})
    assert float(method.refiner.teacher_reliability[names.index("L4")]) == pytest.approx(0.8)
    assert float(method.refiner.teacher_reliability.sum()) == pytest.approx(
        0.8
    )  # the others: absent


def test_authors_unlabeled_loss_is_plain_cross_entropy_without_ramp_or_threshold():
    method = _method(unlabeled_loss="ce", w_pseudo=1.0, consistency=0.0, pseudo_label="teacher")
    ssl = method.stages()[1]
    method.on_stage_start(ssl)
    method.eval()
    out = method.training_step(ssl, _batch(), StepInfo(10, 1500))  # early: the ramp is 0
    losses = out.losses
    torch.testing.assert_close(losses["loss"].detach(), losses["supervised"] + losses["pseudo"])
    assert float(out.diagnostics["pseudo/confident_fraction"]) == 1.0  # every pixel trains


def test_bad_options_and_states_are_one_line_errors():
    expected = r"'method\.pseudo_label' got 'mean'; use one of reliable"
    with pytest.raises(ConfigError, match=expected):
        _method(pseudo_label="mean")
    with pytest.raises(ConfigError, match=r"cps4\.w_seg must be positive"):
        _method(w_seg=0.0)
    with pytest.raises(ConfigError, match=r"cps4\.vlm_min_reliability is a Dice"):
        _method(vlm_min_reliability=1.5)
    method = _method()
    with pytest.raises(ConfigError, match="does not fit this model"):
        method.load_stage_state_dict(method.stages()[0], {"background": torch.zeros(3)})


def test_paper_profile_asks_for_pretrained_clipseg_and_says_how_to_get_it(monkeypatch, tmp_path):
    # An empty Hugging Face cache: a model in the user's real cache must not change the outcome.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    config = CPS4.default_config("paper")
    assert config["method"]["pretrained"] == "CIDAS/clipseg-rd64-refined"
    assert config["train"]["batch_size"] == 12 and config["train"]["lr"] == 0.01
    with pytest.raises(PretrainedUnavailable, match="hf download CIDAS/clipseg-rd64-refined"):
        _method(profile="paper")


# -- through the engine -------------------------------------------------------------------------
def _run(runs: Path, *extra: str) -> mlflow.entities.Run:
    overrides = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    overrides += ["cps4.pretrain_iterations=4", *extra]
    result = execute(RunRequest(method="cps4", labeled=0.5, overrides=overrides))
    return _client(runs).get_run(result.info.run_id)


def _client(runs: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def test_tracked_runs_log_both_stages_and_reuse_the_cached_vlm(isolated_env: Path):
    # A stage-1 setting no other test uses: this test's first run cannot find a cached VLM.
    first = _run(isolated_env, "cps4.w_token=0.75")
    assert first.info.status == "FINISHED"
    m = first.data.metrics
    for key in (
        "pretrain/loss",
        "pretrain/seg",
        "pretrain/token",
        "pretrain/pixel",
        "val/pretrain/binary_dice",
        "val/pretrain/binary_dice/L3",
        "val/pretrain/fused_dice",
        "ssl/loss",
        "ssl/pseudo",
        "val/dice",
        "test/dice",
        "pseudo/dice",
        "pseudo/confident_fraction",
        *PSEUDO_DIAGNOSTICS,
    ):
        assert key in m, key
    assert all(0.0 <= m[k] <= 1.0 for k in PSEUDO_DIAGNOSTICS)
    assert first.data.tags["spinebench.stage_cache.pretrain"] == "miss"
    stages = _client(isolated_env).list_artifacts(first.info.run_id, "stages")
    assert [Path(a.path).name.startswith("cps4-pretrain-") for a in stages] == [True]

    # Only stage 2 differs: the cached VLM is reused.
    second = _run(isolated_env, "cps4.w_token=0.75", "cps4.pseudo_label=agree")
    assert second.data.tags["spinebench.stage_cache.pretrain"] == "hit"
    assert "pretrain/loss" not in second.data.metrics and "ssl/loss" in second.data.metrics

    ablated = _run(isolated_env, "cps4.w_token=0.75", "cps4.token_loss=false")
    assert ablated.data.tags["spinebench.stage_cache.pretrain"] == "miss"
    assert "pretrain/token" not in ablated.data.metrics and "pretrain/pixel" in ablated.data.metrics

    reused = _run(isolated_env, f"cps4.pretrained_vlm={first.info.run_id}")
    assert reused.data.tags["spinebench.stage_source.pretrain"] == first.info.run_id
    assert "spinebench.stage_cache.pretrain" not in reused.data.tags
    assert "pretrain/loss" not in reused.data.metrics


@pytest.mark.parametrize(
    "overrides",
    [
        {"method.pseudo_label": "logit_sum", "method.unlabeled_loss": "ce"},
        {"method.pseudo_label": "reliable", "method.small": {"patch_size": 4}},
    ],
    ids=["logit_sum-ce", "reliable-patch4"],
)
def test_every_rule_passes_the_conformance_kit(overrides, spinebench_conformance):
    spinebench_conformance(CPS4, overrides=overrides)
