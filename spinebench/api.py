"""The public API for plugin authors: everything a method plugin imports comes from here
(as pytest's ``pytest`` over ``_pytest``). The rest of spinebench may move; this stays.

    from spinebench.api import Batch, Method, Stage, StepOutput, build_backbone, hookimpl

The vision-language pieces (``ClassPromptCLIPSeg`` and the ``vlm`` helpers) import
transformers, so they load on first use rather than with this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spinebench import semisupervised
from spinebench.config import deep_merge
from spinebench.data.classmap import ClassMap, SpineClass
from spinebench.data.dataset import CaseRef, Dataset, Volume
from spinebench.errors import ConfigError, DataError, SpinebenchError
from spinebench.hookspecs import MetricFn, Register, hookimpl
from spinebench.losses import BinaryMapLoss, SupervisedLoss, binary_dice
from spinebench.method import (
    Batch,
    Method,
    MethodContext,
    OptimizerSpec,
    Stage,
    StepInfo,
    StepOutput,
    frozen,
)
from spinebench.models.backbone import SegmentationNet, build_backbone
from spinebench.models.fusion import (
    FUSION_RULES,
    binary_targets,
    fuse_binary_maps,
    fused_probabilities,
)

if TYPE_CHECKING:
    from spinebench.models import vlm
    from spinebench.models.class_prompts import ClassPromptCLIPSeg

_LAZY = {
    "ClassPromptCLIPSeg": ("spinebench.models.class_prompts", "ClassPromptCLIPSeg"),
    "vlm": ("spinebench.models.vlm", None),
}


def __getattr__(name: str) -> Any:
    """Load the transformers-based parts when a plugin first asks for them."""
    if name not in _LAZY:
        raise AttributeError(f"module 'spinebench.api' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


__all__ = [
    "FUSION_RULES",
    "Batch",
    "BinaryMapLoss",
    "CaseRef",
    "ClassMap",
    "ClassPromptCLIPSeg",
    "ConfigError",
    "DataError",
    "Dataset",
    "Method",
    "MethodContext",
    "MetricFn",
    "OptimizerSpec",
    "Register",
    "SegmentationNet",
    "SpineClass",
    "SpinebenchError",
    "Stage",
    "StepInfo",
    "StepOutput",
    "SupervisedLoss",
    "Volume",
    "binary_dice",
    "binary_targets",
    "build_backbone",
    "deep_merge",
    "frozen",
    "fuse_binary_maps",
    "fused_probabilities",
    "hookimpl",
    "semisupervised",
    "vlm",
]
