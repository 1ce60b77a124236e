"""The resumable training loop: batches epoch after epoch from a saved position, the run's length, the running loss.

A resumed run sees exactly the batches, augmentations and random draws an uninterrupted run would have seen: the data
position (:class:`TrainingProgress`) is saved in every checkpoint, each epoch re-seeds the data order and the
augmentation, and fetching batches never moves the global torch RNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from accelerate.logging import get_logger
from tqdm.auto import tqdm

from .checkpoints import CHECKPOINT_PREFIX, TrainingProgress, last_checkpoint_unchanged, save_checkpoint
from .errors import TrainingError, TrainingStopped

logger = get_logger(__name__)


def batches_leaving_global_rng(dataloader: Iterable) -> Iterator:
    """Iterate ``dataloader`` without moving the global torch RNG, which drives the training noise and dropout.

    A DataLoader without its own generator draws its base seed from the global RNG when it starts; accelerate's
    loaders that skip the batches of a stream on resume are such loaders. Fetching every batch inside
    ``torch.random.fork_rng`` keeps a resumed run's random draws the same as an uninterrupted run's.
    """
    iterator = iter(dataloader)
    while True:
        with torch.random.fork_rng(devices=[]):
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


def resumable_batches(
    accelerator, dataloader, transform, progress: TrainingProgress, max_train_steps: int, streaming: bool
) -> Iterator:
    """The training batches, epoch after epoch, from where ``progress`` stands until ``max_train_steps``.

    Each epoch re-seeds the data order and the augmentation (``set_epoch``); a resumed run first skips the batches
    ``progress`` says its epoch already consumed. ``progress.batches_in_epoch`` counts each batch as it is handed
    out and ``progress.epoch`` advances when an epoch is exhausted; the caller advances ``progress.global_step``.
    """
    while progress.global_step < max_train_steps:
        dataloader.set_epoch(progress.epoch)
        transform.set_epoch(progress.epoch)
        batches = dataloader
        if progress.batches_in_epoch:
            batches = accelerator.skip_first_batches(dataloader, progress.batches_in_epoch)
        batches_before = progress.batches_in_epoch
        for batch in batches_leaving_global_rng(batches):
            progress.batches_in_epoch += 1
            yield batch
            if progress.global_step >= max_train_steps:
                return
        if progress.batches_in_epoch == batches_before == 0 and streaming:  # (a resumed epoch may be all skipped)
            raise TrainingError("the training stream yielded no batches")
        progress.epoch += 1
        progress.batches_in_epoch = 0


def resolve_training_length(
    args: argparse.Namespace, batches_per_epoch: int | None, default_num_epochs: int
) -> tuple[int, int, int | None]:
    """``(max_train_steps, num_epochs, updates_per_epoch)`` from ``--max_train_steps`` / ``--num_epochs``.

    ``batches_per_epoch`` is per process (None for streams, which then need ``--max_train_steps``).
    """
    if batches_per_epoch is None:
        return args.max_train_steps, 1, None
    if batches_per_epoch == 0:
        raise TrainingError("the training data is smaller than one batch per process; lower --train_batch_size")
    updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    if args.max_train_steps is not None:
        return args.max_train_steps, math.ceil(args.max_train_steps / updates_per_epoch), updates_per_epoch
    num_epochs = args.num_epochs or default_num_epochs
    return num_epochs * updates_per_epoch, num_epochs, updates_per_epoch


class RunningLoss:
    """The training loss since the last log, kept as a tensor so that the steps between logs never wait for it."""

    def __init__(self, device: torch.device, last: float | None = None) -> None:
        self.total = torch.zeros((), device=device)
        self.count = 0
        self.last = last  # the mean of the last logged window (a resumed run starts from its checkpoint's)

    def add(self, loss: torch.Tensor) -> None:
        self.total, self.count = self.total + loss, self.count + 1

    def log(self, accelerator, progress_bar, step: int, lr: float, epoch: int, **extra: float) -> float:
        """The mean since the last log, averaged over all processes (a collective: call it on every process), logged
        with the learning rate, the epoch and ``extra`` to the trackers and the progress bar; the window restarts."""
        mean = self.total / max(self.count, 1)
        self.last = accelerator.reduce(mean.reshape(1), reduction="mean").item()
        self.total, self.count = torch.zeros_like(self.total), 0
        accelerator.log({"loss": self.last, "lr": lr, "epoch": epoch, **extra}, step=step)
        progress_bar.set_postfix(loss=f"{self.last:.4f}", lr=f"{lr:.2e}")
        return self.last


def steps_progress_bar(accelerator, max_train_steps: int, progress: TrainingProgress) -> tqdm:
    """The ``Steps`` bar of the local main process, starting where ``progress`` stands."""
    return tqdm(
        total=max_train_steps,
        initial=progress.global_step,
        disable=not accelerator.is_local_main_process,
        desc="Steps",
    )


@dataclasses.dataclass
class LoopClock:
    """Wall time and steps of this process's part of the run (a resumed run counts from where it resumed)."""

    start_step: int
    start_time: float = dataclasses.field(default_factory=time.perf_counter)

    def results(self, accelerator, progress: TrainingProgress, loss: RunningLoss, total_batch_size: int) -> dict:
        """The ``all_results.json`` entries of the loop: steps, epoch, processes, last loss, runtime, speed."""
        seconds = time.perf_counter() - self.start_time
        return {
            "global_step": progress.global_step,
            "epoch": progress.epoch,
            "num_processes": accelerator.num_processes,
            "train_loss": loss.last,
            "train_runtime": round(seconds, 2),
            "train_steps_per_second": round((progress.global_step - self.start_step) / max(seconds, 1e-9), 3),
            "total_train_batch_size": total_batch_size,
            "skipped_nonfinite_steps": progress.skipped_nonfinite_steps,
        }


