"""Conformance kit: check that a method keeps every promise the engine relies on.

A plugin's own test suite calls :func:`check_method` (or the ``spinebench_conformance`` fixture
that this module provides as a pytest plugin, registered through the ``pytest11`` entry point).
The kit runs the method through the engine's own pieces — config resolution, the preprocessing
cache, the training streams and the optimiser builder — on a tiny in-memory phantom, and checks
each rule on the method object itself. A broken promise fails here, with the rule's name, instead
of surfacing hours into a run as a crash, a wrong resume or an irreproducible number.
"""

from __future__ import annotations

import builtins
import io
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch

from spinebench.config import resolve
from spinebench.data.classmap import ClassMap, mrspineseg_class_map
from spinebench.data.dataset import CaseRef, Dataset, Volume
from spinebench.data.slices import SliceCache, build_or_load
from spinebench.data.splits import Split, make_split
from spinebench.data.streams import TrainStreams
from spinebench.engine.runtime import rng_state, seed_everything, set_rng_state
from spinebench.engine.trainer import build_optimizer
from spinebench.errors import ConfigError
from spinebench.method import Method, MethodContext, Stage, StepInfo, StepOutput

RULES: dict[str, str] = {
    "config": "options and default_config(profile) resolve into a valid config for every profile",
    "stages": "stages() is a non-empty list of Stage with unique names made of letters, digits, "
    "'_' or '-', positive integer iterations and a prefix ending in '/', the same on every call; "
    "the last stage segments",
    "parameters": "every parameter and buffer is created in __init__ and on the CPU; each stage "
    "has trainable parameters that belong to the method",
    "losses": "training_step returns a StepOutput whose losses are finite scalar tensors with "
    "loggable names; losses['loss'] back-propagates into trainable parameters; diagnostics are "
    "scalars",
    "predict": "predict(images [B, 1, H, W]) returns finite floating-point logits "
    "[B, num_classes, H, W] on the images' device",
    "validate_stage": "validate_stage of a non-segmenting stage returns finite numbers by name",
    "state_dict": "state_dict() survives torch.save/torch.load(weights_only=True) into a fresh "
    "instance, which then predicts exactly the same logits",
    "determinism": "two CPU runs with the same seed give identical losses and predictions",
    "side_effects": "the method writes no files, never uses MLflow or the engine's tracking and "
    "checkpoint modules, and leaves the environment variables unchanged",
}

