"""How a run executes: the ``Accelerator`` (processes, mixed precision, trackers, seeded sampling), main-process-first
sections, activation checkpointing, and the speed options (``--torch_compile``, ``--channels_last``)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from .arguments import WARMUP_STABLE_DECAY, tracker_names
from .errors import TrainingError


@contextlib.contextmanager
def main_process_first_when(accelerator, condition: bool = True):
    """``accelerator.main_process_first()`` when ``condition``, else nothing (e.g. dataset downloads)."""
    if condition:
        with accelerator.main_process_first():
            yield
    else:
        yield


def start_run(args: argparse.Namespace):
    """A run's first step in both training scripts: its `Accelerator` (`make_accelerator`), the output folder
    (made by the main process), and the same initial weights on every process (`set_seed`). Returns the accelerator
    and the output folder."""
    from accelerate.utils import set_seed

    accelerator = make_accelerator(args)
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    return accelerator, output_dir


def end_run(accelerator) -> None:
    """A run's last step in both training scripts, once the caller has dropped its own references to the prepared
    (DDP-wrapped) model: every process waits for the others, accelerate's references to the prepared objects are
    released (``free_memory``), then the trackers finish and the process group is destroyed (``end_training``).

    The order matters with several processes. DDP's ``Reducer`` holds the process group. A ``Reducer`` freed after
    ``destroy_process_group`` drops the group's last reference with the GIL held, and gloo's destructor then joins its
    worker threads, one of which may still be freeing a finished barrier's tensors, which needs the GIL: the process
    never exits. Freed first, the ``Reducer`` only drops a reference, and ``destroy_process_group`` frees the group
    through torch's binding, which releases the GIL."""
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    accelerator.end_training()


def make_accelerator(args: argparse.Namespace):
    """The ``Accelerator`` of a run: gradient accumulation, mixed precision, trackers logging under
    ``output_dir/logging_dir``, and accelerate's seedable sampler (every process draws the same, seeded order)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    trackers = tracker_names(args.report_to)
    forget_other_mixed_precision(args.mixed_precision)
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / args.logging_dir)
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers or None,
        project_config=project_config,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu" and not cpu_has_fast_bf16():
        accelerator.print(
            "warning: this CPU has no bf16 instructions (AVX-512 BF16 / AMX): under bf16 autocast the convolutions "
            "take torch's slow path, 7-11x slower than fp32 here (benchmarks/bench_training_options.py); drop "
            "--mixed_precision bf16"
        )
    return accelerator


def learning_rate_schedule(args: argparse.Namespace, accelerator, optimizer, max_train_steps: int, power: float = 1.0):
    """The ``LambdaLR`` of ``--lr_scheduler`` after ``--lr_warmup_steps`` of linear warm-up: a name of diffusers'
    ``get_scheduler`` (``power``: that of ``polynomial``), or ``warmup_stable_decay`` (transformers'
    ``get_wsd_schedule``: constant after the warm-up, then a cosine decay to 0 over the last ``--lr_decay_steps``;
    until the decay it is ``constant_with_warmup``, so a constant run's checkpoint resumes into it exactly). Stepped
    once per process by accelerate, so the steps are counted in process-steps."""
    from diffusers.optimization import get_scheduler

    processes = accelerator.num_processes
    if args.lr_scheduler != WARMUP_STABLE_DECAY:
        return get_scheduler(
            args.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=args.lr_warmup_steps * processes,
            num_training_steps=max_train_steps * processes,
            power=power,
        )
    from transformers.optimization import get_wsd_schedule

    warmup, decay = args.lr_warmup_steps or 0, args.lr_decay_steps
    if not decay or warmup + decay > max_train_steps:
        raise TrainingError(
            f"--lr_scheduler {WARMUP_STABLE_DECAY} needs --lr_decay_steps N with --lr_warmup_steps + N at most the "
            f"run's {max_train_steps} optimizer steps (got {warmup} + {decay})"
        )
    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup * processes,
        num_stable_steps=(max_train_steps - warmup - decay) * processes,
        num_decay_steps=decay * processes,
    )


def learning_rate_schedule_description(args: argparse.Namespace, power: float = 1.0) -> str:
    """``--lr_scheduler`` in words for a model card: its name, the warm-up, and the decay of ``warmup_stable_decay``
    or the ``power`` of ``polynomial`` (the shape :func:`learning_rate_schedule` builds with the same ``power``)."""
    described = args.lr_scheduler
    if args.lr_scheduler == "polynomial":
        described += f" (power {power})"
    described += f", {args.lr_warmup_steps or 0} warm-up steps"
    if args.lr_scheduler == WARMUP_STABLE_DECAY:
        described += f", cosine decay to 0 over the last {args.lr_decay_steps} steps"
    return described


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions and matmuls natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing the library's way: transformers' `activation_checkpointing_enable` (the v5 name of
    `gradient_checkpointing_enable`) or diffusers' `enable_gradient_checkpointing`."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable()
    else:
        model.enable_gradient_checkpointing()


def forget_other_mixed_precision(mixed_precision: str | None) -> None:
    """Let a run in this process use another mixed precision than an earlier run in it (the demo recipes, the tests):
    accelerate keeps one ``AcceleratorState`` per process, refuses to change its mixed precision, and silently keeps
    it for a run that asks for the default. Only that state is forgotten; the processes' state (``PartialState``:
    the process group, the device) stays. ``None`` means accelerate's default (``ACCELERATE_MIXED_PRECISION``)."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import parse_choice_from_env

    state = AcceleratorState._shared_state
    requested = mixed_precision or parse_choice_from_env("ACCELERATE_MIXED_PRECISION", "no")
    if state and state.get("_mixed_precision") != requested.lower():
        AcceleratorState._reset_state(reset_partial_state=False)


def training_forward_module(model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """The module that runs the training forward: ``model`` itself, or with ``--torch_compile`` a ``torch.compile``
    of it (``--torch_compile_mode``). The compiled module shares ``model``'s parameters, so backward, clipping, the
    optimizer, the EMA, checkpoints and the saved model all use ``model``: no ``_orig_mod.`` prefixes anywhere, and
    evaluation and sampling run eagerly."""
    if not getattr(args, "torch_compile", False):
        return model
    mode = args.torch_compile_mode or "default"
    return torch.compile(model, mode=None if mode == "default" else mode)  # inductor, torch.compile's default backend


def use_channels_last(model: torch.nn.Module, args: argparse.Namespace) -> torch.nn.Module:
    """With ``--channels_last``, the model's 4-d weights channels-last (NHWC), in place; call before the optimizer
    is built. The values are unchanged; checkpoints and the saved model store them contiguous as always."""
    if getattr(args, "channels_last", False):
        model.to(memory_format=torch.channels_last)
    return model


def channels_last_images(images: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """A batch of images (N, C, H, W) in the memory format of ``--channels_last`` (the values are unchanged)."""
    if getattr(args, "channels_last", False) and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
