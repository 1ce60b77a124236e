"""The Edit tab (`/edit`): editing an image with the unconditional DDPM, without retraining.

- Inpaint (RePaint, Lugmayr et al. 2022): the region painted over is regenerated; at every reverse step the rest is
  replaced by a forward-noised copy of the original, with RePaint's resampling jumps (`DDPMPaperPipeline.inpaint`).
- Image-to-image (SDEdit, Meng et al. 2021): the whole image is noised to t0 = strength * T with q(x_t | x_0) and
  denoised with Algorithm 2 from there (`DDPMPaperPipeline.img2img`).

The editor holds the image (uploaded, an example, or drawn) as its background; brush strokes on its layers mark the
region to regenerate. On a blank canvas the first layer is the drawing (its ink in any colour, as light strokes on
dark) and the strokes of any later layer are the region. Uploads of dark strokes on a light ground are inverted to the
light-on-dark digits the demo model knows.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch
from image_inputs import MAX_SEED, check_pixel_count, require_whole_number
from tab_generate import to_uint8_images, upscale_nearest

from hf_swin_ddpm import DDPMPaperPipeline
from hf_swin_ddpm.imaging import image_grid

INPAINT = "Inpaint (RePaint)"
IMG2IMG = "Image-to-image (SDEdit)"
MODES = (INPAINT, IMG2IMG)
MAX_EDIT_STEPS = 250
DEFAULT_EDIT_STEPS = 50
JUMP_LENGTH = 5  # RePaint's resampling: back up 5 steps, 3 times, every 5 steps
JUMP_N_SAMPLE = 3
DEFAULT_STRENGTH = 0.5
TRAJECTORY_FRAMES = 8
DISPLAY_SIDE = 128


def _as_rgba(image: Any, name: str) -> PIL.Image.Image | None:
    if image is None:
        return None
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    if not isinstance(image, PIL.Image.Image):
        raise gr.Error(f"Could not read the {name} of the editor; upload a PNG or JPEG image.")
    check_pixel_count(image, name)
    return image.convert("RGBA")


def _painted(layer: PIL.Image.Image) -> np.ndarray:
    """Where a layer has paint: its alpha channel, as booleans."""
    return np.asarray(layer)[:, :, 3] > 0


def split_editor_value(value: Any) -> tuple[PIL.Image.Image, np.ndarray]:
    """The editor's value -> (the image to edit, RGB; where to regenerate, (H, W) booleans)."""
    if not isinstance(value, dict):
        raise gr.Error("Upload or draw a digit to edit.")
    background = _as_rgba(value.get("background"), "background")
    layers = [layer for layer in (_as_rgba(item, "layer") for item in value.get("layers") or []) if layer is not None]
    if background is not None and not np.asarray(background)[:, :, 3].any():
        background = None  # a blank canvas
    if background is None:
        if not layers:
            raise gr.Error("Upload or draw a digit to edit.")
        image, strokes = layers[0], layers[1:]
    else:
        image, strokes = background, layers
    size = image.size
    regenerate = np.zeros((size[1], size[0]), dtype=bool)
    for layer in strokes:
        regenerate |= _painted(layer.resize(size, PIL.Image.Resampling.NEAREST))
    if background is None:  # a drawing: the ink, whatever its colour, light on dark
        return PIL.Image.fromarray(np.asarray(image)[:, :, 3]).convert("RGB"), regenerate
    canvas = PIL.Image.new("RGBA", size, (255, 255, 255, 255))
    return PIL.Image.alpha_composite(canvas, image).convert("RGB"), regenerate


def model_image(image: PIL.Image.Image, pipeline: DDPMPaperPipeline) -> PIL.Image.Image:
    """The image at the model's size and channels; a dark-on-light grayscale drawing is inverted to the light-on-dark
    digits the demo model was trained on."""
    side = pipeline.unet.config.sample_size
    height, width = (side, side) if isinstance(side, int) else side
    if pipeline.unet.config.in_channels == 1:
        gray = image.convert("L")
        if np.asarray(gray).mean() > 127:
            gray = PIL.Image.fromarray(255 - np.asarray(gray))
        image = gray
    return image.resize((width, height), PIL.Image.Resampling.BILINEAR)


