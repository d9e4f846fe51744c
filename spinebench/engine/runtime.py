"""Device, precision, threads and determinism: the engine's choices, never a method's."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
import torch
import torch.utils.deterministic

from spinebench.engine.distributed import SINGLE, Distributed
from spinebench.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" | "bf16"
    channels_last: bool
    deterministic: bool
    threads: int  # torch's intra-op threads: CPU results are bit-identical only at one count

    def autocast(self) -> Callable[[], AbstractContextManager]:
        if self.precision == "bf16":
            return partial(torch.autocast, device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"--device {requested!r} is unknown; use auto, cpu or cuda")
    return torch.device(requested)


def setup(
    train: dict[str, Any],
    device_name: str,
    seed: int,
    dist: Distributed = SINGLE,
    poison_uninitialized: bool = False,
) -> Runtime:
    """Apply threads, seeds and determinism; resolve ``auto`` settings for the device.

    Under ``torchrun`` each process takes its local rank's GPU, or its share of the CPU cores.
    Deterministic mode makes the kernels deterministic; torch's NaN-filling of every new tensor
    that comes with it (``fill_uninitialized_memory``) only exposes reads of uninitialised
    memory, took 9.5% of a profiled CPU step's operator time (a few percent of its wall time,
    BENCHMARKS.md, "Where a step's time goes") and stays off unless ``poison_uninitialized``
    (the conformance kit, whose job is to catch such reads).
    """
    device = pick_device(device_name)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    if device.type == "cpu":
        cores = max(1, (os.cpu_count() or 1) // dist.local_world)
        torch.set_num_threads(int(train["threads"]) or cores)
    precision = train["precision"]  # one of config.CHOICES["train.precision"]
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    channels_last = train["channels_last"]
    channels_last = device.type == "cuda" if channels_last == "auto" else bool(channels_last)
    deterministic = train["deterministic"]
    deterministic = device.type == "cpu" if deterministic == "auto" else bool(deterministic)
    seed_everything(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = poison_uninitialized  # type: ignore[attr-defined]
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(device, precision, channels_last, deterministic, torch.get_num_threads())


@contextmanager
def torch_settings_kept() -> Iterator[None]:
    """Threads and determinism as the caller had them once a run is over: a sweep runs its
    cells in one process, a test suite runs many, and neither should inherit a run's choice."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    benchmark = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
        torch.backends.cudnn.benchmark = benchmark


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stage_seed(seed: int, stage_index: int) -> int:
    """The seed a stage starts from: its randomness follows from the run seed and the stage's
    position alone, never from whether earlier stages were trained, cached or resumed."""
    return seed + 1_000_003 * stage_index


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (loadable with weights_only=True)."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: The libraries whose versions decide a run's numbers on a given machine (kernels, augmentation
#: draws, resampling): CPU results can move in the third decimal between their releases.
NUMERIC_LIBRARIES = ("torch", "numpy", "scipy", "monai", "timm", "transformers")


def library_versions() -> str:
    """``torch 2.14.1, numpy 2.4.6, ...``: logged with every run (``Tag.LIBRARIES``) so that two
    runs of one config that differ can be told apart by their environment."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    return ", ".join(f"{name} {installed(name)}" for name in NUMERIC_LIBRARIES)
