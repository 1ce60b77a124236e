"""The Generate tab (`/generate`): DDPM samples (Algorithm 2 of Ho et al. 2020) and the denoising trajectory."""

from __future__ import annotations

import math
import time
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch
from image_inputs import MAX_SEED, figure_to_image, require_whole_number
from matplotlib.figure import Figure

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler

MAX_NUM_IMAGES = 16
MAX_INFERENCE_STEPS = 1000
DEFAULT_NUM_IMAGES = 8
DEFAULT_INFERENCE_STEPS = 250
TRAJECTORY_FRAMES = 8
GALLERY_DISPLAY_SIDE = 128  # samples are upscaled (nearest) to about this side
CANVAS_CELL_SIDE = 36  # "Segment these": each sample's side on the canvas (the demo segmenter's digits: 24-48 px)
CANVAS_MIN_SIDE = 96  # ... on a canvas at least this big (the demo segmenter's training canvases)
SIGMA_BETA = "sigma² = beta"
SIGMA_BETA_TILDE = "beta-tilde"
VARIANCE_TYPES = {SIGMA_BETA: "fixed_large", SIGMA_BETA_TILDE: "fixed_small"}
VARIANCE_CHOICES = [
    ("σ²ₜ = βₜ (the paper's Algorithm 2)", SIGMA_BETA),
    ("σ²ₜ = β̃ₜ (posterior variance)", SIGMA_BETA_TILDE),
]


def variance_choice(scheduler: Any) -> str:
    """The variance radio's choice matching `scheduler`'s `variance_type` (sigma² = beta for any other)."""
    chosen = scheduler.config.get("variance_type")
    return next((name for name, value in VARIANCE_TYPES.items() if value == chosen), SIGMA_BETA)


def sample_resolution(unet: Any) -> tuple[int, int]:
    """(height, width) of the UNet's samples (its config's `sample_size`)."""
    side = unet.config.sample_size
    return (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))


@torch.inference_mode()
def time_unet_call(unet: torch.nn.Module) -> float:
    """Seconds of one UNet call eps_theta(x_t, t) at batch 1 and the model's resolution, after one warm-up call (the
    first call also allocates and builds the CPU kernels). One reverse step of Algorithm 2 is one such call, so a
    sample of N steps costs about N times this."""
    height, width = sample_resolution(unet)
    sample = torch.randn(1, unet.config.in_channels, height, width, generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor([0])  # the cost does not depend on t
    unet(sample, timestep)
    start = time.perf_counter()
    unet(sample, timestep)
    return time.perf_counter() - start


def format_duration(seconds: float) -> str:
    """`0.04 s`, `2.5 s`, `12 s`, `3 min 20 s`, `2 h 5 min`."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def sampling_estimate(seconds_per_call: float, resolution: str, num_inference_steps: Any, num_images: Any) -> str:
    """The Generate tab's time line: one UNet call measured at start-up, times the steps, times the images (the cost
    of a batch on a CPU grows about linearly with its size)."""
    try:
        steps, images = int(num_inference_steps), int(num_images)
    except (TypeError, ValueError):
        return ""
    per_image = steps * seconds_per_call
    return (
        f"⏱ **About {format_duration(per_image)} per image** at {steps} steps on this hardware "
        f"({format_duration(per_image * images)} for {images}): one float32 UNet call at {resolution} took "
        f"{seconds_per_call * 1000:.1f} ms when the model was loaded, and each step is one call."
    )


def pipeline_with_variance(base: DDPMPaperPipeline, variance_type: str) -> DDPMPaperPipeline:
    """A pipeline sharing `base`'s UNet with its own scheduler (no state shared between concurrent requests)."""
    scheduler = DDPMPaperScheduler.from_config(base.scheduler.config, variance_type=variance_type)
    pipeline = DDPMPaperPipeline(unet=base.unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def to_uint8_images(samples: np.ndarray) -> list[PIL.Image.Image]:
    """(N, H, W, C) floats in [0, 1] as 8-bit PIL images (L for one channel)."""
    pixels = np.clip(np.round(samples * 255.0), 0, 255).astype(np.uint8)
    return [PIL.Image.fromarray(sample[:, :, 0] if sample.shape[2] == 1 else sample) for sample in pixels]


def upscale_nearest(image: PIL.Image.Image, target_side: int = GALLERY_DISPLAY_SIDE) -> PIL.Image.Image:
    """Enlarges small samples by a whole factor with nearest-neighbour sampling, so pixels stay crisp."""
    factor = max(1, target_side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), PIL.Image.Resampling.NEAREST)