def require_strength(value: Any) -> float:
    """`value` as a float in [0, 1], or a `gr.Error` naming the input (also the slider's server-side check: API
    callers bypass the slider)."""
    try:
        strength = float(value)
    except (TypeError, ValueError):
        strength = float("nan")
    if isinstance(value, bool) or not 0 <= strength <= 1:
        raise gr.Error(f"Strength must be a number from 0 to 1; got {value!r}.")
    return strength


def edit(
    pipeline: DDPMPaperPipeline,
    editor_value: Any,
    mode: Any = INPAINT,
    strength: Any = DEFAULT_STRENGTH,
    num_inference_steps: Any = DEFAULT_EDIT_STEPS,
    seed: Any = 0,
) -> tuple[PIL.Image.Image, PIL.Image.Image, PIL.Image.Image]:
    """The `/edit` route: returns (the input as the model sees it, the edited image, the trajectory strip)."""
    if mode not in MODES:
        raise gr.Error(f"Mode must be one of {list(MODES)}; got {mode!r}.")
    num_inference_steps = require_whole_number(num_inference_steps, "Inference steps", 1, MAX_EDIT_STEPS)
    seed = require_whole_number(seed, "Seed", 0, MAX_SEED)
    strength = require_strength(strength)
    image, regenerate = split_editor_value(editor_value)
    model_input = model_image(image, pipeline)
    generator = torch.Generator().manual_seed(seed)
    if mode == INPAINT:
        if not regenerate.any():
            raise gr.Error("Paint over the region to regenerate (brush strokes on a layer of the editor).")
        keep = PIL.Image.fromarray(np.where(regenerate, 0, 255).astype(np.uint8)).resize(
            model_input.size, PIL.Image.Resampling.NEAREST
        )
        output = pipeline.inpaint(
            model_input,
            keep,
            num_inference_steps=num_inference_steps,
            jump_length=JUMP_LENGTH,
            jump_n_sample=JUMP_N_SAMPLE,
            generator=generator,
            output_type="np",
            return_trajectory=True,
        )
    else:
        output = pipeline.img2img(
            model_input,
            strength=strength,
            num_inference_steps=num_inference_steps,
            generator=generator,
            output_type="np",
            return_trajectory=True,
        )
    result = to_uint8_images(output.images)[0]
    return (
        upscale_nearest(model_input, DISPLAY_SIDE),
        upscale_nearest(result, DISPLAY_SIDE),
        trajectory_strip(output.trajectory_samples),
    )


def trajectory_strip(samples: torch.Tensor | None) -> PIL.Image.Image | None:
    """Up to `TRAJECTORY_FRAMES` evenly spaced x_t frames of the chain, left to right."""
    if samples is None:
        return None
    picks = np.linspace(0, len(samples) - 1, min(TRAJECTORY_FRAMES, len(samples))).round().astype(int)
    frames = ((samples[picks, 0].clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return image_grid([upscale_nearest(frame, 64) for frame in to_uint8_images(frames)], columns=len(picks))


def edit_how_it_works(pipeline: DDPMPaperPipeline) -> str:
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    return f"""
### How it works
The model was trained only to generate, yet it can edit. **Inpaint** (RePaint) runs the reverse process from noise;
after every step the part you kept is replaced by the original diffused to the same step, q(xₜ | x₀), so the
regenerated part is drawn to fit it. Every {JUMP_LENGTH} steps the chain goes back up {JUMP_LENGTH} steps
({JUMP_N_SAMPLE - 1} times) and comes down again, which lets the two parts agree. **Image-to-image** (SDEdit) diffuses
the whole image to t₀ = strength × {num_train_timesteps} and denoises it: a low strength keeps the strokes and cleans
them up, a high strength keeps only the rough layout.
"""
