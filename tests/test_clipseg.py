"""The clipseg baseline: its loss on hand-made maps, the pretrained (frozen) path through a model
saved by the test, a tiny tracked run, and the one-line error for a hub id without network."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from spinebench_clipseg.method import ClipSeg, vlm_input_size

from spinebench.config import resolve
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.engine.run import execute
from spinebench.errors import ConfigError
from spinebench.losses import BinaryMapLoss, binary_dice
from spinebench.method import MethodContext, Stage, StepInfo
from spinebench.models import vlm
from spinebench.runinfo import RunRequest
from spinebench.testing import Harness, Report

HUB_ID = "CIDAS/clipseg-rd64-refined"
TINY_RUN = [
    "data.cases=8",
    "data.image_size=32",
    "train.iterations=4",
    "train.val_every=2",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "train.batch_size=2",
    "eval.overlays=0",
    "method.vlm_image_size=32",
]


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and an empty Hugging Face cache, so only what a test saves can load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def _method(image_size: int = 16, **options: object) -> ClipSeg:
    config = resolve(
        method="clipseg",
        method_options=ClipSeg.options,
        method_defaults=ClipSeg.default_config("quick"),
        overrides={"data.image_size": image_size, **{f"method.{k}": v for k, v in options.items()}},
    )
    ClipSeg.validate_config(config)  # as the engine does when it resolves a run
    ctx = MethodContext(
        class_map=mrspineseg_class_map(),
        image_size=image_size,
        options=config["method"],
        config=config,
    )
    torch.manual_seed(0)
    return ClipSeg(ctx)


# -- loss and diagnostics ----------------------------------------------------------------------
def test_loss_on_hand_made_maps() -> None:
    targets = torch.zeros(1, 2, 2, 2)
    targets[0, 0, 0, 0] = 1.0  # class 1 covers one pixel, class 2 is absent
    bce, dice = BinaryMapLoss()(torch.zeros(1, 2, 2, 2), targets)
    # p = 0.5 everywhere: BCE = ln 2. Dice per class 1 - (2 sum(pg) + s) / (sum(p^2) + sum(g^2)
    # + s): class 1 1 - (1 + s)/(1 + 1 + s), class 2 1 - s/(1 + s); the loss is their mean.
    s = 1e-5
    expected = ((1 - (1 + s) / (2 + s)) + (1 - s / (1 + s))) / 2
    assert float(bce) == pytest.approx(math.log(2))
    assert float(dice) == pytest.approx(expected, rel=1e-5)
    perfect = (targets * 2 - 1) * 30
    bce, dice = BinaryMapLoss()(perfect, targets)
    assert float(bce) < 1e-10 and float(dice) == pytest.approx(0.0, abs=1e-5)


def test_binary_dice_by_hand() -> None:
    targets = torch.zeros(2, 3, 2, 2)
    logits = torch.full((2, 3, 2, 2), -5.0)
    targets[0, 0, 0, :] = 1  # class 1: truth 2 pixels in image 0 ...
    logits[0, 0, 0, 0] = 5  # ... one found, and one false pixel in image 1
    logits[1, 0, 1, 1] = 5
    logits[1, 1, 0, 0] = 5  # class 2: predicted only
    dice = binary_dice(logits, targets)  # class 3: absent from both, scores 1
    torch.testing.assert_close(dice, torch.tensor([2 * 1 / (2 + 2), 0.0, 1.0]))


def test_vlm_input_size_is_a_multiple_of_every_patch() -> None:
    assert vlm_input_size(0, 96) == 96
    assert vlm_input_size(0, 80) == 80
    assert vlm_input_size(0, 72) == 80
    assert vlm_input_size(352, 512) == 352
    assert vlm_input_size(100, 512) == 112


def test_predict_resizes_to_and_from_the_vlm_size() -> None:
    method = _method(image_size=40, vlm_image_size=0).eval()  # the VLM runs at 48 px
    assert method.vlm.size == 48
    with torch.no_grad():
        scores = method.predict(torch.randn(2, 1, 40, 40))
    assert scores.shape == (2, 20, 40, 40)
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(2, 40, 40))
    assert method.vlm.model.config.vision_config.patch_size == 8
    assert all(p.requires_grad for p in method.parameters())  # random weights: all trainable


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("frozen", "yes", "'method.frozen' got 'yes'; use one of auto, backbone, none"),
        ("fusion", "softmax", "'method.fusion' got 'softmax'; use one of threshold, clipseg"),
        ("threshold", 1.5, "must be between 0 and 1"),
        ("template", "a spine", "no {name} placeholder"),
        ("small", {"layers": 2}, "unknown small-model keys"),
    ],
)
def test_bad_options_are_one_line_config_errors(option: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")) as e:
        _method(**{option: value})
    assert "\n" not in str(e.value)


# -- the pretrained path -----------------------------------------------------------------------
@pytest.fixture
def saved_clipseg(tmp_path: Path) -> Path:
    """A small CLIPSeg written with save_pretrained, standing in for downloaded weights."""
    torch.manual_seed(1)
    folder = tmp_path / "clipseg-small"
    vlm.build_clipseg(None, image_size=32).save_pretrained(folder)
    return folder


def test_pretrained_folder_passes_the_conformance_kit(
    saved_clipseg: Path, spinebench_conformance: Callable[..., Report]
) -> None:
    spinebench_conformance(ClipSeg, overrides={"method.pretrained": str(saved_clipseg)})


def test_pretrained_backbone_is_frozen_and_the_decoder_trains(
    saved_clipseg: Path, spinebench_harness: Callable[..., Harness]
) -> None:
    harness = spinebench_harness(ClipSeg, overrides={"method.pretrained": str(saved_clipseg)})
    method = harness.build()
    assert method.vlm.backbone_frozen and method.vlm.normalise
    saved = vlm.build_clipseg(str(saved_clipseg), image_size=32)
    for name, value in saved.state_dict().items():  # the weights are the saved ones
        assert torch.equal(method.vlm.model.state_dict()[name], value), name
    clip_before = {k: v.clone() for k, v in method.vlm.model.clip.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in method.vlm.model.decoder.state_dict().items()}
    stage = method.stages()[0]
    trainable = list(method.trainable_parameters(stage))
    assert {id(p) for p in trainable} == {id(p) for p in method.vlm.model.decoder.parameters()}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    streams = harness.streams()
    for it in range(2):
        out = method.training_step(stage, streams.next(False), StepInfo(it, 2))
        optimizer.zero_grad()
        out.losses["loss"].backward()
        assert all(p.grad is None for p in method.vlm.model.clip.parameters())
        optimizer.step()
    for name, value in method.vlm.model.clip.state_dict().items():
        assert torch.equal(value, clip_before[name]), name
    changed = [
        k
        for k, v in method.vlm.model.decoder.state_dict().items()
        if not torch.equal(v, decoder_before[k])
    ]
    assert changed, "the decoder did not train"


def test_unfrozen_pretrained_trains_the_clip_towers(
    saved_clipseg: Path, spinebench_harness: Callable[..., Harness]
) -> None:
    harness = spinebench_harness(
        ClipSeg, overrides={"method.pretrained": str(saved_clipseg), "method.frozen": "none"}
    )
    method = harness.build()
    out = method.training_step(Stage("train", 1), harness.streams().next(False), StepInfo(0, 1))
    out.losses["loss"].backward()
    vision = method.vlm.model.clip.vision_model.encoder.layers[0].self_attn.q_proj.weight
    text = method.vlm.model.clip.text_model.encoder.layers[0].self_attn.q_proj.weight
    assert vision.grad is not None and text.grad is not None


# -- end to end --------------------------------------------------------------------------------
def test_tiny_run_is_tracked_with_binary_dice_diagnostics(isolated_env: Path) -> None:
    result = execute(RunRequest(method="clipseg", labeled=0.5, overrides=TINY_RUN))
    client = MlflowClient(f"sqlite:///{isolated_env / 'mlflow.db'}")
    run = client.get_run(result.info.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in (
        "train/loss",
        "train/bce",
        "train/dice",
        "val/dice",
        "test/dice",
        "clipseg/binary_dice",
        "clipseg/binary_dice/L3",
        "clipseg/binary_dice/L4/L5",
    ):
        assert key in metrics, key
    assert 0 <= metrics["clipseg/binary_dice"] <= 1
    assert 0 <= result.metrics["test/dice"] <= 1


def test_hub_id_without_network_is_one_line_and_no_run(isolated_env: Path, tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    args = ["run", "--method", "clipseg", "--labeled", "0.5"]
    for pair in [*TINY_RUN, f"method.pretrained={HUB_ID}"]:
        args += ["--set", pair]
    proc = subprocess.run(
        [sys.executable, "-m", "spinebench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"hf download {HUB_ID} --local-dir PATH" in lines[0]
    assert "--set method.pretrained=PATH" in lines[0]
    db = isolated_env / "mlflow.db"
    if db.exists():  # the store may exist; it must hold no finished run
        client = MlflowClient(f"sqlite:///{db}")
        experiments = client.search_experiments()
        runs = client.search_runs([e.experiment_id for e in experiments]) if experiments else []
        assert not [r for r in runs if r.info.status == "FINISHED"]


def test_profiles_follow_the_sources() -> None:
    paper = ClipSeg.default_config("paper")
    assert paper["method"] == {"pretrained": HUB_ID, "vlm_image_size": 352}
    assert paper["train"] == {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01}
    assert ClipSeg.default_config("quick")["method"] == {"vlm_image_size": 64}
