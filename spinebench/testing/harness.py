"""A method class wired to a tiny real pipeline: the engine's config resolution, slice cache,
split, training streams and stage runner, on an in-memory phantom, with nothing tracked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from rich.console import Console

from spinebench.config import resolve
from spinebench.data.classmap import ClassMap, mrspineseg_class_map
from spinebench.data.dataset import CaseRef, Dataset, Volume
from spinebench.data.slices import SliceCache, build_or_load
from spinebench.data.splits import Split, make_split
from spinebench.data.streams import TrainStreams
from spinebench.engine.evaluate import validate
from spinebench.engine.metrics import dice
from spinebench.engine.runtime import Runtime, setup, stage_seed
from spinebench.engine.stages import StageEnv, run_stages
from spinebench.engine.tracking import NullTracker
from spinebench.engine.trainer import StepObserver, TrainState
from spinebench.method import Method, MethodContext, Stage

#: What the kit changes of a method's config: a tiny, single-threaded, quickly validated run.
TINY = {
    "data.cases": 6,
    "train.batch_size": 2,
    "train.unlabeled_batch_size": 2,
    "train.threads": 1,
    "eval.batch_size": 4,
}


ValidationWrapper = Callable[[Stage, Callable[[], dict[str, float]]], dict[str, float]]
"""Runs a stage's validation (the callable) and returns its numbers, e.g. after checking them."""


class PhantomDataset(Dataset):
    """A few in-memory cases: one horizontal band per class, stacked from the bottom in id order,
    so every class occurs and each has its own intensity. No files are read."""

    def __init__(self, class_map: ClassMap, cases: int, seed: int) -> None:
        super().__init__(None, {})
        self._class_map = class_map
        self._ids = [f"kit{i:02d}" for i in range(cases)]
        self._seed = seed

    def class_map(self) -> ClassMap:
        return self._class_map

    def cases(self) -> list[CaseRef]:
        return [CaseRef(cid, Path(cid), Path(cid)) for cid in self._ids]

    def load(self, case: CaseRef) -> Volume:
        rng = np.random.default_rng([self._seed, self._ids.index(case.case_id)])
        n = self._class_map.num_classes - 1
        slices, rows, cols = 4, 2 * n + 8, 28
        label = np.zeros((slices, rows, cols), dtype=np.int64)
        bottom = rows - 2 - int(rng.integers(0, 3))
        for s in range(slices):
            left = 8 + int(rng.integers(-2, 3))
            for k, cid in enumerate(self._class_map.ids):
                label[s, bottom - 2 * (k + 1) : bottom - 2 * k, left : left + 12] = cid
        image = (label % 5).astype(np.float32) * 0.25 + rng.normal(0, 0.1, label.shape)
        return Volume(case.case_id, image.astype(np.float32), label, (3.0, 1.0, 1.0))

    def fingerprint(self) -> str:
        return f"kit-{len(self._ids)}-{self._seed}"


def resolve_kit_config(
    method_cls: type[Method], profile: str, overrides: dict[str, Any], seed: int
) -> dict[str, Any]:
    config = resolve(
        method="kit",
        method_options=method_cls.options,
        method_defaults=method_cls.default_config(profile),
        profile=profile,
        overrides=overrides,
        run={"dataset": "kit", "labeled": 0.5, "seed": seed},
    )
    method_cls.validate_config(config)
    return config


@dataclass
class Harness:
    """A method class, its resolved config, the slice cache and split of the tiny phantom."""

    method_cls: type[Method]
    context: MethodContext
    cache: SliceCache
    split: Split
    seed: int

    @property
    def config(self) -> dict[str, Any]:
        return self.context.config

    def runtime(self) -> Runtime:
        """The engine's CPU runtime for this config: one thread, seeded, deterministic, and
        every new tensor filled with NaN, so a read of uninitialised memory shows."""
        return setup(self.config["train"], "cpu", self.seed, poison_uninitialized=True)

    def build(self) -> Method:
        """A fresh instance, seeded as the engine seeds a run before building its method."""
        self.runtime()
        return self.method_cls(self.context)

    def streams(self, stage_index: int = 0) -> TrainStreams:
        """Fresh CPU training streams of a stage, seeded as the engine seeds them;
        ``streams().next(with_unlabeled=True)`` is a Batch."""
        seed = stage_seed(self.seed, stage_index)
        return TrainStreams(self.cache, self.split, self.config, seed, torch.device("cpu"))

    def val_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` validation slices [B, 1, H, W] with their labels [B, H, W]."""
        rows = self.cache.slice_indices(self.split.val)[:size]
        images = torch.from_numpy(np.array(self.cache.images[rows]))[:, None]
        return images, torch.from_numpy(self.cache.labels[rows].astype(np.int64))

    def train(
        self,
        method: Method,
        steps: int,
        observer: StepObserver | None = None,
        around_validation: ValidationWrapper | None = None,
    ) -> None:
        """Every stage of ``method`` through the engine's stage runner, ``steps`` steps each,
        then the engine's validation of the stage (run through ``around_validation`` when
        given); nothing is tracked, cached or checkpointed."""
        runtime = self.runtime()
        batch = int(self.config["eval"]["batch_size"])

        def validated(m: Method, stage: Stage) -> dict[str, float]:
            def run() -> dict[str, float]:
                return validate(
                    m, stage, self.cache, self.split.val, self.context.class_map, dice, runtime,
                    batch,
                )  # fmt: skip

            return around_validation(stage, run) if around_validation else run()

        env = StageEnv(
            method_name=f"{self.method_cls.__module__}.{self.method_cls.__qualname__}",
            seed=self.seed,
            runtime=runtime,
            train={**self.config["train"], "val_every": steps, "log_every": 1},
            make_streams=self.streams,
            validate=validated,
            tracker=NullTracker(),
            console=Console(quiet=True),
            max_steps=steps,
            observer=observer,
        )
        run_stages(method, env, TrainState(), self.streams(), None)


def make_harness(
    method_cls: type[Method],
    workdir: Path,
    *,
    overrides: dict[str, Any] | None = None,
    image_size: int = 32,
    steps: int = 2,
    seed: int = 0,
    class_map: ClassMap | None = None,
) -> Harness:
    """Build the tiny pipeline for ``method_cls``, with its slice cache under ``workdir``.

    ``overrides`` are dotted config keys (``method.<option>``, ``model.backbone`` ...) applied
    over the kit's tiny settings; ``steps`` is each stage's budget.
    """
    merged = {**TINY, "data.image_size": image_size, "train.iterations": steps}
    config = resolve_kit_config(method_cls, "quick", {**merged, **(overrides or {})}, seed)
    classes = class_map or mrspineseg_class_map()
    dataset = PhantomDataset(classes, int(config["data"]["cases"]), seed)
    with mock.patch.dict(os.environ, {"SPINEBENCH_CACHE": str(workdir)}):
        cache = build_or_load("kit", dataset, config)
    d = config["data"]
    split = make_split(
        [c.case_id for c in dataset.cases()],
        labeled=0.5,
        seed=seed,
        split_seed=d["split_seed"],
        val_fraction=d["val_fraction"],
        test_fraction=d["test_fraction"],
    )
    ctx = MethodContext(
        class_map=classes,
        image_size=int(d["image_size"]),
        options=dict(config["method"]),
        config=config,
    )
    return Harness(method_cls, ctx, cache, split, seed)
