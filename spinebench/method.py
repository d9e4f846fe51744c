"""The method API: what a segmentation method implements and what the engine gives it.

A method owns only its math. The engine owns the loop (device, precision, optimiser and
schedule, iterations, validation, checkpoints, resume, progress, tracking); it hands the method
batches and asks for losses. A method is a ``torch.nn.Module`` so its parameters, buffers (EMA
teachers, frozen VLMs) and ``state_dict`` travel with it; it must create every parameter in
``__init__`` because the engine builds the optimiser and loads checkpoints right after.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from spinebench.data.classmap import ClassMap


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimiser and poly schedule for one stage; ``None`` fields fall back to ``train.*``."""

    name: str | None = None  # "sgd" | "adamw"
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    poly_power: float | None = None


@dataclass(frozen=True)
class Stage:
    """One training stage, run by the engine with its own budget, progress bar and checkpoint.

    ``segments``: after this stage ``predict`` is meaningful, so the engine validates with val
    Dice and keeps the best state. A non-segmenting stage (e.g. VLM pretraining) is validated
    through :meth:`Method.validate_stage` instead. ``cache_key``: when set, the engine caches the
    method's state after the stage under a hash of this key and the split, and later runs with
    the same key load it and skip the stage. ``load_from``: a stage state file (``.pt``) or the
    id of a tracked run that cached this stage; the engine loads it and skips the stage.
    ``strong_views``: how many strong views of the unlabeled slices the stage's steps read
    (``Batch.unlabeled_strong``); the engine draws only those, since each costs a pass of
    photometric augmentation per step; ``labeled_strong_views`` (0 or 1): a strong view of the
    labeled slices too (``Batch.image_strong``, ABD's second student). ``restore_best``: a
    segmenting stage whose best-validation state (not its last) is what the next stage starts
    from, as BCP's self-training starts from its pre-training's best model; the engine loads it
    when the stage ends, before caching it. Every segmenting stage keeps its own best; the run
    is tested with the best of its last stage (and, as ``test_last/*``, with the state it ends
    in). ``seed_index``: the position whose seed the stage starts from (its global RNG and its
    data streams; default: its own position). A method that puts an optional stage before
    another's (cps4's refiner before its base's stages) gives the others the positions they
    have without it, so their batches, augmentations and dropout masks stay those of the
    plain method and a paired comparison differs only by what the optional stage changes.
    """

    name: str
    iterations: int
    prefix: str = "train/"
    unlabeled: bool = False
    strong_views: int = 2
    labeled_strong_views: int = 0
    segments: bool = True
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    cache_key: dict[str, Any] | None = None
    load_from: str | None = None
    restore_best: bool = False
    seed_index: int | None = None


def seed_positions(stages: list[Stage]) -> list[int]:
    """The position each stage's seed comes from (:attr:`Stage.seed_index`, else its own)."""
    return [i if s.seed_index is None else s.seed_index for i, s in enumerate(stages)]


@dataclass(frozen=True)
class StepInfo:
    """Where training is: ``iteration`` counts from 0 within the stage."""

    iteration: int
    total: int

    @property
    def fraction(self) -> float:
        return self.iteration / max(self.total, 1)


@dataclass
class Batch:
    """One training step's data, already on the method's device.

    ``image``/``label``: labeled slices [B,1,H,W] float and [B,H,W] int64 (weakly augmented).
    ``image_strong``: a strong view of ``image`` when the stage asks for one.
    ``unlabeled_weak``: unlabeled slices under the same kind of weak augmentation.
    ``unlabeled_strong``: ``Stage.strong_views`` strong views of the same slices (photometric:
    brightness, contrast, blur), pixel-aligned with ``unlabeled_weak``. ``unlabeled_truth``: the
    hidden labels of the unlabeled slices where the dataset has them — for diagnostics only
    (``pseudo/dice``); a method that trains on it is invalid.
    """

    image: torch.Tensor
    label: torch.Tensor
    unlabeled_weak: torch.Tensor | None = None
    unlabeled_strong: tuple[torch.Tensor, ...] | None = None
    unlabeled_truth: torch.Tensor | None = None
    image_strong: torch.Tensor | None = None


