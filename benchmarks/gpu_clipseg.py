"""The GPU benchmark's VLM: CLIPSeg with the published rd64-refined architecture, random weights.

The device reaches no model hub, and speed does not depend on the weights' values, so the
paper profile's ``CIDAS/clipseg-rd64-refined`` is replaced by a model of its architecture saved
to a local folder and loaded through each method's own ``pretrained`` path.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_timing import Variant, autocast, iterations_per_second, peak_memory_mib
from spinebench.data.classmap import ClassMap
from spinebench.engine.prepare import resolve_request
from spinebench.losses import BinaryMapLoss
from spinebench.models import vlm
from spinebench.runinfo import RunRequest

#: CLIPSeg "rd64-refined" (Lüddecke & Ecker, CVPR 2022; https://huggingface.co/CIDAS/clipseg-rd64-refined):
#: transformers' conversion script builds it as ``CLIPSegTextConfig()``,
#: ``CLIPSegVisionConfig(patch_size=16)`` and ``CLIPSegConfig`` defaults with
#: ``use_complex_transposed_convolution=True`` for "refined"
#: (src/transformers/models/clipseg/convert_clipseg_original_pytorch_to_hf.py,
#: ``get_clipseg_config``); the defaults are those of configuration_clipseg.py (CLIP ViT-B/16
#: towers, reduce_dim 64, extract layers 3, 6, 9, 4 decoder heads). Written out here so the
#: figures do not depend on a library's defaults (a test compares them with transformers').
#: Special token ids are left out: they change no shape and no cost.
CLIPSEG_RD64_REFINED: dict[str, Any] = {
    "text_config": {
        "vocab_size": 49408,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 16,
        "hidden_act": "quick_gelu",
    },
    "projection_dim": 512,
    "logit_scale_init_value": 2.6592,
    "extract_layers": [3, 6, 9],
    "reduce_dim": 64,
    "decoder_num_attention_heads": 4,
    "decoder_attention_dropout": 0.0,
    "decoder_hidden_act": "quick_gelu",
    "decoder_intermediate_size": 2048,
    "conditional_layer": 0,
    "use_complex_transposed_convolution": True,
}
#: The checkpoint's input size and pixel statistics (its preprocessor_config.json).
CLIPSEG_SIZE = 352
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
FOLDER_NAME = "clipseg-rd64-refined-random"


def rd64_folder(root: Path, config: dict[str, Any] = CLIPSEG_RD64_REFINED) -> Path:
    """A saved CLIPSeg of ``config``'s architecture with random weights (seed 0), loadable as
    ``<method>.pretrained``; built once under ``root``. Saved without a tokenizer: the methods
    then build CLIP's, which every CLIPSeg checkpoint shares."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    folder = root / FOLDER_NAME
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        model = CLIPSegForImageSegmentation(CLIPSegConfig(**copy.deepcopy(config)))
        vlm.save_vlm(model, None, folder)
        preprocessor = {
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
            "size": {"height": CLIPSEG_SIZE, "width": CLIPSEG_SIZE},
        }
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def vlm_overrides(
    method: str, labeled: float, model: str, vlm_size: int, root: Path
) -> tuple[list[str], str]:
    """``--set`` overrides that swap the paper profile's CLIPSeg hub id for a local model,
    and a note for the row saying which.

    ``model`` is ``rd64`` (:func:`rd64_folder`) or ``small`` (the methods' small random VLM,
    for the CPU rehearsal); ``vlm_size`` (0: the method's own) sets ``vlm_image_size`` where
    the method has that option.
    """
    request = RunRequest(method=method, labeled=labeled, profile="paper", device="cpu")
    options = resolve_request(request).config["method"]
    sets, notes = [], []
    for key, value in options.items():
        if value != vlm.DEFAULT_CLIPSEG:
            continue
        if model == "small":
            sets.append(f"{method}.{key}=null")
            notes.append(f"{key}: small random model instead of {value}")
        else:
            sets.append(f"{method}.{key}={rd64_folder(root)}")
            notes.append(f"{key}: clipseg-rd64-refined architecture, random weights")
    if vlm_size and "vlm_image_size" in options:
        sets.append(f"{method}.vlm_image_size={vlm_size}")
        notes.append(f"vlm_image_size {vlm_size}")
    return sets, "; ".join(notes)


def clipseg_alone(
    class_map: ClassMap,
    folder: Path | None,
    size: int,
    variant: Variant,
    warmup: int,
    steps: int,
    device: torch.device,
) -> dict[str, Any]:
    """CLIPSeg's own training step, outside any method: 2 images x one prompt per class, the
    vision encoder once per image and the decoder once per prompt, CLIP frozen, AdamW on the
    decoder. ``folder`` None: the small random model."""
    from spinebench.models.class_prompts import ClassPromptCLIPSeg

    model = ClassPromptCLIPSeg(
        class_map, pretrained=str(folder) if folder is not None else None, input_size=size
    )
    model.freeze_backbone()
    model = model.to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = BinaryMapLoss()
    images = torch.randn(2, 1, size, size, device=device)
    prompts = len(class_map)
    targets = (torch.rand(2, prompts, size, size, device=device) > 0.9).float()

    def step(i: int) -> None:
        with autocast(device, variant.precision):
            logits = model.binary_logits(images)
        bce, dice = loss_fn(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        (bce + dice).backward()
        opt.step()

    speed = iterations_per_second(step, warmup, steps, device)
    return {
        "it_per_s": speed,
        "peak_gpu_mem_mb": peak_memory_mib(device),
        "prompts": prompts,
        "images": 2,
    }
