"""Training data streams: labeled and unlabeled slices sampled from the cache, augmented in
batches on the device. Each stream has its own seeded generator whose state is checkpointed,
so a resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spinebench.data.augment import Shard, random_affine, strong_view
from spinebench.data.slices import SliceCache
from spinebench.data.splits import Split
from spinebench.errors import ConfigError
from spinebench.method import Batch


class SliceStream:
    """Endless i.i.d. draws of slice rows from a fixed index set.

    With a ``shard`` (index, count) every process draws the same global batch and reads only
    its own contiguous part of it.
    """

    def __init__(
        self,
        cache: SliceCache,
        rows: np.ndarray,
        batch_size: int,
        seed: int,
        shard: Shard = (0, 1),
    ) -> None:
        self.cache = cache
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.batch_size = batch_size
        self.shard = shard
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        index, count = self.shard
        size = self.batch_size // count
        pick = torch.randint(len(self.rows), (self.batch_size,), generator=self.generator)
        rows = np.sort(self.rows[pick].numpy())[index * size : (index + 1) * size]
        image = torch.from_numpy(np.asarray(self.cache.images[rows]))[:, None]
        label = torch.from_numpy(np.asarray(self.cache.labels[rows]).astype(np.int64))
        return image, label


class TrainStreams:
    """The labeled stream, and the unlabeled one for stages that use it."""

    def __init__(
        self,
        cache: SliceCache,
        split: Split,
        config: dict[str, Any],
        seed: int,
        device: torch.device,
        shard: Shard = (0, 1),
    ) -> None:
        train = config["train"]
        self.aug = config["augment"]
        self.device = device
        self.shard = shard
        for key in ("batch_size", "unlabeled_batch_size"):
            if train[key] % shard[1]:
                raise ConfigError(
                    f"train.{key} {train[key]} does not split over {shard[1]} processes; set "
                    f"it to a multiple of {shard[1]} (the global batch stays the config's)"
                )
        self.labeled = SliceStream(
            cache,
            cache.slice_indices(split.labeled),
            train["batch_size"],
            seed * 1000 + 1,
            self.shard,
        )
        unlabeled_rows = cache.slice_indices(split.unlabeled)
        self.unlabeled = (
            SliceStream(
                cache, unlabeled_rows, train["unlabeled_batch_size"], seed * 1000 + 2, shard
            )
            if len(unlabeled_rows)
            else None
        )
        self.aug_generator = torch.Generator().manual_seed(seed * 1000 + 3)

    def next(
        self, with_unlabeled: bool, strong_views: int = 2, labeled_strong: bool = False
    ) -> Batch:
        """Draw, move to the device and augment one step's batch (with ``strong_views`` strong
        views of the unlabeled slices, and one of the labeled slices when ``labeled_strong``;
        it is drawn last, so stages without it draw exactly what they drew before)."""
        image, label = self.labeled.draw()
        image, label = self._to_device(image), self._to_device(label)
        image, label = random_affine(image, label, self.aug, self.aug_generator, self.shard)
        batch = Batch(image=image, label=label)
        if with_unlabeled and self.unlabeled is not None:
            u_image, u_truth = self.unlabeled.draw()
            u_image, u_truth = self._to_device(u_image), self._to_device(u_truth)
            u_image, u_truth = random_affine(
                u_image, u_truth, self.aug, self.aug_generator, self.shard
            )
            batch.unlabeled_weak = u_image
            batch.unlabeled_strong = tuple(
                strong_view(u_image, self.aug, self.aug_generator, self.shard)
                for _ in range(strong_views)
            )
            batch.unlabeled_truth = u_truth
        if labeled_strong:
            batch.image_strong = strong_view(image, self.aug, self.aug_generator, self.shard)
        return batch

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def state_dict(self) -> dict[str, Any]:
        state = {
            "labeled": self.labeled.generator.get_state(),
            "aug": self.aug_generator.get_state(),
        }
        if self.unlabeled is not None:
            state["unlabeled"] = self.unlabeled.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labeled.generator.set_state(state["labeled"])
        self.aug_generator.set_state(state["aug"])
        if self.unlabeled is not None and "unlabeled" in state:
            self.unlabeled.generator.set_state(state["unlabeled"])
