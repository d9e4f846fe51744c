"""The promises a method keeps, and the checks that catch a broken one.

Each check raises :class:`ConformanceError` naming the rule, the method and what to fix.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from spinebench.method import Method, Stage, StepOutput, seed_positions

RULES: dict[str, str] = {
    "config": "options and default_config(profile) resolve into a valid config for every profile",
    "stages": "stages() is a non-empty list of Stage with unique names made of letters, digits, "
    "'_' or '-', positive integer iterations, a non-negative number of strong views and a prefix "
    "ending in '/', the same on every call; the last stage segments",
    "parameters": "every parameter and buffer is created in __init__ and on the CPU; each stage "
    "has trainable parameters that belong to the method",
    "losses": "training_step returns a StepOutput whose losses are finite scalar tensors with "
    "loggable names; losses['loss'] back-propagates into trainable parameters; diagnostics are "
    "scalars",
    "hidden_truth": "losses and gradients never depend on Batch.unlabeled_truth (the hidden "
    "labels of the unlabeled slices are for diagnostics only)",
    "predict": "predict(images [B, 1, H, W]) returns finite floating-point logits "
    "[B, num_classes, H, W] on the images' device",
    "validate_stage": "validate_stage of a non-segmenting stage returns finite numbers by name",
    "state_dict": "state_dict() survives torch.save/torch.load(weights_only=True) into a fresh "
    "instance, which then predicts exactly the same logits",
    "determinism": "two CPU runs with the same seed give identical losses and predictions",
    "side_effects": "the method writes no files (through Python, torch.save or C extensions), "
    "never uses MLflow or the engine's tracking and checkpoint modules, and leaves the "
    "environment variables unchanged",
}

LOGGABLE = re.compile(r"^[A-Za-z0-9_./ -]+$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class ConformanceError(AssertionError):
    """A method broke one of :data:`RULES`; ``rule`` names it (an AssertionError, so pytest
    reports a failed test rather than an error)."""

    def __init__(self, rule: str, method: str, detail: str) -> None:
        self.rule = rule
        super().__init__(
            f"{method} breaks conformance rule {rule!r}: {detail}\n  rule {rule!r}: {RULES[rule]}"
        )


@contextmanager
def rule(name: str, method: str) -> Iterator[None]:
    """Report an exception the method raises while a rule is checked as that rule's failure."""
    try:
        yield
    except ConformanceError:
        raise
    except Exception as exc:
        raise ConformanceError(name, method, f"raised {type(exc).__name__}: {exc}") from exc


