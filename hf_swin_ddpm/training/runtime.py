"""How a run executes: the ``Accelerator`` (processes, mixed precision, trackers, seeded sampling), main-process-first
sections, activation checkpointing."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from .arguments import tracker_names


@contextlib.contextmanager
def main_process_first_when(accelerator, condition: bool = True):
    """``accelerator.main_process_first()`` when ``condition``, else nothing (e.g. dataset downloads)."""
    if condition:
        with accelerator.main_process_first():
            yield
    else:
        yield


def make_accelerator(args: argparse.Namespace):
    """The ``Accelerator`` of a run: gradient accumulation, mixed precision, trackers logging under
    ``output_dir/logging_dir``, and accelerate's seedable sampler (every process draws the same, seeded order)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    trackers = tracker_names(args.report_to)
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / args.logging_dir)
    )
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers or None,
        project_config=project_config,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing the library's way: transformers' `activation_checkpointing_enable` (the v5 name of
    `gradient_checkpointing_enable`) or diffusers' `enable_gradient_checkpointing`."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable()
    else:
        model.enable_gradient_checkpointing()
