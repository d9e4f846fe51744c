"""Vision-language building blocks shared by the ``clipseg`` baseline and ``cps4``.

Models come from a saved folder, a Hugging Face id, or a small random configuration (the default,
so tests and the quick profile run offline on a CPU). A hub id is read from the local Hugging Face
cache only (``local_files_only=True``) unless the caller passes ``allow_download=True``: nothing
is fetched at run time unless the user asks for it. A model that cannot be loaded raises
:class:`PretrainedUnavailable`, whose one-line message says what to download and which option to
set.

What a method author must know about transformers' ``CLIPSegForImageSegmentation``:

- ``model(input_ids=..., pixel_values=..., attention_mask=...)`` pairs image ``i`` with prompt
  ``i``: both batches must have the same length, so B images x K prompts means B*K rows. The
  returned ``logits`` are ``[B*K, H, W]`` (``[H, W]`` is ``grid * patch_size``: the input size
  when it divides by the patch size; images must be square, the decoder assumes a square grid).
  :func:`clipseg_logits` runs the vision encoder once per image and only the light decoder per
  prompt, returning ``[B, K, H, W]``.
- ``forward`` runs the CLIP vision encoder under ``torch.no_grad()`` and, when it computes the
  text embeddings itself, the text encoder too: only the decoder is trained through ``forward``.
  Pass precomputed ``conditional_embeddings`` (``[B*K, projection_dim]``, from
  :func:`clipseg_text_embeddings`) to encode the prompts once, or to fine-tune the text encoder
  by computing them with gradients. :func:`freeze_backbone` marks the CLIP part frozen so
  optimizers and parameter counts agree with what ``forward`` does.
- Position embeddings are interpolated (bicubic) to the input size (``interpolate_pos_encoding``
  defaults to True in CLIPSeg), so pretrained weights (ViT-B/16 at 224 px) run at e.g. 352 px.
  ``CLIPModel`` defaults to False: :func:`clip_patch_embeddings` passes True.
- Pixels: CIDAS CLIPSeg was trained on 352 px inputs normalised with ImageNet's mean/std (its
  preprocessor_config.json), not CLIP's; :func:`pixel_stats` returns what the weights expect.
- Text pooling uses the first end-of-text token; see :mod:`spinebench.models.tokenizer` for why
  the padding token does not matter.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import hf_hub_download
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from spinebench.errors import SpinebenchError

if TYPE_CHECKING:
    from spinebench.data.classmap import ClassMap

DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
DEFAULT_CLIP = "openai/clip-vit-base-patch16"
DEFAULT_TEMPLATE = "a sagittal T2-weighted MR image of the {name}"

SMALL_DEFAULTS: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "heads": 4,
    "text_layers": 2,
    "vision_layers": 4,
    "projection_dim": 64,
    "reduce_dim": 32,
    "decoder_depth": 3,
    "patch_size": 0,  # 0: 16 for images of 128 px and more, else 8
}
"""Sizes of the small random models; ``small`` overrides any of these keys."""

_CLIP_VOCAB_SIZE = 49408
_CLIP_CONTEXT = 77
_BOS_ID, _EOS_ID = 49406, 49407


class PretrainedUnavailable(SpinebenchError):
    """Pretrained weights or tokenizer that cannot be loaded; the message is one line for users."""


def is_local_path(pretrained: str) -> bool:
    """A folder rather than a hub id: it exists, or it is spelled like a path (/, ., ~, \\)."""
    if Path(pretrained).expanduser().exists():
        return True
    return pretrained.startswith(("/", ".", "~")) or "\\" in pretrained or pretrained.count("/") > 1


def unavailable_message(
    pretrained: str,
    what: str,
    flag: str = "method.pretrained",
    allow_download: bool = False,
    error: BaseException | None = None,
) -> str:
    """The one-line explanation :class:`PretrainedUnavailable` carries."""
    if is_local_path(pretrained):
        return (
            f"cannot load the {what} from folder '{pretrained}': it holds no saved model (expected "
            f"the files of save_pretrained or `hf download ID --local-dir {pretrained}`); "
            f"fix --set {flag}=PATH"
        )
    how = "offline" if not allow_download else "from the Hugging Face hub"
    reason = ""
    if allow_download and error is not None:
        first = " ".join(str(error).split()).split(". ")[0][:160]
        reason = f" ({type(error).__name__}: {first})"
    return (
        f"cannot load '{pretrained}' {how}{reason}: download it once with "
        f"`hf download {pretrained} --local-dir PATH` on a machine with network, "
        f"then pass --set {flag}=PATH"
    )


def build_clipseg(
    pretrained: str | None,
    *,
    image_size: int,
    small: dict[str, int] | None = None,
    allow_download: bool = False,
    flag: str = "method.pretrained",
) -> CLIPSegForImageSegmentation:
    """CLIPSeg from a folder or hub id, else a small random one for ``image_size`` inputs.

    Pretrained weights keep their own vision size and patch (CIDAS: ViT-B/16) and
    interpolate position embeddings to ``image_size``, which must divide by the patch size so the
    logits come out at full resolution.
    """
    if pretrained is not None:
        model = _load(CLIPSegForImageSegmentation, "clipseg", pretrained, allow_download, flag)
    else:
        sizes = small_sizes(image_size, small)
        vision_layers = sizes["vision_layers"]
        depth = min(sizes["decoder_depth"], vision_layers)
        # Spread the tapped layers evenly, as CLIPSeg taps 3, 6, 9 of 12.
        extract = [(k + 1) * vision_layers // (depth + 1) for k in range(depth)]
        patch = sizes["patch_size"]
        config = CLIPSegConfig(
            text_config=_text_config(sizes),
            vision_config=_vision_config(sizes, image_size),
            projection_dim=sizes["projection_dim"],
            reduce_dim=sizes["reduce_dim"],
            extract_layers=extract,
            decoder_num_attention_heads=sizes["heads"],
            decoder_intermediate_size=2 * sizes["reduce_dim"],
            # The "complex" upsampler is two x(patch/4) transposed convs: full size only at 16.
            use_complex_transposed_convolution=patch == 16,
        )
        model = CLIPSegForImageSegmentation(config)
        _reset_decoder_projections(model)
    patch = model.config.vision_config.patch_size
    if image_size % patch:
        raise ValueError(f"image_size {image_size} must be a multiple of the patch size {patch}")
    return model


def _reset_decoder_projections(model: CLIPSegForImageSegmentation) -> None:
    """PyTorch's default init for the decoder's FiLM, reduce and transposed-convolution layers.

    transformers initialises them with std ``initializer_factor`` (1.0), which pretrained
    weights overwrite; a random model would start with logits of std ~6, whose saturated
    sigmoids barely train.
    """
    decoder = model.decoder
    layers = [decoder.film_mul, decoder.film_add, *decoder.reduces]
    for module in [*layers, *decoder.transposed_convolution.modules()]:
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            module.reset_parameters()


def build_clip(
    pretrained: str | None,
    *,
    image_size: int,
    small: dict[str, int] | None = None,
    allow_download: bool = False,
    flag: str = "method.pretrained",
) -> CLIPModel:
    """CLIP (text and vision towers with projections) for patch-text similarity maps.

    Same loading rules as :func:`build_clipseg`; the small model has no decoder.
    """
    if pretrained is not None:
        model = _load(CLIPModel, "clip", pretrained, allow_download, flag)
    else:
        sizes = small_sizes(image_size, small)
        config = CLIPConfig(
            text_config=_text_config(sizes),
            vision_config=_vision_config(sizes, image_size),
            projection_dim=sizes["projection_dim"],
        )
        model = CLIPModel(config)
    patch = model.config.vision_config.patch_size
    if image_size % patch:
        raise ValueError(f"image_size {image_size} must be a multiple of the patch size {patch}")
    return model


def class_prompts(class_map: ClassMap, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per foreground class, in class-map order (row k is class ``classes[k]``)."""
    return [template.format(name=c.prompt_name) for c in class_map.classes]


