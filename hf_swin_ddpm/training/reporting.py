"""Trackers and images: the flags as tracker hyperparameters, images logged to TensorBoard / W&B, sample grids."""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image


def tracker_config(args: argparse.Namespace) -> dict[str, int | float | str | bool]:
    """The flags as tracker hyperparameters (TensorBoard accepts only scalars and strings)."""
    config = {}
    for key, value in vars(args).items():
        if key == "hub_token":
            continue
        config[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return config


def log_image(accelerator, tag: str, image: Image.Image, step: int) -> None:
    """Send an image to the trackers that take images (TensorBoard, Weights & Biases). Main process only."""
    if not accelerator.is_main_process:
        return
    array = np.asarray(image.convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(tag, array, step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({tag: wandb.Image(image)}, step=step)


def upscale_for_display(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Nearest-neighbour upscale of a small image so that its short side reaches about ``min_side`` pixels."""
    factor = max(1, min_side // max(1, min(image.size)))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)
