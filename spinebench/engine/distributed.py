"""Data-parallel training across processes started by ``torchrun`` (NCCL on GPUs, gloo on CPU).

Every rank draws the same global batch from identically seeded streams and trains on its own
contiguous share of it; gradients are averaged in one flat all-reduce after ``backward``, so any
method (whatever modules its ``training_step`` touches) trains as one process would on the
global batch. Rank 0 alone tracks, checkpoints, validates, tests and prints; the others follow.
Small control messages (stop requests, decisions, run ids) travel on a gloo group, so they never
synchronise a GPU stream.

``SPINEBENCH_DISTRIBUTED=1`` under ``torchrun`` joins the process group even at world size 1
(``torchrun --standalone --nproc_per_node 1 -m spinebench run ...``): the data-parallel code
(NCCL group on a GPU, gradient all-reduce, SyncBatchNorm conversion, broadcasts) then runs on a
single GPU, which is how it is checked where only one GPU is at hand. A world of one computes
what a plain run computes; several ranks still need several GPUs to be checked.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from spinebench.errors import ConfigError

T = TypeVar("T")

#: Set to 1 (under torchrun) to join the process group at any world size, 1 included.
FORCE_ENV = "SPINEBENCH_DISTRIBUTED"


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; ``world == 1`` is the ordinary single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    control: Any = None  # gloo process group for control messages
    forced: bool = False  # a process group at world size 1 (SPINEBENCH_DISTRIBUTED=1)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether this process is in a process group (several ranks, or one when forced)."""
        return self.world > 1 or self.forced

    @property
    def shard(self) -> tuple[int, int]:
        """(index, count) of this rank's part of every global batch."""
        return self.rank, self.world

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on at least one rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks. A gradient missing on some ranks counts
        as zero there; one missing on every rank stays missing, so optimisers skip that
        parameter (no weight decay, no moment update) exactly as in a single process."""
        if not self.enabled or not params:
            return
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
        dist.all_reduce(present, op=dist.ReduceOp.MAX, group=self.control)  # host side: no sync
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        start = 0
        for p, g, anywhere in zip(params, grads, present.tolist(), strict=True):
            n = g.numel()
            p.grad = flat[start : start + n].view_as(g) if anywhere else None
            start += n

    def sync_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (after a stage loads weights
        on rank 0 only, or to make sure all ranks start alike)."""
        if not self.enabled:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = Distributed()


def forced() -> bool:
    """Whether ``SPINEBENCH_DISTRIBUTED`` asks for a process group at any world size."""
    return os.environ.get(FORCE_ENV, "").strip().lower() in ("1", "true", "yes")


def from_environment(device_type: str) -> Distributed:
    """Join the job ``torchrun`` describes in the environment, or run alone without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    force = forced()
    if world <= 1 and not force:
        return SINGLE
    if world <= 1 and "MASTER_ADDR" not in os.environ:
        raise ConfigError(
            f"{FORCE_ENV}=1 joins a process group and needs torchrun's environment: "
            "torchrun --standalone --nproc_per_node 1 -m spinebench run ..."
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    control = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    joined = Distributed(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=local_rank,
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        control=control,
        forced=force,
    )
    if force and joined.main:
        print(
            f"spinebench: process group {dist.get_backend()} initialised, world size "
            f"{joined.world} ({FORCE_ENV}=1)",
            file=sys.stderr,
            flush=True,
        )
    return joined
