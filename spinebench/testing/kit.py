"""``check_method``: every rule of :data:`~spinebench.testing.rules.RULES` on one method class.

The method trains through the engine's own stage runner (a step cap, nothing tracked) inside
the sandbox, while an observer checks each step from outside: what ``training_step`` returns,
that gradients reach the stage's parameters, and, at the first step of every stage with
unlabeled data, that losses and gradients are the same when ``Batch.unlabeled_truth`` is
replaced by other labels (a method that trains on the hidden truth would differ).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from spinebench.engine.runtime import rng_state, set_rng_state, torch_settings_kept
from spinebench.errors import ConfigError
from spinebench.method import Batch, Method, Stage, StepInfo, StepOutput
from spinebench.testing import rules
from spinebench.testing.harness import TINY, Harness, make_harness, resolve_kit_config
from spinebench.testing.rules import RULES, ConformanceError, rule
from spinebench.testing.sandbox import forbidden_references, no_side_effects


@dataclass(frozen=True)
class Report:
    """What a passing :func:`check_method` checked."""

    method: str
    rules: tuple[str, ...]
    steps: int
    seconds: float


def scrambled(truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Other labels of the same shape: batch order reversed, shifted in-plane, classes renamed."""
    h, w = truth.shape[-2:]
    moved = truth.flip(0).roll(shifts=(max(h // 2, 1), max(w // 3, 1)), dims=(-2, -1))
    return (moved + 1) % num_classes


class KitObserver:
    """Checks every step the engine's loop runs and records its loss values."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.record: list[tuple[str, float]] = []
        self._probed: set[str] = set()

    def before_step(self, method: Method, stage: Stage, batch: Batch, step: StepInfo) -> None:
        if stage.name not in self._probed and batch.unlabeled_truth is not None:
            self._probed.add(stage.name)
            self._probe_hidden_truth(method, stage, batch, step)

    def after_forward(self, stage: Stage, step: StepInfo, out: StepOutput) -> None:
        rules.check_output(out, stage, step.iteration, self.name)
        where = f"stage {stage.name!r} step {step.iteration}"
        self.record += [
            (f"{where} losses[{k!r}]", float(v.detach())) for k, v in out.losses.items()
        ]

    def after_backward(self, stage: Stage, step: StepInfo, params: list[torch.Tensor]) -> None:
        if all(p.grad is None for p in params):
            raise ConformanceError(
                "losses",
                self.name,
                f"stage {stage.name!r} step {step.iteration}: losses['loss'] reaches none of the "
                "stage's trainable parameters",
            )

    def validated(self, stage: Stage, run: Callable[[], dict[str, float]]) -> dict[str, float]:
        """The engine's validation of a stage, checked and recorded."""
        with rule("predict" if stage.segments else "validate_stage", self.name):
            scores = run()
        rules.check_validation(scores, stage, self.name)
        self.record += [(f"stage {stage.name!r} {k}", v) for k, v in scores.items()]
        return scores

    def _probe_hidden_truth(
        self, method: Method, stage: Stage, batch: Batch, step: StepInfo
    ) -> None:
        """One step on copies of the method, with the real and with scrambled hidden labels,
        from the same random state; the real step then runs as if nothing happened."""
        assert batch.unlabeled_truth is not None
        state = rng_state()
        results = []
        for truth in (
            batch.unlabeled_truth,
            scrambled(batch.unlabeled_truth, method.ctx.num_classes),
        ):
            probe = copy.deepcopy(method)
            set_rng_state(state)
            with rule("losses", self.name):
                out = probe.training_step(stage, replace(batch, unlabeled_truth=truth), step)
                params = [p for p in probe.trainable_parameters(stage) if p.requires_grad]
                grads = torch.autograd.grad(out.losses["loss"], params, allow_unused=True)
            results.append(({k: v.detach() for k, v in out.losses.items()}, grads))
        set_rng_state(state)
        (losses_a, grads_a), (losses_b, grads_b) = results
        changed = [k for k in losses_a if not torch.equal(losses_a[k], losses_b[k])]
        same_grads = all(
            (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
            for a, b in zip(grads_a, grads_b, strict=True)
        )
        if changed or not same_grads:
            what = f"losses {', '.join(repr(k) for k in changed)}" if changed else "gradients"
            raise ConformanceError(
                "hidden_truth",
                self.name,
                f"stage {stage.name!r}: {what} changed when Batch.unlabeled_truth was replaced by "
                "other labels; train on labeled slices and pseudo labels only, and use the "
                "hidden truth for diagnostics",
            )


def _train_and_record(
    method: Method, harness: Harness, steps: int, name: str
) -> list[tuple[str, float]]:
    observer = KitObserver(name)
    with rule("losses", name):
        harness.train(method, steps, observer, observer.validated)
    return observer.record


def _check_config(
    method_cls: type[Method], name: str, overrides: dict[str, Any], seed: int
) -> None:
    for profile in ("quick", "paper"):
        try:
            resolve_kit_config(method_cls, profile, overrides, seed)
        except Exception as exc:
            raise ConformanceError(
                "config", name, f"profile {profile!r}: {type(exc).__name__}: {exc}"
            ) from exc


def _check_state_dict(
    method: Method, harness: Harness, stages: list[Stage], images: torch.Tensor, name: str
) -> None:
    expected = rules.predict(method, images, name)
    state = rules.roundtrip(method.state_dict(), "state_dict()", name)
    staged = {
        s.name: rules.roundtrip(method.stage_state_dict(s), f"stage_state_dict({s.name!r})", name)
        for s in stages
        if s.cache_key is not None
    }
    torch.manual_seed(harness.seed + 1)  # a fresh instance must not match by sharing the init
    with rule("state_dict", name):
        fresh = harness.method_cls(harness.context)
        fresh.load_state_dict(state)
        for s in stages:
            if s.name in staged:
                harness.method_cls(harness.context).load_stage_state_dict(s, staged[s.name])
    got = rules.predict(fresh, images, name)
    if not torch.equal(got, expected):
        diff = float((got - expected).abs().max())
        raise ConformanceError(
            "state_dict",
            name,
            f"a fresh instance loaded with state_dict() predicts different logits (max abs "
            f"difference {diff:.3g}); keep every tensor predict() depends on in a parameter or a "
            "registered (persistent) buffer",
        )


def check_method(
    method_cls: type[Method],
    *,
    overrides: dict[str, Any] | None = None,
    image_size: int = 32,
    steps: int = 2,
    seed: int = 0,
) -> Report:
    """Check ``method_cls`` against every rule in :data:`RULES`; raise ConformanceError naming
    the first broken one.

    ``overrides``: dotted config keys (``method.<option>``, ``model.channels`` ...) over the kit's
    tiny settings. ``steps``: training steps per stage (each stage runs at most this many).
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: the kit needs at least one training step per stage")
    name = f"{method_cls.__module__}.{method_cls.__qualname__}"
    start = time.perf_counter()
    refs = forbidden_references(method_cls)
    if refs:
        raise ConformanceError("side_effects", name, f"method code references {', '.join(refs)}")
    tiny = {**TINY, "data.image_size": image_size, "train.iterations": steps}
    _check_config(method_cls, name, {**tiny, **(overrides or {})}, seed)
    rng = rng_state()
    with tempfile.TemporaryDirectory(prefix="spinebench-kit-") as workdir, torch_settings_kept():
        try:
            harness = make_harness(
                method_cls, Path(workdir), overrides=overrides, image_size=image_size,
                steps=steps, seed=seed,
            )  # fmt: skip
        except ConfigError as exc:
            raise ConformanceError("config", name, str(exc)) from exc
        images, _ = harness.val_batch(3)
        try:
            with no_side_effects(name):
                _check(harness, images, steps, name)
        finally:
            set_rng_state(rng)
    return Report(name, tuple(RULES), steps, time.perf_counter() - start)


def _check(harness: Harness, images: torch.Tensor, steps: int, name: str) -> None:
    with rule("parameters", name):
        method = harness.build()
    rules.check_placement(method, name)
    params = {n for n, _ in method.named_parameters()}
    keys = set(method.state_dict())
    stages = rules.check_stages(method, name)
    own = {id(p) for p in method.parameters()}
    for stage in stages:
        with rule("parameters", name):
            trainable = list(method.trainable_parameters(stage))
        if any(id(p) not in own for p in trainable):
            raise ConformanceError(
                "parameters",
                name,
                f"trainable_parameters({stage.name!r}) yields tensors that are not parameters "
                "of the method",
            )
    losses = _train_and_record(method, harness, steps, name)
    created = sorted({n for n, _ in method.named_parameters()} - params)
    changed = sorted(set(method.state_dict()) ^ keys)
    if created or changed:
        raise ConformanceError(
            "parameters",
            name,
            f"created or removed after __init__: {', '.join((created or changed)[:8])}; the "
            "engine builds the optimiser and loads checkpoints right after __init__",
        )
    rules.predict(method, images[:1], name)
    _check_state_dict(method, harness, stages, images, name)
    prediction = rules.predict(method, images, name)
    again = harness.build()
    rules.check_same(
        losses,
        _train_and_record(again, harness, steps, name),
        prediction,
        rules.predict(again, images, name),
        name,
    )
