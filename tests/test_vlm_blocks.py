"""The shared CLIP/CLIPSeg blocks: offline tokenizer, small models, loading rules, pixels."""

from __future__ import annotations

import json
from collections.abc import Iterator

import huggingface_hub.constants
import open_clip
import pytest
import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from spinebench.data.classmap import mrspineseg_class_map
from spinebench.models import tokenizer as tokenizer_module
from spinebench.models import vlm
from spinebench.models.tokenizer import (
    BOS_ID,
    CONTEXT_LENGTH,
    EOS_ID,
    build_tokenizer,
    tokenize_prompts,
)

PROMPTS = [
    "a sagittal T2-weighted MR image of the L3 vertebra",
    "L4/L5 intervertebral disc",
    "sacrum",
    "T12/L1  Disc's   edge, 3.5 mm!",
    "spine " * 90,  # longer than 77 tokens: truncated, end token kept
]
HUB_ID = "CIDAS/clipseg-rd64-refined"


def _offline(patch: pytest.MonkeyPatch, root) -> None:
    """No network and no shared caches: the hub is offline, caches live under ``root``."""
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("HF_HOME", str(root / "hf"))
    patch.setenv("SPINEBENCH_CACHE", str(root / "cache"))
    # The env vars are read when huggingface_hub is imported; patch the live values as well,
    # so a model in the user's real Hugging Face cache cannot make a test pass or fail.
    patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root / "hf" / "hub"))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _offline(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with pytest.MonkeyPatch.context() as patch:
        _offline(patch, tmp_path_factory.mktemp("tok"))
        yield build_tokenizer(None)


@pytest.fixture(scope="module")
def clipseg() -> vlm.CLIPSegForImageSegmentation:
    torch.manual_seed(0)
    return vlm.build_clipseg(None, image_size=64).eval()


def test_tokenizer_ids_equal_open_clip(tokenizer) -> None:
    ours = tokenize_prompts(tokenizer, PROMPTS)
    theirs = open_clip.tokenize(PROMPTS)
    assert ours["input_ids"].shape == theirs.shape == (len(PROMPTS), CONTEXT_LENGTH)
    for ids, mask, reference in zip(ours["input_ids"], ours["attention_mask"], theirs, strict=True):
        length = int(mask.sum())
        assert ids[:length].tolist() == reference[:length].tolist()
        assert ids[0] == BOS_ID and ids[length - 1] == EOS_ID
        assert (reference[length:] == 0).all()  # open_clip pads with 0 ...
        assert (ids[length:] == EOS_ID).all()  # ... HF with the end token
    assert int(ours["attention_mask"][-1].sum()) == CONTEXT_LENGTH


def test_offline_tokenizer_writes_no_files(tmp_path) -> None:
    tokenizer_module._offline_clip_tokenizer.cache_clear()  # build it here, not in a fixture
    first = build_tokenizer(None)  # methods build it, and a method never writes files
    assert not (tmp_path / "cache").exists()
    assert build_tokenizer(None) is first


def test_padding_does_not_change_the_text_embedding(tokenizer, clipseg) -> None:
    """CLIP pools at the first end token and is causal: any padding gives the same embedding."""
    fixed = tokenize_prompts(tokenizer, PROMPTS)
    clip = vlm.build_clip(None, image_size=64).eval()
    legacy = vlm.build_clipseg(None, image_size=64).eval()
    legacy.clip.text_model.eos_token_id = 2  # old configs (CIDAS): pools at argmax(input_ids)
    cases = [
        (vlm.clipseg_text_embeddings, clipseg),
        (vlm.clipseg_text_embeddings, legacy),
        (vlm.clip_text_embeddings, clip),
    ]
    for embed, model in cases:
        with torch.no_grad():
            reference = embed(model, fixed["input_ids"], fixed["attention_mask"])
            variants = [
                embed(model, fixed["input_ids"]),  # no attention mask
                embed(model, open_clip.tokenize(PROMPTS)),  # zero padding
                embed(model, **tokenize_prompts(tokenizer, PROMPTS, padding="longest")),
            ]
        assert reference.shape == (len(PROMPTS), model.config.projection_dim)
        for variant in variants:
            torch.testing.assert_close(variant, reference, atol=1e-5, rtol=1e-5)


def test_clipseg_forward_shapes(tokenizer, clipseg) -> None:
    prompts = vlm.class_prompts(mrspineseg_class_map())
    tokens = tokenize_prompts(tokenizer, prompts)
    images = vlm.to_clip_pixels(torch.randn(2, 1, 64, 64), normalise=False)
    batch, classes = 2, len(prompts)
    inputs = {
        "input_ids": tokens["input_ids"].repeat(batch, 1),
        "attention_mask": tokens["attention_mask"].repeat(batch, 1),
        "pixel_values": images.repeat_interleave(classes, dim=0),
    }
    with torch.no_grad():
        out = clipseg(**inputs)  # about 0.03 s on two CPU cores once warm
        embeddings = vlm.clipseg_text_embeddings(clipseg, **tokens)
        logits = vlm.clipseg_logits(clipseg, images, embeddings)
    assert out.logits.shape == (batch * classes, 64, 64)  # image-major: row b*K + k
    assert out.conditional_embeddings.shape == (batch * classes, clipseg.config.projection_dim)
    assert logits.shape == (batch, classes, 64, 64)
    torch.testing.assert_close(logits.reshape(batch * classes, 64, 64), out.logits)


def test_clipseg_trains_only_its_decoder(clipseg) -> None:
    images = torch.randn(2, 3, 64, 64)
    embeddings = torch.randn(3, clipseg.config.projection_dim, requires_grad=True)
    clipseg.zero_grad()
    vlm.clipseg_logits(clipseg, images, embeddings).mean().backward()
    assert all(p.grad is None for p in clipseg.clip.parameters())
    assert all(p.grad is not None for p in clipseg.decoder.parameters())
    assert embeddings.grad is not None  # precomputed text embeddings can still be trained
    clipseg.zero_grad()
    fresh = vlm.build_clipseg(None, image_size=64)
    vlm.freeze_backbone(fresh)
    assert not any(p.requires_grad for p in fresh.clip.parameters())
    assert all(p.requires_grad for p in fresh.decoder.parameters())


def test_save_and_reload_gives_identical_outputs(tmp_path, tokenizer, clipseg) -> None:
    folder = vlm.save_vlm(clipseg, tokenizer, tmp_path / "clipseg")
    loaded = vlm.build_clipseg(str(folder), image_size=64).eval()
    reloaded_tokenizer = build_tokenizer(str(folder))
    tokens = tokenize_prompts(reloaded_tokenizer, PROMPTS[:3])
    assert (
        tokens["input_ids"].tolist()
        == tokenize_prompts(tokenizer, PROMPTS[:3])["input_ids"].tolist()
    )
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = vlm.clipseg_logits(clipseg, images, vlm.clipseg_text_embeddings(clipseg, **tokens))
        after = vlm.clipseg_logits(loaded, images, vlm.clipseg_text_embeddings(loaded, **tokens))
    torch.testing.assert_close(after, before, atol=0, rtol=0)


@pytest.mark.parametrize("allow_download", [False, True])
@pytest.mark.parametrize("build", ["clipseg", "clip", "tokenizer"])
def test_hub_id_offline_raises_one_line(build: str, allow_download: bool) -> None:
    builders = {
        "clipseg": lambda **kw: vlm.build_clipseg(HUB_ID, image_size=64, **kw),
        "clip": lambda **kw: vlm.build_clip(HUB_ID, image_size=64, **kw),
        "tokenizer": lambda **kw: build_tokenizer(HUB_ID, **kw),
    }
    with pytest.raises(vlm.PretrainedUnavailable) as raised:
        builders[build](allow_download=allow_download)
    message = str(raised.value)
    assert "\n" not in message
    assert HUB_ID in message and "--set method.pretrained=PATH" in message
    assert f"hf download {HUB_ID} --local-dir PATH" in message


def test_bad_folders_raise_one_line(tmp_path, tokenizer) -> None:
    with pytest.raises(vlm.PretrainedUnavailable, match="holds no saved model"):
        vlm.build_clipseg(str(tmp_path / "missing"), image_size=64, flag="method.weights")
    clip_folder = vlm.save_vlm(vlm.build_clip(None, image_size=64), None, tmp_path / "clip")
    with pytest.raises(vlm.PretrainedUnavailable, match="holds a 'clip' model, not 'clipseg'"):
        vlm.build_clipseg(str(clip_folder), image_size=64)
    # Weights saved without a tokenizer: every CLIP checkpoint shares the vocabulary.
    assert build_tokenizer(str(clip_folder))("sacrum").input_ids == tokenizer("sacrum").input_ids


def test_small_config_validation() -> None:
    with pytest.raises(ValueError, match="valid:"):
        vlm.build_clipseg(None, image_size=64, small={"layers": 2})
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vlm.build_clipseg(None, image_size=60)
    model = vlm.build_clipseg(None, image_size=128, small={"vision_layers": 2})
    assert model.config.vision_config.patch_size == 16
    assert model.config.extract_layers == [0, 1]


def test_clip_patch_embeddings_match_text_space(tokenizer) -> None:
    clip = vlm.build_clip(None, image_size=64).eval()
    with torch.no_grad():
        patches = vlm.clip_patch_embeddings(clip, torch.randn(2, 3, 64, 64))
        text = vlm.clip_text_embeddings(clip, **tokenize_prompts(tokenizer, PROMPTS[:3]))
        larger = vlm.clip_patch_embeddings(clip, torch.randn(1, 3, 96, 96))  # interpolated
    assert patches.shape == (2, clip.config.projection_dim, 8, 8)
    assert larger.shape == (1, clip.config.projection_dim, 12, 12)
    assert torch.einsum("bdhw,kd->bkhw", patches, text).shape == (2, 3, 8, 8)


def test_class_prompts_follow_the_class_map() -> None:
    prompts = vlm.class_prompts(mrspineseg_class_map())
    assert len(prompts) == 19
    assert prompts[0] == "a sagittal T2-weighted MR image of the sacrum"
    assert prompts[3] == "a sagittal T2-weighted MR image of the L3 vertebra"
    assert prompts[11] == "a sagittal T2-weighted MR image of the L4/L5 intervertebral disc"
    assert vlm.class_prompts(mrspineseg_class_map(), "{name}")[1] == "L5 vertebra"


def test_to_clip_pixels() -> None:
    images = torch.randn(3, 1, 16, 20) * 2 + 1
    images[2] = 0.7  # constant slice: no NaN
    raw = vlm.to_clip_pixels(images, normalise=False)
    assert raw.shape == (3, 3, 16, 20)
    assert torch.equal(raw[:, 0], images[:, 0]) and torch.equal(raw[:, 2], images[:, 0])
    pixels = vlm.to_clip_pixels(images, normalise=True)
    assert pixels.shape == (3, 3, 16, 20) and torch.isfinite(pixels).all()
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    unit = pixels * std + mean  # back to [0, 1], identical in the three channels
    torch.testing.assert_close(unit[:, 0], unit[:, 1])
    for index in range(2):
        assert unit[index].min().item() == pytest.approx(0, abs=1e-5)
        assert unit[index].max().item() == pytest.approx(1, abs=1e-5)
    assert unit[2].abs().max().item() == pytest.approx(0, abs=1e-5)
    with pytest.raises(ValueError, match=r"\[B,1,H,W\]"):
        vlm.to_clip_pixels(torch.zeros(2, 3, 8, 8), normalise=True)


def test_pixel_stats_follow_the_checkpoint(tmp_path, clipseg) -> None:
    assert vlm.pixel_stats(clipseg) == (list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD))
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    folder = vlm.save_vlm(clipseg, None, tmp_path / "cidas-like")
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": imagenet[0], "image_std": imagenet[1]})
    )
    loaded = vlm.build_clipseg(str(folder), image_size=64)
    assert vlm.pixel_stats(loaded) == imagenet
    # A fine-tuned copy saved without the preprocessor file keeps them in its config.
    again = vlm.build_clipseg(str(vlm.save_vlm(loaded, None, tmp_path / "tuned")), image_size=64)
    assert vlm.pixel_stats(again) == imagenet
    images = torch.randn(1, 1, 8, 8)
    pixels = vlm.to_clip_pixels(images, True, mean=imagenet[0], std=imagenet[1])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in imagenet)
    unit = pixels * std + mean
    assert unit.min().item() == pytest.approx(0, abs=1e-5)
    assert unit.max().item() == pytest.approx(1, abs=1e-5)
