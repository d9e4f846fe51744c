"""Case-level splits: train/val/test by ``data.split_seed``, labeled subset by the run seed.

The test cases do not depend on the run seed, so per-case results pair across seeds and
methods; the labeled subset does, so seeds measure the variance that label choice causes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from spinebench.errors import ConfigError, DataError


@dataclass(frozen=True)
class Split:
    """Case ids of each part; ``labeled`` is a subset of ``train``."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    labeled: tuple[str, ...]

    @property
    def unlabeled(self) -> tuple[str, ...]:
        keep = set(self.labeled)
        return tuple(c for c in self.train if c not in keep)

    def check_disjoint(self) -> None:
        """Refuse a split in which a case is in two parts (or twice in one): a test case must
        never be trained on."""
        parts = {"train": self.train, "val": self.val, "test": self.test}
        seen: dict[str, str] = {}
        for name, ids in parts.items():
            for cid in ids:
                if cid in seen:
                    raise DataError(
                        f"case {cid!r} is in the {seen[cid]} and the {name} split; case ids "
                        "must be unique"
                    )
                seen[cid] = name
        if not set(self.labeled) <= set(self.train):
            raise DataError("labeled cases must be training cases")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def check_fraction(labeled: float) -> float:
    """A labeled fraction must be in (0, 1]."""
    if isinstance(labeled, bool) or not isinstance(labeled, int | float):
        raise ConfigError(f"--labeled {labeled!r} is not a number; use a fraction like 0.05")
    if not 0 < float(labeled) <= 1:
        raise ConfigError(
            f"--labeled {labeled} is outside (0, 1]; use a fraction like 0.05 "
            "(1.0 = all training cases labeled)"
        )
    return float(labeled)


def make_split(
    case_ids: list[str],
    *,
    labeled: float,
    seed: int,
    split_seed: int,
    val_fraction: float,
    test_fraction: float,
) -> Split:
    """Deterministic split of sorted ``case_ids``; every part gets at least one case."""
    labeled = check_fraction(labeled)
    repeated = sorted(c for c, n in Counter(case_ids).items() if n > 1)
    if repeated:
        shown = ", ".join(repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        raise DataError(
            f"the dataset lists {len(repeated)} case id(s) more than once ({shown}); a case "
            "listed twice could land in training and test: list each case once"
        )
    ids = sorted(case_ids)
    if len(ids) < 3:
        raise DataError(f"{len(ids)} case(s) found; a train/val/test split needs at least 3")
    order = np.random.default_rng(split_seed).permutation(len(ids))
    n_test = max(1, round(test_fraction * len(ids)))
    n_val = max(1, round(val_fraction * len(ids)))
    if n_test + n_val >= len(ids):
        raise DataError(
            f"{len(ids)} cases leave none for training with val {val_fraction} "
            f"and test {test_fraction}; lower data.val_fraction/test_fraction"
        )
    test = sorted(ids[i] for i in order[:n_test])
    val = sorted(ids[i] for i in order[n_test : n_test + n_val])
    train = sorted(ids[i] for i in order[n_test + n_val :])
    n_lab = max(1, round(labeled * len(train)))
    pick = np.random.default_rng([split_seed, seed]).permutation(len(train))[:n_lab]
    lab = sorted(train[i] for i in pick)
    split = Split(tuple(train), tuple(val), tuple(test), tuple(lab))
    split.check_disjoint()
    return split