def check_stages(method: Method, name: str) -> list[Stage]:
    with rule("stages", name):
        stages = method.stages()
        again = method.stages()
    if not isinstance(stages, list) or not stages:
        raise ConformanceError(
            "stages", name, f"stages() returned {stages!r}; return a non-empty list"
        )
    bad = [s for s in stages if not isinstance(s, Stage)]
    if bad:
        raise ConformanceError("stages", name, f"stages() holds non-Stage items {bad!r}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConformanceError("stages", name, f"stage names are not unique: {names}")
    seeds = seed_positions(stages)
    if len(set(seeds)) != len(seeds):
        raise ConformanceError(
            "stages", name, f"stages share a seed_index ({seeds} for {names}); give each its own"
        )
    for s in stages:
        if not isinstance(s.name, str) or not _STAGE_NAME.match(s.name):
            raise ConformanceError(
                "stages",
                name,
                f"stage name {s.name!r} must be letters, digits, '_' or '-' (it names "
                "checkpoints and caches)",
            )
        for field, value, low in (
            ("iterations", s.iterations, 1),
            ("strong_views", s.strong_views, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConformanceError("stages", name, f"stage {s.name!r} has {field}={value!r}")
        if not s.prefix.endswith("/"):
            raise ConformanceError(
                "stages",
                name,
                f"stage {s.name!r} has prefix {s.prefix!r}; end it with '/' (losses are logged "
                "as <prefix><name>)",
            )
    if again != stages:
        raise ConformanceError(
            "stages",
            name,
            f"stages() returned different stages on a second call: {names} then "
            f"{[s.name for s in again]}",
        )
    if not stages[-1].segments:
        raise ConformanceError(
            "stages",
            name,
            f"the last stage {stages[-1].name!r} has segments=False, so nothing trains what "
            "predict() returns",
        )
    return stages


def check_placement(method: Method, name: str) -> None:
    elsewhere = [
        n
        for n, t in [*method.named_parameters(), *method.named_buffers()]
        if t.device.type != "cpu"
    ]
    if elsewhere:
        raise ConformanceError(
            "parameters",
            name,
            f"{', '.join(elsewhere[:5])} are not on the CPU after __init__; never pick a device "
            "(the engine moves the method with .to(device))",
        )


def check_output(out: StepOutput, stage: Stage, it: int, name: str) -> None:
    """A step's losses and diagnostics (the engine has checked it is a StepOutput with 'loss')."""
    where = f"stage {stage.name!r} step {it}"
    for key, value in out.losses.items():
        if not LOGGABLE.match(str(key)):
            raise ConformanceError(
                "losses",
                name,
                f"{where}: loss name {key!r} cannot be logged (letters, digits, _ . / - and "
                "space only)",
            )
        if not torch.is_tensor(value) or value.numel() != 1 or not value.is_floating_point():
            raise ConformanceError(
                "losses",
                name,
                f"{where}: losses[{key!r}] is not a floating-point scalar tensor: {value!r}",
            )
        if not bool(torch.isfinite(value).all()):
            raise ConformanceError(
                "losses", name, f"{where}: losses[{key!r}] is not finite ({float(value.detach())})"
            )
    if not out.losses["loss"].requires_grad:
        raise ConformanceError(
            "losses",
            name,
            f"{where}: losses['loss'] does not require grad (detached, or computed under no_grad)",
        )
    for key, diagnostic in out.diagnostics.items():
        if not LOGGABLE.match(str(key)):
            raise ConformanceError(
                "losses",
                name,
                f"{where}: diagnostic name {key!r} cannot be logged (letters, digits, _ . / - "
                "and space only)",
            )
        scalar = isinstance(diagnostic, int | float) or (
            torch.is_tensor(diagnostic) and diagnostic.numel() == 1
        )
        if not scalar:
            raise ConformanceError(
                "losses", name, f"{where}: diagnostics[{key!r}] is not a scalar: {diagnostic!r}"
            )


def check_validation(values: dict[str, float], stage: Stage, name: str) -> None:
    """The numbers the engine's validation got from ``validate_stage``."""
    prefix = f"val/{stage.prefix}"
    for key, value in values.items():
        shown = key.removeprefix(prefix) if not stage.segments else key
        if not math.isfinite(value):
            raise ConformanceError(
                "validate_stage" if not stage.segments else "predict",
                name,
                f"stage {stage.name!r}: {shown!r} is {value}",
            )


def predict(method: Method, images: torch.Tensor, name: str) -> torch.Tensor:
    method.eval()
    with rule("predict", name), torch.no_grad():
        logits = method.predict(images)
    b, _, h, w = images.shape
    expected = (b, method.ctx.num_classes, h, w)
    if not torch.is_tensor(logits):
        raise ConformanceError("predict", name, f"returned {type(logits).__name__}, not a tensor")
    if tuple(logits.shape) != expected:
        raise ConformanceError(
            "predict",
            name,
            f"returned shape {list(logits.shape)} for images {list(images.shape)}; expected "
            f"{list(expected)}",
        )
    if not logits.is_floating_point():
        raise ConformanceError(
            "predict", name, f"returned dtype {logits.dtype}; expected floating-point logits"
        )
    if logits.device != images.device:
        raise ConformanceError(
            "predict", name, f"returned a tensor on {logits.device} for images on {images.device}"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ConformanceError("predict", name, "returned NaN or Inf logits")
    return logits


def roundtrip(state: dict[str, Any], what: str, name: str) -> dict[str, Any]:
    """``state`` through torch.save and torch.load(weights_only=True), in memory."""
    buffer = io.BytesIO()
    with rule("state_dict", name):
        torch.save(state, buffer)
    buffer.seek(0)
    try:
        loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise ConformanceError(
            "state_dict",
            name,
            f"{what} holds objects that torch.load(weights_only=True) refuses (keep tensors and "
            f"plain containers only): {exc}",
        ) from exc
    return loaded


def check_same(
    first: list[tuple[str, float]],
    second: list[tuple[str, float]],
    pred_a: torch.Tensor,
    pred_b: torch.Tensor,
    name: str,
) -> None:
    hint = (
        "draw randomness from torch's global generator (the engine seeds it) or from the "
        "batch, never from an unseeded source such as np.random.default_rng() or the clock"
    )
    for (key, a), (_, b) in zip(first, second, strict=True):
        if a != b and not (math.isnan(a) and math.isnan(b)):
            raise ConformanceError(
                "determinism",
                name,
                f"{key}: {a!r} in the first run, {b!r} in the second with the same seed; {hint}",
            )
    if not torch.equal(pred_a, pred_b):
        raise ConformanceError(
            "determinism", name, f"two runs with the same seed predict different logits; {hint}"
        )