# SLURM and Kubernetes send SIGTERM before killing a job (SLURM's --signal=USR1@N sends SIGUSR1 N seconds ahead).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopSignals:
    """SIGTERM, SIGINT and SIGUSR1 as a request to stop after the current optimizer step, with a checkpoint.

    Inside the ``with`` block the first of these signals is recorded (nothing is interrupted); a second one is
    reported and otherwise ignored, so that the checkpoint being written completes (a SIGKILL still stops the run at
    once, and the atomic save then leaves the previous checkpoints as they were). :meth:`requested` asks every
    process (a collective), so that all of them stop at the same step even when only one was signalled.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        try:
            self._previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        except ValueError:  # not the main thread of the main interpreter: leave the handlers alone
            self._previous = {}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = number
            print(
                f"{signal.Signals(number).name} received: stopping after this optimizer step with a checkpoint",
                flush=True,
            )
        else:
            print(f"{signal.Signals(number).name} received again: still writing the checkpoint", flush=True)

    def requested(self, accelerator) -> bool:
        """Whether any process received a stop signal (all processes must call this at the same step)."""
        flag = torch.tensor([self.local_flag], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    @property
    def local_flag(self) -> int:
        """1 when this process received a stop signal, else 0 (what the processes sum to agree)."""
        return 0 if self.received is None else 1

    @property
    def exit_status(self) -> int:
        """128 + the signal number, as a shell reports a process stopped by it (SIGTERM of another process: 143)."""
        return 128 + int(self.received or signal.SIGTERM)


@dataclasses.dataclass
class NonFiniteGuard:
    """Keeps a non-finite loss or gradient norm away from the weights.

    At every optimizer step (after the gradients are synchronised, before the optimizer steps) the processes agree
    (a collective) whether any micro-batch loss or the global gradient norm was NaN or infinite. If so, the update is
    skipped while ``max_skipped`` allows (the batches stay consumed, so a resumed run skips the same ones), else the
    run stops with a one-line error naming the step and the batch; nothing is written, so the last checkpoint stays as
    it was. With fp16 the gradients are left to the ``GradScaler`` (which skips overflowing steps itself) and only the
    loss is checked.
    """

    progress: TrainingProgress
    output_dir: str
    max_skipped: int = 0
    skipped_last: bool = False
    _losses: list[torch.Tensor] = dataclasses.field(default_factory=list)  # the micro-batches' since the last step
    # The stop signals whose flag rides on the same collective (one reduction per step for both questions), and
    # the agreed answer of the last check: None until a check ran since the answer was last taken.
    stop_signals: StopSignals | None = None
    stop_agreed: bool | None = None
    # The global gradient norm of the last check (None with fp16's GradScaler): clipping reuses it.
    gradient_norm: torch.Tensor | None = None

    def see_loss(self, loss: torch.Tensor) -> None:
        """Keep a micro-batch loss for the check at the optimizer step (no device synchronisation here)."""
        self._losses.append(loss.detach().float().reshape(()))

    def skip_update(self, accelerator, parameters: Iterable[torch.nn.Parameter]) -> bool:
        """Whether this optimizer step must be skipped (raises ``TrainingError`` when the budget is spent). One
        collective and one device synchronisation per optimizer step, whatever the gradient accumulation."""
        losses, self._losses = torch.stack(self._losses), []
        finite = torch.isfinite(losses).all()
        norm = None
        if accelerator.scaler is None:
            gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
            norm = torch.nn.utils.get_total_norm(gradients) if gradients else torch.zeros((), device=losses.device)
            finite = finite & torch.isfinite(norm).to(finite.device)
        self.gradient_norm = norm
        stop = 0 if self.stop_signals is None else self.stop_signals.local_flag
        flags = torch.stack([(~finite).to(torch.int64).reshape(()), torch.tensor(stop, device=finite.device)])
        bad_count, stop_count = accelerator.reduce(flags.to(accelerator.device), reduction="sum").tolist()
        self.skipped_last = bad = bad_count > 0
        self.stop_agreed = stop_count > 0 if self.stop_signals is not None else None
        if not bad:
            return False
        bad_losses = losses[~torch.isfinite(losses)]
        if bad_losses.numel():
            what = f"loss {float(bad_losses[0])}"
        elif norm is not None and not torch.isfinite(norm):
            what = f"gradient norm {float(norm)}"
        else:
            what = "loss or gradient norm (on another process)"
        where = (
            f"optimizer step {self.progress.global_step + 1} (epoch {self.progress.epoch}, "
            f"batch {self.progress.batches_in_epoch} of the epoch)"
        )
        if self.progress.skipped_nonfinite_steps < self.max_skipped:
            self.progress.skipped_nonfinite_steps += 1
            logger.warning(
                f"non-finite {what} at {where}: update skipped "
                f"({self.progress.skipped_nonfinite_steps} of --max_skipped_nonfinite_steps {self.max_skipped})",
                main_process_only=True,
            )
            return True
        raise TrainingError(
            f"non-finite {what} at {where}; no weight was updated with it and "
            f"{last_checkpoint_unchanged(self.output_dir)}. Lower --learning_rate or check the data, or pass "
            "--max_skipped_nonfinite_steps N to skip up to N such batches"
        )


@dataclasses.dataclass
class OptimizerSteps:
    """The optimizer steps of a run, with the bookkeeping both scripts do at every one of them.

    Iterating ``steps(batches, train_step)`` runs ``train_step(batch)`` (forward, backward, optimizer step under
    ``accelerator.accumulate``; it returns the loss) on each batch and yields the global step after each optimizer
    step, that is, once gradients were synchronised (every ``--gradient_accumulation_steps`` batches). When the caller
    has done its own work at that step (EMA update, samples, evaluation), the loss is logged every ``--logging_steps``
    and at the last step, a checkpoint is written every ``--checkpointing_steps``, and the loop stops at
    ``max_train_steps``. Every process runs the same steps (logging and checkpoints are collectives).
    """

    accelerator: Any
    args: argparse.Namespace
    progress: TrainingProgress
    max_train_steps: int
    lr_scheduler: Any
    ema: Any = None
    log_extra: Callable[[], dict[str, float]] = dict

    def __post_init__(self) -> None:
        self.progress_bar: tqdm | None = None  # shown once the stop signals are handled (see steps)
        self.running_loss = RunningLoss(self.accelerator.device, last=self.progress.train_loss)
        self.clock = LoopClock(start_step=self.progress.global_step)
        max_skipped = getattr(self.args, "max_skipped_nonfinite_steps", 0) or 0
        self.stop_signals = StopSignals()
        self.guard = NonFiniteGuard(self.progress, self.args.output_dir, max_skipped, stop_signals=self.stop_signals)

    def steps(self, batches: Iterable, train_step: Callable[[Any], torch.Tensor]) -> Iterator[int]:
        with self.stop_signals:
            # the bar appears only now: a signal sent once it shows a step is always handled (never the default
            # action of the signal, which would end the process without a checkpoint)
            self.progress_bar = steps_progress_bar(self.accelerator, self.max_train_steps, self.progress)
            yield from self._steps(batches, train_step)
        self.progress_bar.close()

    def _steps(self, batches: Iterable, train_step: Callable[[Any], torch.Tensor]) -> Iterator[int]:
        for batch in batches:
            loss = train_step(batch)
            if self.guard.skipped_last:  # a non-finite step: no update, no count (see NonFiniteGuard)
                self.guard.skipped_last = False
                continue
            self.running_loss.add(loss)
            if not self.accelerator.sync_gradients:
                continue
            self.progress.global_step += 1
            self.progress_bar.update(1)
            step = self.progress.global_step
            yield step
            if step % self.args.logging_steps == 0 or step == self.max_train_steps:
                lr = self.lr_scheduler.get_last_lr()[0]
                self.progress.train_loss = self.running_loss.log(
                    self.accelerator, self.progress_bar, step, lr, self.progress.epoch, **self.log_extra()
                )
            if step % self.args.checkpointing_steps == 0:
                logger.info(f"Saved {self._save(step)}", main_process_only=True)
            if self._stop_requested(step):
                self._stop_with_checkpoint(step)
            if step >= self.max_train_steps:
                break

    def _stop_requested(self, step: int) -> bool:
        """Whether any process received a stop signal. The non-finite guard's collective of this step carried the
        flags (one reduction per step); without a guard check at this step, and at the last step (so that a signal
        received during it still saves and stops as before), a collective of its own asks."""
        agreed, self.guard.stop_agreed = self.guard.stop_agreed, None
        if agreed is None or step >= self.max_train_steps:
            return self.stop_signals.requested(self.accelerator)
        return agreed

    def _save(self, step: int) -> Path:
        """The checkpoint of ``step`` (every process), the oldest beyond ``--checkpoints_total_limit`` removed."""
        args = self.args
        return save_checkpoint(
            self.accelerator, args.output_dir, step, args.checkpoints_total_limit, self.progress, self.ema
        )

    def _stop_with_checkpoint(self, step: int) -> None:
        """Write the checkpoint of ``step`` (unless it was just written) and stop the run (``TrainingStopped``)."""
        self.progress_bar.close()
        if step % self.args.checkpointing_steps == 0:  # written a moment ago
            path = Path(self.args.output_dir) / f"{CHECKPOINT_PREFIX}{step}"
        else:
            path = self._save(step)
        name = signal.Signals(self.stop_signals.received or signal.SIGTERM).name
        raise TrainingStopped(
            f"stopped by {name} after optimizer step {step}; saved {path}. Resume with the same command and "
            "--resume_from_checkpoint auto",
            exit_status=self.stop_signals.exit_status,
            show=self.accelerator.is_main_process,
        )

    def results(self, total_batch_size: int) -> dict[str, Any]:
        """The loop's entries of ``all_results.json`` (see :meth:`LoopClock.results`)."""
        return self.clock.results(self.accelerator, self.progress, self.running_loss, total_batch_size)


