"""Semi-supervised building blocks shared by the SSL methods (Mean Teacher, UniMatch, CPS4).

They live in the core so every method computes them the same way and a plugin builds on them
without depending on another plugin. Each follows the source cited in its docstring; the
plugins' READMEs list the exact lines.
"""

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

__all__ = [
    "CONFIDENT_FRACTION",
    "CONSISTENCY_WEIGHT",
    "MEAN_TEACHER_OPTIONS",
    "PSEUDO_DICE",
    "SOURCE_TRAIN",
    "MaskedDice",
    "MeanTeacherPair",
    "clamped_gaussian_noise",
    "class_balance",
    "consistency_weight",
    "ema_update",
    "masked_cross_entropy",
    "pseudo_label_diagnostics",
    "pseudo_label_dice",
    "sigmoid_rampup",
]
