"""The training loop of one stage: steps, schedule, logging, validation, checkpoint cadence.

The loop writes nothing itself: it hands states to a :class:`CheckpointSink` (the engine's
writes files, the conformance kit's is absent) and logged values to a callback.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from spinebench.data.streams import TrainStreams
from spinebench.engine.distributed import SINGLE, Distributed
from spinebench.engine.perf import PerfMeter
from spinebench.engine.progress import StageProgress
from spinebench.engine.runtime import Runtime, set_rng_state
from spinebench.errors import ConfigError, NonFiniteLossError, PluginError, SpinebenchError
from spinebench.method import Batch, Method, Stage, StepInfo, StepOutput


class Interrupted(SpinebenchError):
    """SIGINT/SIGTERM arrived; the engine saved a checkpoint at a step boundary (the CLI shows
    it as one line, like a user error, since rerunning the command resumes)."""


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (a second SIGINT aborts now)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class TrainState:
    """Everything that resumes a run exactly; saved in each checkpoint."""

    stage_index: int = 0
    iteration: int = 0
    best_score: float = -math.inf
    best_iteration: int = -1
    skipped_steps: int = 0
    done_stages: list[str] = field(default_factory=list)


def build_optimizer(
    method: Method, stage: Stage, train: dict[str, Any]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD or AdamW with a poly schedule over the stage's iterations."""
    spec = stage.optimizer
    name = spec.name or train["optimizer"]
    lr = spec.lr if spec.lr is not None else train["lr"]
    wd = spec.weight_decay if spec.weight_decay is not None else train["weight_decay"]
    momentum = spec.momentum if spec.momentum is not None else train["momentum"]
    power = spec.poly_power if spec.poly_power is not None else train["poly_power"]
    params = list(method.trainable_parameters(stage))
    if not params:
        raise ConfigError(f"stage {stage.name!r} has no trainable parameters")
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=wd
        )
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    else:
        raise ConfigError(f"optimizer {name!r} is unknown; use sgd or adamw")
    total = max(stage.iterations, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: (1 - min(it, total - 1) / total) ** power
    )
    return opt, sched


class CheckpointSink(Protocol):
    """Where the loop sends the states it would have a run keep."""

    def save_best(self, method: Method) -> None:
        """The method after the best validation score so far."""

    def save(
        self,
        method: Method,
        state: TrainState,
        opt: torch.optim.Optimizer | None,
        sched: Any,
        streams: TrainStreams,
    ) -> None:
        """Everything needed to resume here (at a stage boundary there is no optimiser)."""


class StepObserver(Protocol):
    """Watches each step from outside the method (the conformance kit's rules)."""

    def before_step(self, method: Method, stage: Stage, batch: Batch, step: StepInfo) -> None: ...
    def after_forward(self, stage: Stage, step: StepInfo, out: StepOutput) -> None: ...
    def after_backward(self, stage: Stage, step: StepInfo, params: list[torch.Tensor]) -> None: ...


@dataclass
class StageContext:
    """What the loop needs beyond the method: data, runtime, callbacks into the engine.

    ``max_steps`` caps the steps this call trains (the kit's short checks); ``checkpoints``
    None keeps nothing; ``observer`` sees every step.
    """

    streams: TrainStreams
    runtime: Runtime
    train: dict[str, Any]
    log: Callable[[dict[str, float], int], None]
    validate: Callable[[Stage], dict[str, float]]
    progress: StageProgress
    stop: StopFlag
    checkpoints: CheckpointSink | None = None
    global_step_offset: int = 0
    dist: Distributed = SINGLE
    max_steps: int | None = None
    observer: StepObserver | None = None


def _outputs(out: Any, stage: Stage, it: int) -> StepOutput:
    """A step's output, or a one-line error naming the broken promise."""
    if not isinstance(out, StepOutput) or "loss" not in out.losses:
        got = type(out).__name__ if not isinstance(out, StepOutput) else sorted(out.losses)
        raise PluginError(
            f"training_step of stage {stage.name!r} at iteration {it} returned {got}; it must "
            "return a StepOutput whose losses hold 'loss' (check it with spinebench.testing)"
        )
    return out