def to_clip_pixels(
    images: torch.Tensor,
    normalise: bool,
    *,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """[B,1,H,W] z-scored grey slices -> [B,3,H,W] CLIP input.

    ``normalise=True`` (pretrained weights) rescales each image min-max to [0, 1], as the slice
    would look rendered as a picture, whatever intensity normalisation the dataset used; then
    applies the per-channel ``mean``/``std`` the weights were trained with (pass
    ``*pixel_stats(model)``: OpenAI CLIP's by default, ImageNet's for CIDAS CLIPSeg). A constant
    image maps to 0 before mean/std. With False (random weights) the z-scored values are kept
    and only repeated to three channels. Differentiable, so it can sit inside a training step.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape [B,1,H,W], got {list(images.shape)}")
    if not normalise:
        return images.expand(-1, 3, -1, -1).contiguous()
    flat = images.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    unit = (images - low) / (high - low).clamp_min(1e-6)
    mean_t = images.new_tensor(list(mean)).view(1, 3, 1, 1)
    std_t = images.new_tensor(list(std)).view(1, 3, 1, 1)
    return (unit.expand(-1, 3, -1, -1) - mean_t) / std_t


def pixel_stats(model: PreTrainedModel) -> tuple[list[float], list[float]]:
    """The image mean/std ``model`` expects, for :func:`to_clip_pixels`.

    The builders copy them from the checkpoint's ``preprocessor_config.json`` into
    ``config.pixel_mean``/``pixel_std`` (so :func:`save_vlm` keeps them): CIDAS CLIPSeg uses
    ImageNet's, OpenAI CLIP its own. Anything else gets OpenAI CLIP's.
    """
    mean = getattr(model.config, "pixel_mean", None) or OPENAI_CLIP_MEAN
    std = getattr(model.config, "pixel_std", None) or OPENAI_CLIP_STD
    return [float(v) for v in mean], [float(v) for v in std]


def save_vlm(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, folder: str | Path
) -> Path:
    """Save weights, config and tokenizer so ``build_*(str(folder))`` reloads them offline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def freeze_backbone(model: CLIPSegForImageSegmentation) -> None:
    """Mark CLIPSeg's CLIP towers frozen: ``forward`` never sends gradients there anyway."""
    model.clip.requires_grad_(False)


def clipseg_text_embeddings(
    model: CLIPSegForImageSegmentation,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """[K, projection_dim] conditional embeddings, one per prompt, with gradients if enabled.

    Compute once (under ``torch.no_grad()``) when the text encoder is frozen.
    """
    return _pooled(model.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def clipseg_logits(
    model: CLIPSegForImageSegmentation,
    pixel_values: torch.Tensor,
    conditional_embeddings: torch.Tensor,
    *,
    vision_grad: bool = False,
) -> torch.Tensor:
    """[B, K, H, W] logits of K prompts on B images, encoding each image once.

    Equals ``model(pixel_values=pixels.repeat_interleave(K, 0), conditional_embeddings=
    emb.repeat(B, 1)).logits.view(B, K, H, W)`` but runs the vision encoder B times, not B*K.
    The vision encoder runs without gradients unless ``vision_grad`` (CLIPSeg keeps it frozen).
    """
    with torch.set_grad_enabled(vision_grad and torch.is_grad_enabled()):
        hidden = model.clip.vision_model(
            pixel_values=pixel_values, output_hidden_states=True, interpolate_pos_encoding=True
        ).hidden_states
    return clipseg_decode(model, hidden, conditional_embeddings)


def clipseg_decode(
    model: CLIPSegForImageSegmentation,
    hidden_states: Sequence[torch.Tensor],
    conditional_embeddings: torch.Tensor,
) -> torch.Tensor:
    """CLIPSeg's decoder on the vision encoder's ``hidden_states`` of B images, once per each
    of the K ``conditional_embeddings``: [B, K, H, W] logits."""
    batch, classes = hidden_states[0].shape[0], conditional_embeddings.shape[0]
    activations = [
        hidden_states[i + 1].repeat_interleave(classes, dim=0) for i in model.extract_layers
    ]
    condition = conditional_embeddings.repeat(batch, 1)
    logits = model.decoder(activations, condition).logits
    return logits.reshape(batch, classes, *logits.shape[-2:])


def clip_text_embeddings(
    model: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[K, projection_dim] projected (not normalised) text embeddings, one per prompt."""
    return _pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def clip_patch_embeddings(model: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """[B, projection_dim, h, w] patch tokens in the joint image-text space (see
    :func:`patch_tokens`). Position embeddings are interpolated to the input size."""
    vision = model.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=True)
    return patch_tokens(model, vision.last_hidden_state)


def patch_tokens(model: CLIPModel | CLIPSegModel, last_hidden_state: torch.Tensor) -> torch.Tensor:
    """[B, projection_dim, h, w] from the vision encoder's last layer [B, 1 + h*w, width].

    The patch tokens go through the same post-layernorm and visual projection CLIP applies to
    its class token, so a dot product with :func:`clip_text_embeddings` gives a
    patch-resolution text similarity map (the grid is square).
    """
    tokens = model.visual_projection(model.vision_model.post_layernorm(last_hidden_state))
    side = math.isqrt(tokens.shape[1] - 1)
    return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


def _pooled(output: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is projected; 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def small_sizes(image_size: int, small: dict[str, int] | None) -> dict[str, int]:
    """The small random model's sizes for ``image_size`` inputs: :data:`SMALL_DEFAULTS` with
    ``small`` over them; a ``ValueError`` names a size that cannot work."""
    unknown = sorted(set(small or {}) - set(SMALL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown small-model keys {unknown}; valid: {sorted(SMALL_DEFAULTS)}")
    sizes = {**SMALL_DEFAULTS, **(small or {})}
    bad = sorted(k for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int))
    if bad or any(v < 0 or (v == 0 and k != "patch_size") for k, v in sizes.items()):
        raise ValueError(f"small-model sizes must be positive integers, got {small}")
    if not sizes["patch_size"]:
        sizes["patch_size"] = 16 if image_size >= 128 else 8
    if sizes["hidden_size"] % sizes["heads"] or sizes["reduce_dim"] % sizes["heads"]:
        raise ValueError("hidden_size and reduce_dim must be multiples of heads")
    if image_size % sizes["patch_size"]:
        raise ValueError(
            f"image size {image_size} must be a multiple of the patch size {sizes['patch_size']}"
        )
    return sizes


def _text_config(sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "vocab_size": _CLIP_VOCAB_SIZE,
        "max_position_embeddings": _CLIP_CONTEXT,
        "hidden_size": sizes["hidden_size"],
        "intermediate_size": sizes["intermediate_size"],
        "num_hidden_layers": sizes["text_layers"],
        "num_attention_heads": sizes["heads"],
        "bos_token_id": _BOS_ID,
        "eos_token_id": _EOS_ID,
        "pad_token_id": _EOS_ID,
    }


def _vision_config(sizes: dict[str, int], image_size: int) -> dict[str, Any]:
    return {
        "image_size": image_size,
        "patch_size": sizes["patch_size"],
        "hidden_size": sizes["hidden_size"],
        "intermediate_size": sizes["intermediate_size"],
        "num_hidden_layers": sizes["vision_layers"],
        "num_attention_heads": sizes["heads"],
    }


def _load(
    cls: type[PreTrainedModel], model_type: str, pretrained: str, allow_download: bool, flag: str
) -> Any:
    """``cls.from_pretrained`` that never downloads unasked and fails with one line."""
    if is_local_path(pretrained):
        folder = Path(pretrained).expanduser()
        config = folder / "config.json"
        if not config.is_file():
            raise PretrainedUnavailable(
                unavailable_message(pretrained, f"{model_type} model", flag)
            )
        found = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        if found != model_type:
            raise PretrainedUnavailable(
                f"folder '{pretrained}' holds a '{found}' model, not '{model_type}'; "
                f"fix --set {flag}=PATH"
            )
        source, local_only = str(folder), True
    else:
        source, local_only = pretrained, not allow_download
    try:
        with warnings.catch_warnings():  # torch's note on the refused pickle's protocol
            warnings.simplefilter("ignore", UserWarning)
            model = cls.from_pretrained(source, local_files_only=local_only)
    except pickle.UnpicklingError:
        raise PretrainedUnavailable(
            f"the {model_type} weights in '{pretrained}' were refused: they are a pickle holding "
            "more than tensors, which could run code; re-save them with save_pretrained "
            f"(safetensors) or download them again, then pass --set {flag}=PATH"
        ) from None
    except (OSError, ValueError) as error:
        raise PretrainedUnavailable(
            unavailable_message(pretrained, f"{model_type} model", flag, allow_download, error)
        ) from None
    if getattr(model.config, "pixel_mean", None) is None:
        stats = _preprocessor_stats(source, local_only)
        if stats is not None:
            model.config.pixel_mean, model.config.pixel_std = stats
    return model


def _preprocessor_stats(source: str, local_only: bool) -> tuple[list[float], list[float]] | None:
    """``image_mean``/``image_std`` of a checkpoint's preprocessor_config.json, if it has one."""
    folder = Path(source)
    if folder.is_dir():
        path: str | Path | None = folder / "preprocessor_config.json"
    else:
        try:
            path = hf_hub_download(source, "preprocessor_config.json", local_files_only=local_only)
        except Exception:  # missing file, offline, no network: fall back to CLIP's statistics
            path = None
    if path is None or not Path(path).is_file():
        return None
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    if "image_mean" not in config or "image_std" not in config:
        return None
    return list(config["image_mean"]), list(config["image_std"])


__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_CLIPSEG",
    "DEFAULT_TEMPLATE",
    "SMALL_DEFAULTS",
    "PretrainedUnavailable",
    "build_clip",
    "build_clipseg",
    "class_prompts",
    "clip_patch_embeddings",
    "clip_text_embeddings",
    "clipseg_decode",
    "clipseg_logits",
    "clipseg_text_embeddings",
    "freeze_backbone",
    "patch_tokens",
    "pixel_stats",
    "save_vlm",
    "small_sizes",
    "to_clip_pixels",
]
