"""The Space's "Interpolate" tab (route `/interpolate`): two images mixed in the diffusion latent space (Fig. 8).

A pure function of the pipeline and the form's values, returning what the tab shows: a gallery of the decoded
points (lambda = 0 ... 1) and one strip of them side by side. `app.py` wires it to gradio components.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch

from hf_swin_ddpm import DDPMPaperPipeline

MAX_POINTS = 16
MAX_SEED = 2**31 - 1
DEFAULT_T = 500
DEFAULT_POINTS = 8
DISPLAY_SIDE = 96


def _whole_number(value: Any, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high], or a `gr.Error` naming the field and the range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a whole number from {low} to {high}; got {value!r}.") from None
    if not number.is_integer() or not low <= number <= high:
        raise gr.Error(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
    return int(number)


def _as_pil(image: PIL.Image.Image | np.ndarray | None, name: str) -> PIL.Image.Image:
    if image is None:
        raise gr.Error(f"Upload {name} to interpolate from.")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            image = (
                (np.clip(image, 0, 1) * 255).round().astype(np.uint8) if image.max() <= 1 else image.astype(np.uint8)
            )
        image = PIL.Image.fromarray(image)
    return image


def _display(image: np.ndarray) -> PIL.Image.Image:
    """A (H, W, C) float image in [0, 1] as RGB, upscaled (nearest) to at least `DISPLAY_SIDE` pixels."""
    pixels = (image * 255).round().astype(np.uint8)
    pil = PIL.Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    factor = max(1, DISPLAY_SIDE // max(pil.size))
    return pil.resize((pil.width * factor, pil.height * factor), PIL.Image.NEAREST)


def interpolate(
    pipeline: DDPMPaperPipeline,
    image_a: PIL.Image.Image | np.ndarray | None,
    image_b: PIL.Image.Image | np.ndarray | None,
    t: Any = DEFAULT_T,
    num_points: Any = DEFAULT_POINTS,
    seed: Any = 0,
    num_inference_steps: Any = None,
    shared_noise: bool = True,
) -> tuple[list[tuple[PIL.Image.Image, str]], PIL.Image.Image]:
    """The `/interpolate` route: `DDPMPaperPipeline.interpolate` of the two images at timestep `t` (0-based) with
    `num_points` points; returns the gallery (captioned with lambda) and the strip."""
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    t = _whole_number(t, "t", 0, num_train_timesteps - 1)
    num_points = _whole_number(num_points, "Number of points", 2, MAX_POINTS)
    seed = _whole_number(seed, "Seed", 0, MAX_SEED)
    if num_inference_steps not in (None, ""):
        num_inference_steps = _whole_number(num_inference_steps, "Inference steps", 1, num_train_timesteps)
    else:
        num_inference_steps = None
    output = pipeline.interpolate(
        _as_pil(image_a, "image A"),
        _as_pil(image_b, "image B"),
        t=t,
        num_points=num_points,
        shared_noise=bool(shared_noise),
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_inference_steps,
        output_type="np",
    )
    shown = [_display(image) for image in output.images]
    weights = np.linspace(0, 1, num_points)
    gallery = [(image, f"lambda = {weight:.2f}") for image, weight in zip(shown, weights)]
    strip = PIL.Image.new("RGB", (sum(image.width for image in shown), shown[0].height))
    for index, image in enumerate(shown):
        strip.paste(image, (index * image.width, 0))
    return gallery, strip
