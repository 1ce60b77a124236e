"""The Interpolate tab (`/interpolate`): two images mixed in the diffusion latent space (Ho et al. 2020, Fig. 8).

Both images are encoded with q(x_t | x_0) (sharing the noise by default), their latents are mixed linearly and every
mix is decoded with the reverse process (`DDPMPaperPipeline.interpolate`). The tab shows the decoded points
(lambda = 0 ... 1) as a gallery and as one strip.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch
from image_inputs import MAX_SEED, prepare_image, require_whole_number
from tab_generate import to_uint8_images, upscale_nearest

from hf_swin_ddpm import DDPMPaperPipeline
from hf_swin_ddpm.imaging import image_grid

MAX_POINTS = 16
DEFAULT_POINTS = 8
DISPLAY_SIDE = 96  # decoded points are upscaled (nearest) to about this side


def uploaded(image: PIL.Image.Image | np.ndarray | None, name: str) -> PIL.Image.Image:
    """The upload as RGB (bounded in size), or a `gr.Error` that names the missing input."""
    if image is None:
        raise gr.Error(f"Upload {name} to interpolate from.")
    return prepare_image(image)


def interpolate(
    pipeline: DDPMPaperPipeline,
    image_a: PIL.Image.Image | np.ndarray | None,
    image_b: PIL.Image.Image | np.ndarray | None,
    t: Any,
    num_points: Any = DEFAULT_POINTS,
    seed: Any = 0,
    num_inference_steps: Any = None,
    shared_noise: bool = True,
) -> tuple[list[tuple[PIL.Image.Image, str]], PIL.Image.Image]:
    """The `/interpolate` route: `DDPMPaperPipeline.interpolate` of the two images at timestep `t` (0-based) with
    `num_points` points; returns the gallery (captioned with lambda) and the strip."""
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    t = require_whole_number(t, "t", 0, num_train_timesteps - 1)
    num_points = require_whole_number(num_points, "Number of points", 2, MAX_POINTS)
    seed = require_whole_number(seed, "Seed", 0, MAX_SEED)
    if num_inference_steps not in (None, ""):
        num_inference_steps = require_whole_number(num_inference_steps, "Inference steps", 1, num_train_timesteps)
    else:
        num_inference_steps = None
    output = pipeline.interpolate(
        uploaded(image_a, "image A"),
        uploaded(image_b, "image B"),
        t=t,
        num_points=num_points,
        shared_noise=bool(shared_noise),
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=num_inference_steps,
        output_type="np",
    )
    shown = [upscale_nearest(image.convert("RGB"), DISPLAY_SIDE) for image in to_uint8_images(output.images)]
    weights = np.linspace(0, 1, num_points)
    gallery = [(image, f"lambda = {weight:.2f}") for image, weight in zip(shown, weights, strict=True)]
    return gallery, image_grid(shown, columns=len(shown))


def interpolate_how_it_works(pipeline: DDPMPaperPipeline) -> str:
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    return f"""
### How it works
As in the paper's Fig. 8, both images are first diffused to step t with q(xₜ | x₀) = N(√ᾱₜ x₀, (1−ᾱₜ) I), with
the same noise draw for both by default, so that the two latents differ only by their content. The latents are mixed
linearly, x̄ₜ = (1−λ) xₜ + λ x′ₜ, and each mix is denoised by the reverse process from t down to 0. A small t keeps
the pixels of the inputs and blends them; a large t (up to {num_train_timesteps - 1}) lets the model reinvent the
images, so the mixes look like real samples with attributes of both.
"""
