"""Fusion of per-class binary maps into one multi-class map, on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from spinebench.models.fusion import binary_targets, fuse_binary_maps, fused_probabilities


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _pixels(*probabilities: tuple[float, ...]) -> torch.Tensor:
    """One image, one row of pixels; pixel ``i`` has class probabilities ``probabilities[i]``."""
    values = [[_logit(p) for p in pixel] for pixel in probabilities]
    return torch.tensor(values).T[None, :, None, :]  # [1, K, 1, W]


def _labels(fused: torch.Tensor) -> list[int]:
    return fused.argmax(dim=1).flatten().tolist()


def test_threshold_rule_picks_background_unless_a_class_is_above() -> None:
    logits = _pixels((0.2, 0.4), (0.8, 0.3), (0.6, 0.9), (0.49, 0.01))
    assert _labels(fuse_binary_maps(logits)) == [0, 1, 2, 0]
    # A stricter threshold sends the 0.6 and 0.8 maxima to background, keeps the 0.9 one.
    assert _labels(fuse_binary_maps(logits, threshold=0.85)) == [0, 0, 2, 0]
    assert _labels(fuse_binary_maps(logits, threshold=0.1)) == [2, 1, 2, 1]


def test_threshold_rule_is_strict_at_the_threshold() -> None:
    logits = torch.zeros(1, 3, 1, 1)  # every sigmoid is exactly 0.5
    assert _labels(fuse_binary_maps(logits, threshold=0.5)) == [0]
    assert _labels(fuse_binary_maps(logits + 1e-3, threshold=0.5)) == [1]


def test_threshold_probabilities_by_hand() -> None:
    # w = [1 - 0.8, 0.8, 0.2] at t = 0.5; at t = 0.25: w_bg = 0.2 * 0.25 / 0.75.
    logits = _pixels((0.8, 0.2))
    torch.testing.assert_close(
        fused_probabilities(logits).flatten(), torch.tensor([0.2, 0.8, 0.2]) / 1.2
    )
    w_bg = 0.2 / 3
    torch.testing.assert_close(
        fused_probabilities(logits, threshold=0.25).flatten(),
        torch.tensor([w_bg, 0.8, 0.2]) / (w_bg + 1.0),
    )


def test_clipseg_rule_by_hand() -> None:
    # background weight 3 * prod(1 - p): (0.6, 0.2) -> 0.96 beats 0.6; (0.9, 0.05) -> 0.285.
    logits = _pixels((0.6, 0.2), (0.9, 0.05))
    assert _labels(fuse_binary_maps(logits, rule="clipseg")) == [0, 1]
    assert _labels(fuse_binary_maps(logits, rule="threshold")) == [1, 1]
    torch.testing.assert_close(
        fused_probabilities(logits, rule="clipseg")[0, :, 0, 0],
        torch.tensor([0.96, 0.6, 0.2]) / 1.76,
    )
    # With scale 1 the first pixel's background weight 0.32 loses to 0.6.
    assert _labels(fuse_binary_maps(logits, rule="clipseg", background_scale=1.0)) == [1, 1]


def test_clipseg_rule_equals_the_repository_arg_max() -> None:
    """CLIPSegMultiLabel: channels start at -10, each adds sigmoid x (3 for background)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7) * 3
    probs = logits.sigmoid()
    background = (1 - probs).prod(dim=1)
    out = torch.full((2, 6, 6, 7), -10.0)
    out[:, 0] += background * 3
    out[:, 1:] += probs
    assert torch.equal(fuse_binary_maps(logits, rule="clipseg").argmax(1), out.argmax(1))


@pytest.mark.parametrize("rule", ["threshold", "clipseg"])
def test_scores_are_log_probabilities_and_stay_finite(rule: str) -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5, 5) * 4
    logits[0, :, 0, 0] = 1e4  # saturated sigmoids
    logits[0, :, 0, 1] = -1e4
    logits[1, 2, 3, 3] = 200.0
    scores = fuse_binary_maps(logits.bfloat16(), rule=rule)
    assert scores.shape == (2, 5, 5, 5) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    probs = fused_probabilities(logits, rule=rule)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 5, 5))
    torch.testing.assert_close(fuse_binary_maps(logits, rule=rule).softmax(dim=1), probs)
    assert torch.equal(probs.argmax(1), fuse_binary_maps(logits, rule=rule).argmax(1))
    assert scores[1, :, 3, 3].argmax() == 3  # class 2 (channel 3) saturated
    assert scores[0, :, 0, 1].argmax() == 0  # nothing present


def test_invalid_arguments() -> None:
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="unknown fusion rule"):
        fuse_binary_maps(logits, rule="softmax")
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        fuse_binary_maps(logits, threshold=1.0)
    with pytest.raises(ValueError, match="background_scale must be positive"):
        fuse_binary_maps(logits, rule="clipseg", background_scale=0.0)
    with pytest.raises(ValueError, match=r"\[B, K, H, W\]"):
        fuse_binary_maps(torch.zeros(2, 3, 3))


def test_binary_targets_drop_background() -> None:
    labels = torch.tensor([[[0, 1], [3, 3]]])
    targets = binary_targets(labels, 3)
    assert targets.shape == (1, 3, 2, 2)
    assert targets[0, 0].tolist() == [[0, 1], [0, 0]]
    assert targets[0, 1].sum() == 0
    assert targets[0, 2].tolist() == [[0, 0], [1, 1]]
