"""Semi-supervised building blocks shared by the SSL methods (Mean Teacher, UniMatch, BCP, ABD,
CPS and CPS4).

They live in the core so every method computes them the same way and a plugin builds on them
without depending on another plugin: a base's training step (UniMatch's, BCP's, ABD's) lives
here so that its own plugin and CPS4, which runs it with a pseudo-label refiner, call the same
code. Each follows the source cited in its docstring; the plugins' READMEs list the exact lines.
"""

from spinebench.semisupervised.abd import (
    ABD_OPTIONS,
    ABDStep,
    abd_students,
    check_displacement_config,
    cutout,
)
from spinebench.semisupervised.bcp import (
    BCP_OPTIONS,
    BCP_SOURCE_TRAIN,
    PRETRAIN,
    QUICK_BUDGET,
    SELFTRAIN,
    BCPStep,
    CopyPasteLoss,
    StudentTeacher,
    bcp_stages,
    check_copy_paste_config,
    ema_state_update,
    pretrain_cache_key,
    region_cross_entropy,
)
from spinebench.semisupervised.components import largest_component_per_class
from spinebench.semisupervised.diagnostics import (
    CONFIDENT_FRACTION,
    CONSISTENCY_WEIGHT,
    PSEUDO_DICE,
    class_balance,
    pseudo_label_diagnostics,
    pseudo_label_dice,
)
from spinebench.semisupervised.losses import MaskedDice, masked_cross_entropy
from spinebench.semisupervised.mean_teacher import (
    MEAN_TEACHER_OPTIONS,
    SOURCE_TRAIN,
    MeanTeacherPair,
    clamped_gaussian_noise,
    consistency_weight,
    ema_update,
    sigmoid_rampup,
)
from spinebench.semisupervised.mixing import (
    copy_paste,
    copy_paste_mask,
    cutmix_box,
    cutmix_boxes,
    mix_partners,
    paste,
)
from spinebench.semisupervised.refine import (
    PseudoLabelRefiner,
    Refined,
    kept,
    label_names,
    pseudo_probabilities,
    refinement_diagnostics,
)
from spinebench.semisupervised.unimatch import (
    UNIMATCH_OPTIONS,
    UNLABELED_WEIGHT,
    UniMatchStep,
    total_loss,
    unimatch_stage,
)

__all__ = [
    "ABD_OPTIONS",
    "BCP_OPTIONS",
    "BCP_SOURCE_TRAIN",
    "CONFIDENT_FRACTION",
    "CONSISTENCY_WEIGHT",
    "MEAN_TEACHER_OPTIONS",
    "PRETRAIN",
    "PSEUDO_DICE",
    "QUICK_BUDGET",
    "SELFTRAIN",
    "SOURCE_TRAIN",
    "UNIMATCH_OPTIONS",
    "UNLABELED_WEIGHT",
    "ABDStep",
    "BCPStep",
    "CopyPasteLoss",
    "MaskedDice",
    "MeanTeacherPair",
    "PseudoLabelRefiner",
    "Refined",
    "StudentTeacher",
    "UniMatchStep",
    "abd_students",
    "bcp_stages",
    "check_copy_paste_config",
    "check_displacement_config",
    "clamped_gaussian_noise",
    "class_balance",
    "consistency_weight",
    "copy_paste",
    "copy_paste_mask",
    "cutmix_box",
    "cutmix_boxes",
    "cutout",
    "ema_state_update",
    "ema_update",
    "kept",
    "label_names",
    "largest_component_per_class",
    "masked_cross_entropy",
    "mix_partners",
    "paste",
    "pretrain_cache_key",
    "pseudo_label_diagnostics",
    "pseudo_label_dice",
    "pseudo_probabilities",
    "refinement_diagnostics",
    "region_cross_entropy",
    "sigmoid_rampup",
    "total_loss",
    "unimatch_stage",
]
