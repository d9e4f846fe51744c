"""The statistics every table uses: NaN-aware means, mean ± std over seeds, paired tests."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def nanmean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN; NaN when none is (DESIGN.md: a class absent from
    prediction and truth is left out of the mean)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1) of ``n`` values; std NaN for one value."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return cls(math.nan, math.nan, 0)
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
        return cls(float(np.mean(finite)), std, len(finite))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values; NaN entries are not part of the family."""
    order = sorted(
        (i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i]
    )
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_wilcoxon(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided signed-rank p over the keys (cases) both sides scored; NaN if none differs."""
    from scipy.stats import wilcoxon

    common = sorted(a.keys() & b.keys())
    x = np.array([a[c] for c in common])
    y = np.array([b[c] for c in common])
    if not np.any(x != y):
        return math.nan
    return float(wilcoxon(x, y).pvalue)