def run_stage(
    method: Method,
    stage: Stage,
    state: TrainState,
    ctx: StageContext,
    resume: dict[str, Any] | None,
) -> None:
    """Train ``stage`` from ``state.iteration`` to its budget (or ``ctx.max_steps`` steps).

    ``resume``: a checkpoint written inside this stage; its model, optimiser, schedule and
    random state replace the fresh ones, so the run goes on exactly as if never stopped.
    """
    train, dist, observer = ctx.train, ctx.dist, ctx.observer
    method.on_stage_start(stage)
    opt, sched = build_optimizer(method, stage, train)
    params = [p for group in opt.param_groups for p in group["params"]]
    if resume is not None:  # undo whatever on_stage_start changed, exactly
        method.load_state_dict(resume["method"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        set_rng_state(resume["rng"])
    method.train()
    autocast = ctx.runtime.autocast()
    log_every, val_every = int(train["log_every"]), int(train["val_every"])
    ckpt_every = int(train["checkpoint_every"])
    check_every_step = ctx.runtime.device.type == "cpu" or train["skip_nonfinite"]
    perf = PerfMeter(ctx.runtime.device)
    sums: dict[str, torch.Tensor | float] = {}
    count = 0
    ctx.progress.start(stage, state.iteration)
    it = state.iteration
    end = stage.iterations if ctx.max_steps is None else min(stage.iterations, it + ctx.max_steps)
    while it < end:
        perf.data_start()
        batch = ctx.streams.next(
            stage.unlabeled, stage.strong_views, stage.labeled_strong_views > 0
        )
        if ctx.runtime.channels_last:
            batch.image = batch.image.contiguous(memory_format=torch.channels_last)
        perf.data_end()
        step = StepInfo(it, stage.iterations)
        if observer is not None:
            observer.before_step(method, stage, batch, step)
        if train["skip_nonfinite"]:  # a skipped step must not leave NaN in BatchNorm statistics
            buffers = {k: v.clone() for k, v in method.named_buffers()}
        with autocast():
            out = _outputs(method.training_step(stage, batch, step), stage, it)
        if observer is not None:
            observer.after_forward(stage, step, out)
        loss = out.losses["loss"]
        finite = not check_every_step or not dist.any(not bool(torch.isfinite(loss)))
        if not finite and not train["skip_nonfinite"]:
            bad = [
                k
                for k, v in out.losses.items()
                if k != "loss" and not bool(torch.isfinite(v).all())
            ]
            raise NonFiniteLossError(
                f"non-finite loss in stage {stage.name!r} at iteration {it} "
                f"(terms: {', '.join(bad) or 'loss'}); lower train.lr or set "
                "train.skip_nonfinite=true"
            )
        opt.zero_grad(set_to_none=True)
        if finite:
            loss.backward()
            if observer is not None:
                observer.after_backward(stage, step, params)
            dist.average_gradients(params)
            opt.step()
            method.after_optimizer_step(stage, step)
            for k, v in out.losses.items():
                sums[stage.prefix + k] = sums.get(stage.prefix + k, 0) + v.detach().float()
            for k, d in out.diagnostics.items():
                sums[k] = sums.get(k, 0) + (d.detach().float() if torch.is_tensor(d) else d)
            count += 1
        else:  # train.skip_nonfinite: no update, but the schedule and the budget move on
            state.skipped_steps += 1
            with torch.no_grad():
                for k, v in method.named_buffers():
                    v.copy_(buffers[k])
        sched.step()
        it += 1
        state.iteration = it
        perf.step_end()
        if count and (it % log_every == 0 or it == stage.iterations):
            values = {k: float(v) / count for k, v in sums.items()}
            if not check_every_step and not math.isfinite(values.get(stage.prefix + "loss", 0)):
                raise NonFiniteLossError(
                    f"non-finite loss in stage {stage.name!r} before iteration {it}; lower "
                    "train.lr or set train.skip_nonfinite=true"
                )
            values[f"{stage.prefix}lr"] = opt.param_groups[0]["lr"]
            values.update(perf.summary(stage.prefix.replace("/", "") or stage.name))
            ctx.log(values, ctx.global_step_offset + it)
            ctx.progress.update(it, values.get(stage.prefix + "loss"))
            sums, count = {}, 0
        else:
            ctx.progress.update(it, None)
        if it % val_every == 0 or it == end:  # rank 0 validates, every rank hears the numbers
            scores = dist.broadcast(ctx.validate(stage) if dist.main else {})
            method.on_validated(stage, scores)
            score = scores.get("val/dice")
            if dist.main:
                ctx.log(scores, ctx.global_step_offset + it)
            if stage.segments and score is not None and score > state.best_score:
                state.best_score, state.best_iteration = score, it
                if ctx.checkpoints is not None and dist.main:
                    ctx.checkpoints.save_best(method)
        stopping = dist.any(ctx.stop.signal is not None)  # every rank stops at the same step
        if ctx.checkpoints is not None and dist.main and (it % ckpt_every == 0 or stopping):
            ctx.checkpoints.save(method, state, opt, sched, ctx.streams)
        if stopping:
            raise Interrupted(
                f"stopped by signal {ctx.stop.signal or 'on another rank'} in stage "
                f"{stage.name!r} at iteration {it}; the checkpoint is saved: rerun the same "
                "command to resume"
            )
    ctx.progress.finish(stage)
