"""CPS4: class-prompt-driven semi-supervised spine segmentation.

A class-prompt VLM (``refiner.py``: its own stage, class-specific pretraining on the labeled
slices) refines the pseudo labels of a semi-supervised base (``cps4.base``): ``cps4``, the
paper's stage 2 (a Mean Teacher student whose pseudo labels combine the teacher's prediction
with the VLM's class maps, ``ssl``), or the core's UniMatch, BCP or ABD steps at the one place
they make pseudo labels. ``cps4.refiner=none`` builds no VLM: the run is then exactly the base's
own run. README.md gives the equations and every interpretation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.api import (
    FUSION_RULES,
    Batch,
    ConfigError,
    Method,
    MethodContext,
    OptimizerSpec,
    Stage,
    StepInfo,
    StepOutput,
    SupervisedLoss,
    build_backbone,
    deep_merge,
    semisupervised,
    vlm,
)

from .pseudo import PSEUDO_LABEL_RULES
from .refiner import ClassPromptRefiner

PRETRAIN, SSL = "pretrain", "ssl"
#: The VLM's stage under a base that has a ``pretrain`` stage of its own (BCP, ABD).
VLM_STAGE = "vlm"
BASES = ("cps4", "unimatch", "bcp", "abd")
REFINERS = ("vlm", "none")
UNLABELED_LOSSES = ("masked", "ce")
#: Bump when a base's pre-training (BCP, ABD) computation or cached state changes.
BASE_PRETRAIN_VERSION = 1
#: Options of the bases run from the core (each as its own method sets it).
_BASE_OPTIONS = {
    k: v
    for k, v in {**semisupervised.UNIMATCH_OPTIONS, **semisupervised.ABD_OPTIONS}.items()
    if k not in semisupervised.MEAN_TEACHER_OPTIONS and k != "conf_thresh"
}


class CPS4(Method):
    description = "CPS4 (2026): class-prompt VLM pretraining refining an SSL base's pseudo labels"
    options: ClassVar[dict[str, Any]] = {
        "base": BASES,
        "refiner": REFINERS,
        # stage 1: the vision-language model
        "pretrained": None,
        "allow_download": False,
        "small": {},
        "template": vlm.DEFAULT_TEMPLATE,
        "pretrain_iterations": 500,
        "pretrain_lr": 1e-3,
        "token_loss": True,
        "pixel_loss": True,
        "class_softmax": True,
        "w_token": 1.0,
        "w_pixel": 1.0,
        "w_seg": 1.0,
        "pretrained_vlm": "",
        # the refiner's rule
        "fusion": FUSION_RULES,
        "pseudo_label": PSEUDO_LABEL_RULES,
        "vlm_min_reliability": 0.0,
        # base cps4: pseudo labels and the Mean Teacher around them
        "unlabeled_loss": UNLABELED_LOSSES,
        "w_pseudo": 1.0,
        **semisupervised.MEAN_TEACHER_OPTIONS,
        "conf_thresh": 0.95,
        # bases unimatch, bcp, abd (ema_decay and conf_thresh are shared)
        **_BASE_OPTIONS,
    }

    #: the runs recorded before it trusted the VLM on any class it beat the network on
    options_added: ClassVar[dict[str, Any]] = {"vlm_min_reliability": 0.0}
    #: a study on another base is compared with that base's own row
    base_option: ClassVar[str | None] = "base"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.opts = opts = ctx.options
        self.base = opts["base"]
        has_pretrain = self.base in ("bcp", "abd")
        # On the other bases the VLM draws its initial weights from a fork of the random
        # state, so the base's networks start from the weights of the base's own run (on base
        # cps4 it draws first, as the published runs did).
        with torch.random.fork_rng(devices=[], enabled=self.base != "cps4"):
            self.refiner = (
                ClassPromptRefiner(ctx, VLM_STAGE if has_pretrain else PRETRAIN)
                if opts["refiner"] == "vlm"
                else None
            )
        names = semisupervised.label_names(ctx.class_map)
        net = build_backbone(ctx.config["model"], ctx.in_channels, ctx.num_classes)
        if self.base == "cps4":
            self.pair = semisupervised.MeanTeacherPair(net, opts)
            self.supervised = SupervisedLoss()
            self.masked_dice = semisupervised.MaskedDice()
        elif self.base == "unimatch":
            self.net = net
            joint = ctx.config["train"]["ssl_forward"] == "joint"
            self.unimatch = semisupervised.UniMatchStep(opts, joint, names)
        else:
            self.bcp_pair = semisupervised.StudentTeacher(net, float(opts["ema_decay"]))
            if self.base == "abd":
                self.student2 = copy.deepcopy(net)
                self.abd = semisupervised.ABDStep(opts, names)
            self.bcp = semisupervised.BCPStep(opts, names)
        self.class_names = names

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        """One-line errors for option values the types alone do not rule out."""
        opts = config["method"]
        if opts["pretrain_iterations"] < 1:
            raise ConfigError("cps4.pretrain_iterations must be at least 1")
        if opts["w_seg"] <= 0:
            raise ConfigError(
                "cps4.w_seg must be positive: the decoder it trains gives the VLM's class maps"
            )
        negative = [k for k in ("w_token", "w_pixel", "w_pseudo", "consistency") if opts[k] < 0]
        if negative:
            raise ConfigError(f"cps4.{negative[0]} must not be negative")
        if not 0 <= opts["vlm_min_reliability"] <= 1:
            raise ConfigError(
                "cps4.vlm_min_reliability is a Dice: set it in [0, 1] (0 trusts the VLM on any "
                "class it segments better than the network)"
            )
        if not 0 < opts["conf_thresh"] <= 1:
            raise ConfigError("cps4.conf_thresh must be in (0, 1]")
        if "{name}" not in opts["template"]:
            raise ConfigError(
                f"cps4.template {opts['template']!r} has no {{name}} placeholder for the class name"
            )
        if opts["refiner"] == "vlm" and not opts["pretrained"]:
            try:
                vlm.small_sizes(int(config["data"]["image_size"]), dict(opts["small"]))
            except ValueError as exc:
                raise ConfigError(f"cps4.small: {exc}") from None
        if opts["base"] in ("bcp", "abd"):
            semisupervised.check_copy_paste_config(config, "cps4")
        if opts["base"] == "abd":
            semisupervised.check_displacement_config(config, "cps4")

    @classmethod
    def default_config(cls, profile: str) -> dict[str, Any]:
        """Mean Teacher's optimiser, batches and stage-2 budget; the paper profile fine-tunes
        pretrained CLIPSeg (CLIP ViT-B/16) in stage 1. On bases bcp and abd the quick profile
        splits the budget as those methods do."""
        if profile != "paper":  # bases bcp/abd: the quick profile's split of the budget
            return {"method": dict(semisupervised.QUICK_BUDGET)}
        return deep_merge(
            {"train": dict(semisupervised.SOURCE_TRAIN)},
            {
                "method": {
                    "pretrained": vlm.DEFAULT_CLIPSEG,
                    "pretrain_iterations": 20000,
                    "pretrain_lr": 1e-4,
                }
            },
        )

    # -- stages ---------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        """The refiner's stage, then the base's; on bases other than cps4 each base stage
        keeps the seed of its position in the base's own run (``Stage.seed_index``)."""
        config = self.ctx.config
        own = [self.refiner.stage()] if self.refiner is not None else []
        if self.base == "cps4":
            ssl = Stage(
                name=SSL,
                iterations=int(config["train"]["iterations"]),
                prefix=f"{SSL}/",
                unlabeled=True,
                strong_views=1,
            )
            return [*own, ssl]
        if self.base == "unimatch":
            return _base_seeds(own, [semisupervised.unimatch_stage(config)])
        vlm_key = self.refiner.stage().cache_key if self.refiner is not None else None
        key = semisupervised.pretrain_cache_key(
            config,
            BASE_PRETRAIN_VERSION,
            {
                "refiner": self.opts["refiner"],
                "vlm": vlm_key,
                "vlm_from": self.opts["pretrained_vlm"],
            },
        )
        base = semisupervised.bcp_stages(config, key, strong=self.base == "abd")
        if config["run"]["profile"] == "paper":  # BCP's and ABD's constant learning rate
            base = [_constant_rate(s) for s in base]
        return _base_seeds(own, base)

    def _refiner_stage(self, stage: Stage) -> bool:
        return self.refiner is not None and stage.name == self.refiner.stage_name

    def _students(self) -> list[nn.Module]:
        if self.base == "cps4":
            return [self.pair.student]
        if self.base == "unimatch":
            return [self.net]
        students: list[nn.Module] = [self.bcp_pair.student]
        return [*students, self.student2] if self.base == "abd" else students

    def trainable_parameters(self, stage: Stage) -> Iterator[nn.Parameter]:
        if self._refiner_stage(stage):
            assert self.refiner is not None
            yield from self.refiner.trainable()
            return
        students = self._students()
        if stage.name == semisupervised.PRETRAIN and self.base in ("bcp", "abd"):
            students = students[:1]
        for student in students:
            yield from student.parameters()

    def on_stage_start(self, stage: Stage) -> None:
        """The VLM trains in its stage and is frozen (and kept in eval mode) after it; BCP's and
        ABD's self-training start their teacher and students from pre-training's best."""
        if self.refiner is not None:
            self.refiner.set_trainable(self._refiner_stage(stage))
            self.train(self.training)
        if stage.name == semisupervised.SELFTRAIN:
            self.bcp_pair.start_teacher()
            if self.base == "abd":
                semisupervised.abd_students(self.bcp_pair.student, self.student2)

    def train(self, mode: bool = True) -> CPS4:
        super().train(mode)
        if self.refiner is not None and self.refiner.frozen:  # frozen: never back to train mode
            self.refiner.vlm.eval()
        return self

    def stage_state_dict(self, stage: Stage) -> dict[str, Any]:
        if self._refiner_stage(stage):
            assert self.refiner is not None
            return self.refiner.stage_state()
        state: dict[str, Any] = {"student": self.bcp_pair.student.state_dict()}
        if self.refiner is not None:  # what pre-training's validations measured of the network
            state["teacher_reliability"] = self.refiner.teacher_reliability.clone()
        return state

    def load_stage_state_dict(self, stage: Stage, state: dict[str, Any]) -> None:
        if self._refiner_stage(stage):
            assert self.refiner is not None
            self.refiner.load_stage_state(state)
            return
        self.bcp_pair.student.load_state_dict(state["student"])
        if self.refiner is not None:
            self.refiner.teacher_reliability.copy_(state["teacher_reliability"])

    # -- training -------------------------------------------------------------------------------
    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if self._refiner_stage(stage):
            assert self.refiner is not None
            return self.refiner.training_step(batch)
        if self.base == "cps4":
            return self._ssl_step(batch, step)
        if self.base == "unimatch":
            return self.unimatch(self.net, batch, self.refiner)
        if stage.name == semisupervised.PRETRAIN:
            return self.bcp.pretrain(self.bcp_pair.student, batch)
        student, teacher = self.bcp_pair.student, self.bcp_pair.teacher
        if self.base == "abd":
            return self.abd(student, self.student2, teacher, batch, self.refiner)
        return self.bcp.selftrain(student, teacher, batch, self.refiner)

    def _ssl_step(self, batch: Batch, step: StepInfo) -> StepOutput:
        """The paper's stage 2: a Mean Teacher student on the strong view, pseudo labels from
        the teacher on the weak view (refined by the VLM), kept where confident."""
        student = self.pair.student
        if batch.unlabeled_weak is None or batch.unlabeled_strong is None:  # --labeled 1.0
            return StepOutput(losses={"loss": self.supervised(student(batch.image), batch.label)})
        o = self.opts
        weak, strong = batch.unlabeled_weak, batch.unlabeled_strong[0]
        joint = self.ctx.config["train"]["ssl_forward"] == "joint"
        labeled_logits, student_u = self.pair.student_logits(batch.image, strong, joint)
        supervised = self.supervised(labeled_logits, batch.label)
        teacher_logits = self.pair.teacher_logits(weak)
        teacher = teacher_logits.softmax(1)
        prepared = self.refiner.prepare(weak) if self.refiner is not None else None
        refined = semisupervised.pseudo_probabilities(teacher_logits, self.refiner, prepared)
        confidence, labels = refined.probs.max(1)
        keep = semisupervised.kept(confidence, o["conf_thresh"], refined)
        ramp = semisupervised.consistency_weight(
            1.0, step.iteration, step.total, o["rampup_fraction"], o["start_fraction"]
        )
        if o["unlabeled_loss"] == "ce":  # PromptSSL: every pixel, hard labels, no ramp
            pseudo_loss = F.cross_entropy(student_u.float(), labels)
            keep, pseudo_weight = torch.ones_like(keep), o["w_pseudo"]
        else:
            pseudo_weight = ramp * o["w_pseudo"]
            kept = keep.float()
            pseudo_loss = 0.5 * (
                semisupervised.masked_cross_entropy(student_u, labels, kept)
                + self.masked_dice(student_u, labels, kept)
            )
        mse = F.mse_loss(student_u.float().softmax(1), teacher)
        loss = supervised + pseudo_weight * pseudo_loss + ramp * o["consistency"] * mse
        diagnostics = semisupervised.pseudo_label_diagnostics(
            refined.probs, batch.unlabeled_truth, o["conf_thresh"], pseudo_weight, keep=keep
        )
        if self.refiner is not None:
            diagnostics |= semisupervised.refinement_diagnostics(
                teacher, refined, keep, batch.unlabeled_truth, self.class_names
            )
        return StepOutput(
            losses={
                "loss": loss,
                "supervised": supervised.detach(),
                "pseudo": pseudo_loss.detach(),
                "consistency": mse.detach(),
            },
            diagnostics=diagnostics,
        )

    def on_validated(self, stage: Stage, scores: dict[str, float]) -> None:
        if self.refiner is not None:
            self.refiner.on_validated(stage, scores)

    def after_optimizer_step(self, stage: Stage, step: StepInfo) -> None:
        if stage.name == SSL and self.base == "cps4":
            self.pair.update_teacher(step.iteration)
        elif stage.name == semisupervised.SELFTRAIN and self.base in ("bcp", "abd"):
            self.bcp_pair.update_teacher()

    # -- inference and stage-1 validation -------------------------------------------------------
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._students()[0](images)
        return logits

    def validate_stage(
        self, stage: Stage, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        assert self.refiner is not None, "only the VLM's stage validates by itself"
        return self.refiner.validate(images, labels)


def _constant_rate(stage: Stage) -> Stage:
    """BCP's and ABD's ACDC code never decays the learning rate (paper profile)."""
    return replace(stage, optimizer=OptimizerSpec(poly_power=0.0))


def _base_seeds(own: list[Stage], base: list[Stage]) -> list[Stage]:
    """``own`` then ``base``, each base stage seeded as in the base's own run and the
    refiner's stage after them."""
    seeded = [replace(s, seed_index=i) for i, s in enumerate(base)]
    return [*(replace(s, seed_index=len(base)) for s in own), *seeded]