def accumulated_step(
    accelerator,
    model,
    optimizer,
    lr_scheduler,
    compute_loss: Callable[[], torch.Tensor],
    max_grad_norm: float | None,
    guard: NonFiniteGuard | None = None,
) -> torch.Tensor:
    """One micro-batch under ``accelerator.accumulate``: ``compute_loss()``, backward, and at accumulation boundaries
    the optional clipping to ``max_grad_norm`` and the optimizer / LR step, unless ``guard`` finds the loss or the
    gradients non-finite (then the gradients are dropped and nothing steps). Returns the detached loss."""
    with accelerator.accumulate(model):
        loss = compute_loss()
        if guard is not None:
            guard.see_loss(loss)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            if guard is not None and guard.skip_update(accelerator, model.parameters()):
                optimizer.zero_grad(set_to_none=True)
                return loss.detach()
            if max_grad_norm:
                clip_gradients(accelerator, model, max_grad_norm, guard)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()


# accelerate's clip_grad_norm_ is torch's there (no sharded or XLA parameters, no gradient scaler to unscale first)
_PLAIN_CLIPPING = ("NO", "MULTI_CPU", "MULTI_GPU")


def clip_gradients(accelerator, model, max_grad_norm: float, guard: NonFiniteGuard | None) -> None:
    """Clip the gradients to the global norm ``max_grad_norm``. With the guard's norm of this step at hand, and where
    ``accelerator.clip_grad_norm_`` would be torch's ``clip_grad_norm_``, only the scaling pass runs
    (``clip_grads_with_norm_``: the same formula on the same norm, so the weights are bit-identical) instead of a
    second pass over all the gradients to compute the norm again."""
    norm = guard.gradient_norm if guard is not None else None
    if norm is None or accelerator.scaler is not None or accelerator.distributed_type.name not in _PLAIN_CLIPPING:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        return
    gradients = [parameter for parameter in model.parameters() if parameter.grad is not None]
    torch.nn.utils.clip_grads_with_norm_(gradients, max_grad_norm, norm)