@dataclass
class StepOutput:
    """``losses["loss"]`` is optimised; every entry is logged as ``<prefix><name>``.

    ``diagnostics`` are logged under their own names (e.g. ``pseudo/dice``), never optimised.
    Values may be tensors: the engine converts them only at logging steps, so returning
    tensors costs no device sync.
    """

    losses: dict[str, torch.Tensor]
    diagnostics: dict[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodContext:
    """Everything a method may know about the run: no paths, no tracker, no device choice."""

    class_map: ClassMap
    image_size: int
    options: dict[str, Any]
    config: dict[str, Any]
    in_channels: int = 1

    @property
    def num_classes(self) -> int:
        return self.class_map.num_classes


class Method(nn.Module):
    """Base class of every segmentation method (see docs/writing-a-method-plugin.md)."""

    #: Options a user may set as ``method.<name>`` with their defaults; types are enforced. A
    #: tuple declares the allowed values, the first being the default: the config resolver
    #: refuses any other value and lists these (``"rule": ("fused", "teacher")``).
    options: ClassVar[dict[str, Any]] = {}
    #: One line for ``spinebench list methods``: what the method is, with its source.
    description: ClassVar[str] = ""
    #: Options added after runs of the method were recorded, each with the value under which
    #: those runs behaved (the value that keeps the old behaviour). The leaderboard reads a
    #: record that lacks such an option as having that value, so adding an option does not
    #: move every earlier run of the method's defaults into the studies.
    options_added: ClassVar[dict[str, Any]] = {}
    #: The option that names another method whose training procedure a setting of this one
    #: runs (cps4's ``base``). A study that sets it to another method is also compared, case
    #: by case, with that method's main row: the question such a setting asks ("does my
    #: refiner help that method?") is against the base, not against this method's defaults.
    base_option: ClassVar[str | None] = None

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__()
        self.ctx = ctx

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        """Overrides of the engine's config for this method and profile (e.g. ``train.lr``)."""
        return {}

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        """Refuse values the types and declared choices allow but the method cannot use
        (ranges, combinations) with a one-line :class:`~spinebench.errors.ConfigError`.

        Called when the run's config is resolved, before any data is read or file written.
        """

    def stages(self) -> list[Stage]:
        """The stages in order; the default is one supervised stage of ``train.iterations``."""
        return [Stage(name="train", iterations=int(self.ctx.config["train"]["iterations"]))]

    def trainable_parameters(self, stage: Stage) -> Iterator[nn.Parameter]:
        """Parameters the stage's optimiser updates (frozen parts and EMA teachers excluded)."""
        return (p for p in self.parameters() if p.requires_grad)

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        """Compute the losses for one step; the engine back-propagates ``losses["loss"]``."""
        raise NotImplementedError

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        """Hook after each optimiser step (EMA teacher updates)."""

    def on_stage_start(self, stage: Stage) -> None:
        """Hook before a stage trains (freeze a pretrained part, copy student to teacher).

        Also called when a run resumes inside the stage, before the checkpointed state is loaded
        again, so settings that ``state_dict`` does not hold (``requires_grad``) are restored.
        """

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes, H, W] for images [B, 1, H, W]; called under ``no_grad``."""
        raise NotImplementedError

    def on_validated(self, stage: Stage, scores: dict[str, float]) -> None:
        """Hook after each validation of ``stage``, with the numbers the engine logs
        (``val/dice`` and ``val/dice/<class>``, or ``val/<prefix><name>`` of
        :meth:`validate_stage`), on every rank of a distributed run.

        A method may keep numbers measured on the validation split in buffers (CPS4 weighs its
        VLM per class by them); it must not change parameters here.
        """

    def validate_stage(
        self, stage: Stage, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """Validation numbers for a non-segmenting stage, on a batch of val slices.

        Returned values are averaged over val batches and logged as ``val/<prefix><name>``.
        """
        return {}

    def stage_state_dict(self, stage: Stage) -> dict[str, Any]:
        """What a cached stage keeps (default: the whole state)."""
        return self.state_dict()

    def load_stage_state_dict(self, stage: Stage, state: dict[str, Any]) -> None:
        """Restore what :meth:`stage_state_dict` returned."""
        self.load_state_dict(state)


def frozen(params: Iterable[nn.Parameter]) -> None:
    """Stop gradients to ``params`` (pretrained backbones, teachers)."""
    for p in params:
        p.requires_grad_(False)