def samples_canvas(
    images: list[PIL.Image.Image], cell_side: int = CANVAS_CELL_SIDE, min_side: int = CANVAS_MIN_SIDE
) -> PIL.Image.Image:
    """The samples side by side on one RGB canvas, for the segmenter ("Segment these").

    Each sample is reduced (area-averaged) to `cell_side` pixels and placed in a grid (rows of 2 for up to 4
    samples, of up to 4 beyond: 2x1, 2x2, 3x2, 4x2, 3x3, 4x3, 4x4), centred on a canvas of at least `min_side` on each
    side, filled with the samples' own background: the median of their border pixels (black for MNIST digits). With
    the defaults, 4 samples fit a 96x96 canvas, 8 a 144x96 one and 16 a 144x144 one, with digits about as large as on
    the segmenter's training canvases.
    """
    if not images:
        raise gr.Error("Generate some samples first, then segment them.")
    rows = math.ceil(len(images) / (2 if len(images) <= 4 else 4))
    columns = math.ceil(len(images) / rows)
    cells = [image.convert("RGB").resize((cell_side, cell_side), PIL.Image.Resampling.BOX) for image in images]
    borders = np.concatenate(
        [np.concatenate([p[0], p[-1], p[:, 0], p[:, -1]]) for p in (np.asarray(cell) for cell in cells)]
    )
    ground = tuple(int(v) for v in np.median(borders, axis=0))
    width, height = max(min_side, columns * cell_side), max(min_side, rows * cell_side)
    canvas = PIL.Image.new("RGB", (width, height), ground)
    left, top = (width - columns * cell_side) // 2, (height - rows * cell_side) // 2
    for index, cell in enumerate(cells):
        row, column = divmod(index, columns)
        canvas.paste(cell, (left + column * cell_side, top + row * cell_side))
    return canvas


def show_model_image(axis: Any, sample: torch.Tensor) -> None:
    """Draws one (C, H, W) tensor in the model's [-1, 1] scale, clipped, without ticks."""
    pixels = ((sample.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        axis.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        axis.imshow(pixels, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def trajectory_strip(timesteps: list[int], samples: torch.Tensor, predictions: torch.Tensor) -> PIL.Image.Image:
    """x_t (top row) and the model's x_0 prediction (bottom row) of the first sample at each recorded step."""
    columns = len(timesteps)
    figure = Figure(figsize=(1.25 * columns + 0.9, 3.0))
    axes = figure.subplots(2, columns, squeeze=False)
    for column, timestep in enumerate(timesteps):
        show_model_image(axes[0, column], samples[column, 0])
        show_model_image(axes[1, column], predictions[column, 0])
        axes[0, column].set_title(f"t = {timestep}", fontsize=9)
    axes[0, 0].set_ylabel("$x_t$", fontsize=11)
    axes[1, 0].set_ylabel(r"predicted $\hat{x}_0$", fontsize=10)
    return figure_to_image(figure)


def generate(
    base_pipeline: DDPMPaperPipeline,
    seed: Any,
    num_images: Any,
    num_inference_steps: Any,
    variance: str = SIGMA_BETA,
    progress: gr.Progress | None = None,
    bf16: bool = False,
) -> tuple[list[tuple[PIL.Image.Image, str]], PIL.Image.Image]:
    """The `/generate` route: `num_images` samples (Algorithm 2) and the trajectory strip of the first one; `bf16`
    runs the UNet under bfloat16 autocast (the pipeline's `autocast_dtype`)."""
    num_train_timesteps = base_pipeline.scheduler.config.num_train_timesteps
    seed = require_whole_number(seed, "Seed", 0, MAX_SEED)
    num_images = require_whole_number(num_images, "Number of images", 1, MAX_NUM_IMAGES)
    max_steps = min(MAX_INFERENCE_STEPS, num_train_timesteps)
    num_inference_steps = require_whole_number(num_inference_steps, "Inference steps", 1, max_steps)
    if variance not in VARIANCE_TYPES:
        raise gr.Error(f"Variance must be one of {list(VARIANCE_TYPES)}; got {variance!r}.")

    def report_step(pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        if progress is not None:
            progress((step_index + 1, num_inference_steps), desc="Denoising", unit="steps")
        return {}

    pipeline = pipeline_with_variance(base_pipeline, VARIANCE_TYPES[variance])
    output = pipeline(
        batch_size=num_images,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_inference_steps,
        output_type="np",
        return_trajectory=True,
        trajectory_timesteps=TRAJECTORY_FRAMES,
        callback_on_step_end=report_step,
        autocast_dtype=torch.bfloat16 if bf16 else None,
    )
    gallery = [(upscale_nearest(image), f"#{index + 1}") for index, image in enumerate(to_uint8_images(output.images))]
    strip = trajectory_strip(output.trajectory_timesteps, output.trajectory_samples, output.trajectory_x0)
    return gallery, strip


def generate_how_it_works(scheduler: DDPMPaperScheduler) -> str:
    config = scheduler.config
    return f"""
### How it works
A **DDPM** (Ho et al. 2020) learns to undo a fixed forward process that adds Gaussian noise in
T = {config.num_train_timesteps} steps, with variances β rising linearly from {config.beta_start:g} to
{config.beta_end:g}. A U-Net ε_θ(xₜ, t) is trained to predict the noise that was added (the L_simple loss).
**Sampling is Algorithm 2**: start from x_T ~ N(0, I) and repeat
x_(t−1) = 1/√αₜ · (xₜ − βₜ/√(1−ᾱₜ) · ε_θ(xₜ, t)) + σₜ z, with z = 0 at the last step.
The paper uses σₜ² = βₜ and reports similar results with the posterior variance β̃ₜ = (1−ᾱ_(t−1))/(1−ᾱₜ) · βₜ:
pick either above. Fewer inference steps than T skip timesteps (each step then uses the effective β between the
steps kept). The strip shows xₜ and the model's current guess x̂₀ = (xₜ − √(1−ᾱₜ) ε_θ)/√ᾱₜ at a few steps, as in
the paper's progressive-generation figure: coarse shapes appear first, details last.
"""