FORBIDDEN_MODULES = ("mlflow", "spinebench.engine.tracking", "spinebench.engine.checkpoint")
_LOGGABLE = re.compile(r"^[A-Za-z0-9_./ -]+$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class ConformanceError(AssertionError):
    """A method broke one of :data:`RULES`; ``rule`` names it (an AssertionError, so pytest
    reports a failed test rather than an error)."""

    def __init__(self, rule: str, method: str, detail: str) -> None:
        self.rule = rule
        super().__init__(
            f"{method} breaks conformance rule {rule!r}: {detail}\n  rule {rule!r}: {RULES[rule]}"
        )


@dataclass(frozen=True)
class Report:
    """What a passing :func:`check_method` checked."""

    method: str
    rules: tuple[str, ...]
    steps: int
    seconds: float


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


@dataclass
class Harness:
    """A method class wired to a tiny real pipeline: resolved config, slice cache, split and
    training streams, as the engine builds them for a run."""

    method_cls: type[Method]
    context: MethodContext
    cache: SliceCache
    split: Split
    seed: int

    @property
    def config(self) -> dict[str, Any]:
        return self.context.config

    def build(self) -> Method:
        """A fresh instance, seeded as the engine seeds a run before building its method."""
        seed_everything(self.seed)
        return self.method_cls(self.context)

    def streams(self) -> TrainStreams:
        """Fresh CPU training streams; ``streams().next(with_unlabeled=True)`` is a Batch."""
        return TrainStreams(self.cache, self.split, self.config, self.seed, torch.device("cpu"))

    def val_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` validation slices [B, 1, H, W] with their labels [B, H, W]."""
        rows = self.cache.slice_indices(self.split.val)[:size]
        images = torch.from_numpy(np.array(self.cache.images[rows]))[:, None]
        return images, torch.from_numpy(self.cache.labels[rows].astype(np.int64))


def _tiny_overrides(image_size: int, steps: int) -> dict[str, Any]:
    return {
        "data.image_size": image_size,
        "data.cases": 6,
        "train.iterations": steps,
        "train.batch_size": 2,
        "train.unlabeled_batch_size": 2,
        "eval.batch_size": 4,
    }


def _resolve(
    method_cls: type[Method], name: str, profile: str, overrides: dict[str, Any], seed: int
) -> dict[str, Any]:
    return resolve(
        method=name,
        method_options=method_cls.options,
        method_defaults=method_cls.default_config(profile),
        profile=profile,
        overrides=overrides,
        run={"dataset": "kit", "labeled": 0.5, "seed": seed},
    )


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
    over the kit's tiny settings.
    """
    name = _method_name(method_cls)
    merged = {**_tiny_overrides(image_size, steps), **(overrides or {})}
    try:
        config = _resolve(method_cls, "kit", "quick", merged, seed)
    except ConfigError as exc:
        raise ConformanceError("config", name, str(exc)) from exc
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


def _method_name(method_cls: type) -> str:
    return f"{method_cls.__module__}.{method_cls.__qualname__}"


@contextmanager
def _rule(rule: str, method: str) -> Iterator[None]:
    """Report an exception the method raises while a rule is checked as that rule's failure."""
    try:
        yield
    except ConformanceError:
        raise
    except Exception as exc:
        raise ConformanceError(rule, method, f"raised {type(exc).__name__}: {exc}") from exc


# -- side effects ------------------------------------------------------------------------------


def _forbidden_references(method_cls: type[Method]) -> list[str]:
    """Forbidden modules the method's own code holds a reference to (``import mlflow`` ...)."""
    top = method_cls.__module__.split(".")[0]
    if top == "spinebench":  # a built-in method: its module only, not the whole core
        names = [c.__module__ for c in method_cls.__mro__ if c.__module__.startswith("spinebench.")]
    else:
        names = [n for n in sys.modules if n == top or n.startswith(top + ".")]
    found = set()
    for module_name in names:
        module = sys.modules.get(module_name)
        for attr, value in vars(module).items() if module else ():
            origin = (
                value.__name__
                if isinstance(value, ModuleType)
                else getattr(value, "__module__", None)
            )
            if isinstance(origin, str) and _is_forbidden(origin):
                found.add(f"{module_name}.{attr} -> {origin}")
    return sorted(found)


def _is_forbidden(module_name: str) -> bool:
    return any(module_name == f or module_name.startswith(f + ".") for f in FORBIDDEN_MODULES)


@contextmanager
def _no_side_effects(method: str) -> Iterator[None]:
    """Refuse file writes while the method runs; afterwards compare environment and modules."""
    real_open, real_io_open, real_os_open, real_mkdir = builtins.open, io.open, os.open, os.mkdir

    def refuse(what: str) -> ConformanceError:
        return ConformanceError(
            "side_effects",
            method,
            f"{what}; a method never writes files (the engine owns every "
            "output: checkpoints, artifacts, tracking)",
        )

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+"):
            raise refuse(f"it opened {file!r} with mode {mode!r}")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS:
            raise refuse(f"it called os.open({path!r}) for writing")
        return real_os_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        raise refuse(f"it created the directory {path!r}")

    env_before = dict(os.environ)
    modules_before = set(sys.modules)
    mlflow_run_before = _mlflow_active_run()
    builtins.open, io.open, os.open, os.mkdir = (
        guarded_open,
        guarded_open,
        guarded_os_open,
        guarded_mkdir,
    )
    try:
        yield
    finally:
        builtins.open, io.open, os.open, os.mkdir = (
            real_open,
            real_io_open,
            real_os_open,
            real_mkdir,
        )
    changed = sorted(
        k for k in env_before.keys() | os.environ.keys() if env_before.get(k) != os.environ.get(k)
    )
    if changed:
        raise ConformanceError(
            "side_effects", method, f"environment variables changed: {', '.join(changed)}"
        )
    imported = sorted(m for m in set(sys.modules) - modules_before if _is_forbidden(m))
    if imported:
        raise ConformanceError(
            "side_effects", method, f"it imported {', '.join(imported)} while it ran"
        )
    if mlflow_run_before is None and _mlflow_active_run() is not None:
        raise ConformanceError("side_effects", method, "it started an MLflow run")


def _mlflow_active_run() -> Any:
    mlflow = sys.modules.get("mlflow")
    return mlflow.active_run() if mlflow is not None else None


# -- the rules ---------------------------------------------------------------------------------


def _check_config(
    method_cls: type[Method], name: str, overrides: dict[str, Any], seed: int
) -> None:
    for profile in ("quick", "paper"):
        try:
            _resolve(method_cls, "kit", profile, overrides, seed)
        except Exception as exc:
            raise ConformanceError(
                "config", name, f"profile {profile!r}: {type(exc).__name__}: {exc}"
            ) from exc


def _check_stages(method: Method, name: str) -> list[Stage]:
    with _rule("stages", name):
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
    for s in stages:
        if not isinstance(s.name, str) or not _STAGE_NAME.match(s.name):
            raise ConformanceError(
                "stages",
                name,
                f"stage name {s.name!r} must be letters, "
                "digits, '_' or '-' (it names checkpoints and caches)",
            )
        if isinstance(s.iterations, bool) or not isinstance(s.iterations, int) or s.iterations < 1:
            raise ConformanceError(
                "stages", name, f"stage {s.name!r} has iterations={s.iterations!r}"
            )
        if not s.prefix.endswith("/"):
            raise ConformanceError(
                "stages",
                name,
                f"stage {s.name!r} has prefix {s.prefix!r}; "
                "end it with '/' (losses are logged as <prefix><name>)",
            )
    if again != stages:
        raise ConformanceError(
            "stages",
            name,
            "stages() returned different stages on a second "
            f"call: {names} then {[s.name for s in again]}",
        )
    if not stages[-1].segments:
        raise ConformanceError(
            "stages",
            name,
            f"the last stage {stages[-1].name!r} has "
            "segments=False, so nothing trains what predict() returns",
        )
    return stages


def _check_placement(method: Method, name: str) -> None:
    elsewhere = [
        n
        for n, t in [*method.named_parameters(), *method.named_buffers()]
        if t.device.type != "cpu"
    ]
    if elsewhere:
        raise ConformanceError(
            "parameters",
            name,
            f"{', '.join(elsewhere[:5])} are not on the "
            "CPU after __init__; never pick a device (the engine moves the "
            "method with .to(device))",
        )


def _check_output(out: Any, stage: Stage, it: int, name: str) -> torch.Tensor:
    where = f"stage {stage.name!r} step {it}"
    if not isinstance(out, StepOutput):
        raise ConformanceError(
            "losses", name, f"{where}: training_step returned {type(out).__name__}, not StepOutput"
        )
    if "loss" not in out.losses:
        raise ConformanceError(
            "losses", name, f"{where}: losses has no 'loss' entry (keys: {sorted(out.losses)})"
        )
    for key, value in out.losses.items():
        if not _LOGGABLE.match(str(key)):
            raise ConformanceError(
                "losses",
                name,
                f"{where}: loss name {key!r} cannot be "
                "logged (letters, digits, _ . / - and space only)",
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
    for key, value in out.diagnostics.items():
        if not _LOGGABLE.match(str(key)):
            raise ConformanceError(
                "losses",
                name,
                f"{where}: diagnostic name {key!r} cannot "
                "be logged (letters, digits, _ . / - and space only)",
            )
        scalar = isinstance(value, int | float) or (torch.is_tensor(value) and value.numel() == 1)
        if not scalar:
            raise ConformanceError(
                "losses", name, f"{where}: diagnostics[{key!r}] is not a scalar: {value!r}"
            )
    return out.losses["loss"]


def _train(
    method: Method, harness: Harness, stages: list[Stage], steps: int, name: str
) -> list[tuple[str, float]]:
    """The engine's stage loop, cut to ``steps`` per stage; returns every logged loss value."""
    streams = harness.streams()
    record: list[tuple[str, float]] = []
    train_cfg = harness.config["train"]
    for stage in stages:
        with _rule("parameters", name):
            opt, sched = build_optimizer(method, stage, train_cfg)
        own = {id(p) for p in method.parameters()}
        trainable = [p for group in opt.param_groups for p in group["params"]]
        if any(id(p) not in own for p in trainable):
            raise ConformanceError(
                "parameters",
                name,
                f"trainable_parameters({stage.name!r}) "
                "yields tensors that are not parameters of the method",
            )
        with _rule("stages", name):
            method.on_stage_start(stage)
        method.train()
        for it in range(min(steps, stage.iterations)):
            batch = streams.next(stage.unlabeled, stage.strong_views)
            step = StepInfo(it, stage.iterations)
            with _rule("losses", name):
                out = method.training_step(stage, batch, step)
            loss = _check_output(out, stage, it, name)
            opt.zero_grad(set_to_none=True)
            with _rule("losses", name):
                loss.backward()
            if all(p.grad is None for p in trainable):
                raise ConformanceError(
                    "losses",
                    name,
                    f"stage {stage.name!r} step {it}: "
                    "losses['loss'] reaches none of the stage's trainable "
                    "parameters",
                )
            opt.step()
            sched.step()
            with _rule("losses", name):
                method.after_optimizer_step(stage, step)
            record += [
                (f"stage {stage.name!r} step {it} losses[{k!r}]", float(v.detach()))
                for k, v in out.losses.items()
            ]
        if not stage.segments:
            record += _check_validate_stage(method, harness, stage, name)
    return record


def _check_validate_stage(
    method: Method, harness: Harness, stage: Stage, name: str
) -> list[tuple[str, float]]:
    images, labels = harness.val_batch(3)
    method.eval()
    with _rule("validate_stage", name), torch.no_grad():
        values = method.validate_stage(stage, images, labels)
    method.train()
    if not isinstance(values, dict):
        raise ConformanceError(
            "validate_stage",
            name,
            f"stage {stage.name!r}: returned {type(values).__name__}, not a dict of numbers",
        )
    out = []
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise ConformanceError(
                "validate_stage", name, f"stage {stage.name!r}: {key!r} is not a number: {value!r}"
            ) from None
        if not math.isfinite(number):
            raise ConformanceError(
                "validate_stage", name, f"stage {stage.name!r}: {key!r} is {number}"
            )
        out.append((f"stage {stage.name!r} validate_stage[{key!r}]", number))
    return out


def _predict(method: Method, images: torch.Tensor, name: str) -> torch.Tensor:
    method.eval()
    with _rule("predict", name), torch.no_grad():
        logits = method.predict(images)
    b, _, h, w = images.shape
    expected = (b, method.ctx.num_classes, h, w)
    if not torch.is_tensor(logits):
        raise ConformanceError("predict", name, f"returned {type(logits).__name__}, not a tensor")
    if tuple(logits.shape) != expected:
        raise ConformanceError(
            "predict",
            name,
            f"returned shape {list(logits.shape)} for images "
            f"{list(images.shape)}; expected {list(expected)}",
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


def _roundtrip(state: dict[str, Any], what: str, name: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    with _rule("state_dict", name):
        torch.save(state, buffer)
    buffer.seek(0)
    try:
        return torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise ConformanceError(
            "state_dict",
            name,
            f"{what} holds objects that "
            "torch.load(weights_only=True) refuses (keep tensors and plain "
            f"containers only): {exc}",
        ) from exc


def _check_state_dict(
    method: Method, harness: Harness, stages: list[Stage], images: torch.Tensor, name: str
) -> None:
    expected = _predict(method, images, name)
    state = _roundtrip(method.state_dict(), "state_dict()", name)
    staged = {
        s.name: _roundtrip(method.stage_state_dict(s), f"stage_state_dict({s.name!r})", name)
        for s in stages
        if s.cache_key is not None
    }
    seed_everything(harness.seed + 1)  # a fresh instance must not match by sharing the init
    with _rule("state_dict", name):
        fresh = harness.method_cls(harness.context)
        fresh.load_state_dict(state)
        for s in stages:
            if s.name in staged:
                harness.method_cls(harness.context).load_stage_state_dict(s, staged[s.name])
    got = _predict(fresh, images, name)
    if not torch.equal(got, expected):
        diff = float((got - expected).abs().max())
        raise ConformanceError(
            "state_dict",
            name,
            "a fresh instance loaded with state_dict() "
            f"predicts different logits (max abs difference {diff:.3g}); keep "
            "every tensor predict() depends on in a parameter or a registered "
            "(persistent) buffer",
        )


def _check_same(
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


@contextmanager
def _kit_runtime() -> Iterator[None]:
    """Deterministic algorithms as the engine enables them on CPU, and one thread (at 32 px,
    thread start-up costs more than it saves, many times more on a busy machine); the caller's
    RNG state, determinism and thread settings are restored."""
    rng = rng_state()
    was, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        set_rng_state(rng)


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
    name = _method_name(method_cls)
    start = time.perf_counter()
    refs = _forbidden_references(method_cls)
    if refs:
        raise ConformanceError("side_effects", name, f"method code references {', '.join(refs)}")
    _check_config(
        method_cls, name, {**_tiny_overrides(image_size, steps), **(overrides or {})}, seed
    )
    with tempfile.TemporaryDirectory(prefix="spinebench-kit-") as workdir:
        harness = make_harness(
            method_cls,
            Path(workdir),
            overrides=overrides,
            image_size=image_size,
            steps=steps,
            seed=seed,
        )
        images, _ = harness.val_batch(3)
        with _kit_runtime(), _no_side_effects(name):
            with _rule("parameters", name):
                method = harness.build()
            _check_placement(method, name)
            params = {n for n, _ in method.named_parameters()}
            keys = set(method.state_dict())
            stages = _check_stages(method, name)
            losses = _train(method, harness, stages, steps, name)
            created = sorted({n for n, _ in method.named_parameters()} - params)
            changed = sorted(set(method.state_dict()) ^ keys)
            if created or changed:
                raise ConformanceError(
                    "parameters",
                    name,
                    "created or removed after __init__: "
                    f"{', '.join((created or changed)[:8])}; the engine builds "
                    "the optimiser and loads checkpoints right after __init__",
                )
            _predict(method, images[:1], name)
            _check_state_dict(method, harness, stages, images, name)
            prediction = _predict(method, images, name)
            again = harness.build()
            _check_same(
                losses,
                _train(again, harness, again.stages(), steps, name),
                prediction,
                _predict(again, images, name),
                name,
            )
    return Report(name, tuple(RULES), steps, time.perf_counter() - start)


# -- pytest plugin (entry point ``pytest11``) --------------------------------------------------


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a plugin's tests away from the user's cache, runs and tracking server."""
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPINEBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def spinebench_conformance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Report]:
    """:func:`check_method` in an isolated environment: ``spinebench_conformance(MyMethod)``."""
    _isolate(monkeypatch, tmp_path)
    return check_method


@pytest.fixture
def spinebench_harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Harness]:
    """A :class:`Harness` factory for a plugin's own unit tests of its math:
    ``h = spinebench_harness(MyMethod); h.build().training_step(...)``."""
    _isolate(monkeypatch, tmp_path)

    def factory(method_cls: type[Method], **kwargs: Any) -> Harness:
        return make_harness(method_cls, tmp_path / "kit", **kwargs)

    return factory
