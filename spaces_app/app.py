"""The hf-swin-ddpm Space: Swin + FPN semantic segmentation and a DDPM (Ho et al. 2020), side by side.

Three tabs, each also an API route:

- ``/segment`` (image): overlay of the predicted classes, the class-id mask as a lossless PNG, a legend;
- ``/generate`` (seed, number of images, inference steps, variance): samples, and the denoising trajectory;
- ``/forward_diffusion`` (image, t, noise seed): a draw of q(x_t | x_0), the alpha-bar / SNR curve, the numbers.

Models come from ``SWIN_FPN_MODEL`` and ``DDPM_MODEL`` (a local folder or a Hub repo id), by default
``demo_models/swin-fpn-shapes`` and ``demo_models/ddpm-digits`` at the repository root (``make demo-models``).
Run ``python spaces_app/app.py``; ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` set the address
(default http://127.0.0.1:7860).
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch
from gradio import processing_utils
from matplotlib.figure import Figure
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

import hf_swin_ddpm  # noqa: F401  (registers SwinFPN with the transformers Auto classes)
from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler
from hf_swin_ddpm.safe_loading import check_model_folder, named_loading_errors, safetensors_only

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent
EXAMPLES_DIR = APP_DIR / "examples"
DEFAULT_SWIN_FPN_MODEL = REPO_ROOT / "demo_models" / "swin-fpn-shapes"
DEFAULT_DDPM_MODEL = REPO_ROOT / "demo_models" / "ddpm-digits"
SWIN_FPN_MODEL_ENV = "SWIN_FPN_MODEL"
DDPM_MODEL_ENV = "DDPM_MODEL"

MAX_IMAGE_SIDE = 1024  # longer images are downscaled to this before inference
MAX_NUM_IMAGES = 16
MAX_INFERENCE_STEPS = 1000
DEFAULT_NUM_IMAGES = 8
DEFAULT_INFERENCE_STEPS = 250
MAX_SEED = 2**32 - 1
TRAJECTORY_FRAMES = 8
GALLERY_DISPLAY_SIDE = 128  # samples are upscaled (nearest) to about this side
QUEUE_MAX_SIZE = 32
INFERENCE_CONCURRENCY = 2  # jobs running at once over all tabs
MAX_UPLOAD_SIZE = "20mb"
# Uploads with more pixels are refused before they are decoded: a small PNG of one colour can hold hundreds of
# megapixels, several GB once decoded and converted. 50 megapixels is a large camera photo.
MAX_UPLOAD_PIXELS = 50_000_000

SIGMA_BETA = "sigma² = beta"
SIGMA_BETA_TILDE = "beta-tilde"
VARIANCE_TYPES = {SIGMA_BETA: "fixed_large", SIGMA_BETA_TILDE: "fixed_small"}
VARIANCE_CHOICES = [
    ("σ²ₜ = βₜ (the paper's Algorithm 2)", SIGMA_BETA),
    ("σ²ₜ = β̃ₜ (posterior variance)", SIGMA_BETA_TILDE),
]

BACKGROUND_NAMES = {"background", "bg"}
BACKGROUND_COLOUR = (48, 52, 63)
CLASS_PALETTE = [
    (230, 57, 70),
    (46, 196, 182),
    (255, 183, 3),
    (67, 97, 238),
    (155, 93, 229),
    (251, 133, 0),
    (114, 201, 80),
    (241, 91, 181),
    (0, 187, 249),
    (188, 108, 37),
]
OVERLAY_OPACITY = 0.55
LEGEND_HEADERS = ["class id", "class", "colour", "pixels (%)"]
LEGEND_ALL_CLASSES_UP_TO = 12  # with more classes the legend lists only those present

HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class ModelLoadError(RuntimeError):
    """A demo model could not be loaded; the message says what to do."""


# ------------------------------------------------------------------------------------------------ models


@dataclass
class Segmenter:
    """A semantic segmentation model with its image processor and class colours."""

    model: torch.nn.Module
    processor: Any
    id2label: dict[int, str]
    colours: np.ndarray  # (num_labels, 3) uint8
    source: str


def model_location(explicit: str | os.PathLike | None, env_var: str, default: Path) -> str:
    """The model to load: the explicit argument, else the environment variable, else the default folder."""
    if explicit is not None:
        return str(explicit)
    return os.environ.get(env_var) or str(default)


def looks_like_hub_repo_id(location: str) -> bool:
    """True for `name` or `org/name` that is not an existing path (the Hub's repo id syntax)."""
    return not Path(location).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", location) is not None


def missing_model_message(what: str, location: str, env_var: str, reason: str) -> str:
    return (
        f"Could not load the {what} from {location!r}: {reason}. Run `make demo-models` to train the demo models "
        f"into demo_models/ (about 15 minutes on 2 CPU cores), or set {env_var} to a saved model folder or a Hub "
        "repo id."
    )


def check_model_location(what: str, location: str, env_var: str) -> None:
    """Raises `ModelLoadError` when `location` is neither an existing folder nor a Hub repo id."""
    if Path(location).is_dir() or looks_like_hub_repo_id(location):
        return
    reason = "it is a file, not a model folder" if Path(location).exists() else "no such folder"
    raise ModelLoadError(missing_model_message(what, location, env_var, reason))


def class_colours(id2label: dict[int, str]) -> np.ndarray:
    """One RGB colour per class id: a dark grey for background classes, a fixed palette, then golden-angle hues."""
    num_labels = max(id2label) + 1 if id2label else 1
    colours = np.zeros((num_labels, 3), dtype=np.uint8)
    palette_index = 0
    for class_id in range(num_labels):
        if id2label.get(class_id, "").strip().lower() in BACKGROUND_NAMES:
            colours[class_id] = BACKGROUND_COLOUR
            continue
        if palette_index < len(CLASS_PALETTE):
            colours[class_id] = CLASS_PALETTE[palette_index]
        else:
            hue = (palette_index * 0.618033988749895) % 1.0
            colours[class_id] = hsv_to_rgb(hue, 0.65, 0.95)
        palette_index += 1
    return colours


def hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    """HSV in [0, 1] to 8-bit RGB."""
    pil_colour = PIL.Image.new("HSV", (1, 1), (round(hue * 255), round(saturation * 255), round(value * 255)))
    return pil_colour.convert("RGB").getpixel((0, 0))


def load_segmenter(location: str) -> Segmenter:
    """Loads a semantic segmentation model and its image processor (SwinFPN or any transformers model).

    Safetensors weights only and no remote code: a folder or repository that needs either is refused.
    """
    check_model_location("segmentation model", location, SWIN_FPN_MODEL_ENV)
    try:
        if Path(location).is_dir():
            check_model_folder(location)
        with named_loading_errors(location, "segmentation model"):
            model = AutoModelForSemanticSegmentation.from_pretrained(
                location, trust_remote_code=False, **safetensors_only()
            ).eval()
            processor = AutoImageProcessor.from_pretrained(location, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            missing_model_message("segmentation model", location, SWIN_FPN_MODEL_ENV, str(error))
        ) from error
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    return Segmenter(model, processor, id2label, class_colours(id2label), location)


def load_ddpm(location: str) -> DDPMPaperPipeline:
    """Loads a saved `DDPMPaperPipeline` (local folder or Hub repo id)."""
    check_model_location("DDPM pipeline", location, DDPM_MODEL_ENV)
    if Path(location).is_dir() and not (Path(location) / "model_index.json").is_file():
        raise ModelLoadError(
            missing_model_message("DDPM pipeline", location, DDPM_MODEL_ENV, "the folder has no model_index.json")
        )
    try:
        if Path(location).is_dir():
            check_model_folder(location)
        with named_loading_errors(location, "DDPM pipeline"):
            pipeline = DDPMPaperPipeline.from_pretrained(location, **safetensors_only())
    except (OSError, ValueError) as error:
        raise ModelLoadError(missing_model_message("DDPM pipeline", location, DDPM_MODEL_ENV, str(error))) from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ------------------------------------------------------------------------------------------------ inputs


def require_whole_number(value: Any, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high], or a `gr.Error` naming the input and its range."""
    expected = f"{name} must be a whole number from {low} to {high}"
    if value is None or isinstance(value, bool):
        raise gr.Error(f"{expected}; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{expected}; got {value!r}.") from None
    if not math.isfinite(number) or number != round(number) or not low <= number <= high:
        raise gr.Error(f"{expected}; got {value!r}.")
    return int(round(number))


def check_whole_number_range(component: gr.Slider | gr.Number) -> gr.Slider | gr.Number:
    """Makes `component` check its value server-side with a message naming it (API callers bypass the slider).

    gradio's own check says only "Value 2000 is greater than maximum value 1000". The check replaces the instance's
    `preprocess` rather than subclassing, because gradio writes a `.pyi` stub next to any module that defines a
    component subclass, and the Space must not write into its own folder.
    """

    def preprocess(payload: Any) -> int:
        name = component.label or "the value"
        return require_whole_number(payload, str(name), int(component.minimum), int(component.maximum))

    component.preprocess = preprocess
    return component


def read_upload(gradio_preprocess: Any, payload: Any) -> PIL.Image.Image | None:
    """Runs gradio's image preprocessing and decodes the image completely, so that a corrupt, truncated or
    non-image upload becomes a `gr.Error` naming the file (gradio answers it with an anonymous "Error")."""
    name = getattr(payload, "orig_name", None) or "the upload"
    try:
        check_pixel_count(getattr(payload, "path", None), name)  # from the header, before gradio decodes anything
        image = gradio_preprocess(payload)
        if isinstance(image, PIL.Image.Image):
            check_pixel_count(image, name)  # data: URLs come without a path
            image.load()
    except gr.Error:
        raise
    except PIL.Image.DecompressionBombError:
        limit = (PIL.Image.MAX_IMAGE_PIXELS or 0) * 2 // 1_000_000
        raise gr.Error(f"{name!r} has too many pixels to open safely (the limit is {limit} megapixels).") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise gr.Error(
            f"Could not read {name!r}: it is not an image or it is corrupt ({type(error).__name__}). "
            "Upload a PNG, JPEG, WebP, GIF, BMP or TIFF file."
        ) from None
    return image


def check_pixel_count(image: PIL.Image.Image | str | None, name: str) -> None:
    """A `gr.Error` when an image (or the image file at a path, read lazily: only its header) has more than
    `MAX_UPLOAD_PIXELS` pixels. A path that is not an image is left to the decoding that follows."""
    if isinstance(image, str):
        try:
            with PIL.Image.open(image) as opened:
                width, height = opened.size
        except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError):
            return
    elif isinstance(image, PIL.Image.Image):
        width, height = image.size
    else:
        return
    if width * height > MAX_UPLOAD_PIXELS:
        raise gr.Error(
            f"{name!r} is {width} x {height} = {width * height / 1e6:.0f} megapixels; the limit is "
            f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels. Downscale it and upload it again."
        )


def array_to_pil(array: np.ndarray) -> PIL.Image.Image:
    """A numpy image ((H, W), (H, W, 1), (H, W, 3) or (H, W, 4); bool, integer or float) as an 8-bit PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
        raise gr.Error(f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4); got {array.shape}.")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = scale_to_uint8(array.astype(np.float64), 65535.0 if array.dtype == np.uint16 else None)
    return PIL.Image.fromarray(array)


def scale_to_uint8(values: np.ndarray, full_scale: float | None = None) -> np.ndarray:
    """Maps values to 0..255: by `full_scale` if given, else by the smallest of 1, 255, 65535 that holds them,
    else by their min..max range."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    offset = 0.0
    if full_scale is None:
        full_scale = next((scale for scale in (1.0, 255.0, 65535.0) if low >= 0.0 and high <= scale), None)
    if full_scale is None:
        offset, full_scale = low, max(high - low, 1e-12)
    scaled = (np.nan_to_num(values, nan=offset) - offset) / full_scale * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: PIL.Image.Image | np.ndarray | None) -> PIL.Image.Image:
    """Any common image (PIL in any mode, or a numpy array) as 8-bit RGB.

    Transparent pixels are composited over white; 16- and 32-bit greyscale is scaled to 8 bits (not clipped);
    palette, CMYK, YCbCr and the like go through PIL's conversions.
    """
    if image is None:
        raise gr.Error("Upload an image first (or pick one of the examples).")
    if isinstance(image, np.ndarray):
        image = array_to_pil(image)
    if not isinstance(image, PIL.Image.Image):
        raise gr.Error(f"Expected an image, got {type(image).__name__}.")
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_BIT_DEPTH_MODES or image.mode == "F":
        full_scale = 65535.0 if image.mode.startswith("I;16") else None
        return PIL.Image.fromarray(scale_to_uint8(np.asarray(image, dtype=np.float64), full_scale)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise gr.Error(f"Cannot convert an image in mode {image.mode!r} to RGB ({error}).") from None


def bound_size(image: PIL.Image.Image, max_side: int = MAX_IMAGE_SIDE) -> PIL.Image.Image:
    """Downscales `image` so that its longer side is at most `max_side` (aspect ratio kept)."""
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    scale = max_side / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(new_size, PIL.Image.Resampling.LANCZOS, reducing_gap=3.0)


def prepare_image(image: PIL.Image.Image | np.ndarray | None) -> PIL.Image.Image:
    """The upload as RGB, downscaled to at most `MAX_IMAGE_SIDE`."""
    return bound_size(to_rgb(image))


# ------------------------------------------------------------------------------------------------ segment


@torch.inference_mode()
def predict_classes(segmenter: Segmenter, image: PIL.Image.Image) -> np.ndarray:
    """The class id of every pixel of an RGB image, (H, W) int64."""
    inputs = segmenter.processor(images=image, return_tensors="pt")
    outputs = segmenter.model(pixel_values=inputs["pixel_values"])
    target_size = [(image.height, image.width)]
    return segmenter.processor.post_process_semantic_segmentation(outputs, target_sizes=target_size)[0].numpy()


def mask_image(classes: np.ndarray, colours: np.ndarray) -> PIL.Image.Image:
    """The class map as a palette PNG image: pixel value = class id, shown in the class colours.

    With more than 256 classes it is a 16-bit greyscale image (pixel value = class id).
    """
    if len(colours) > 256:
        return PIL.Image.fromarray(classes.astype(np.uint16))
    mask = PIL.Image.fromarray(classes.astype(np.uint8))
    mask.putpalette(colours.flatten().tolist())  # L -> P: the values stay the class ids
    return mask


def overlay_image(image: PIL.Image.Image, classes: np.ndarray, segmenter: Segmenter) -> PIL.Image.Image:
    """The image with each non-background class tinted in its colour."""
    pixels = np.asarray(image, dtype=np.float32)
    tint = segmenter.colours[classes].astype(np.float32)
    background_ids = [i for i, name in segmenter.id2label.items() if name.strip().lower() in BACKGROUND_NAMES]
    opacity = np.where(np.isin(classes, background_ids), 0.0, OVERLAY_OPACITY)[..., None]
    blended = pixels * (1.0 - opacity) + tint * opacity
    return PIL.Image.fromarray(np.round(blended).astype(np.uint8))


def colour_swatch(colour: Sequence[int]) -> str:
    hex_colour = "#{:02x}{:02x}{:02x}".format(*colour)
    return f'<span class="swatch" style="background:{hex_colour}"></span> {hex_colour}'


def legend_rows(classes: np.ndarray, segmenter: Segmenter) -> list[list[Any]]:
    """[class id, name, colour swatch, share of pixels in %] per class (all of them, or those present when the
    model has many classes, largest first)."""
    counts = np.bincount(classes.ravel(), minlength=len(segmenter.colours))
    shares = 100.0 * counts / max(int(counts.sum()), 1)
    if len(segmenter.id2label) <= LEGEND_ALL_CLASSES_UP_TO:
        class_ids = sorted(segmenter.id2label)
    else:
        class_ids = sorted(np.flatnonzero(counts), key=lambda i: -counts[i])
    return [
        [
            int(i),
            segmenter.id2label.get(int(i), f"class {i}"),
            colour_swatch(segmenter.colours[i]),
            round(float(shares[i]), 2),
        ]
        for i in class_ids
    ]


def segment(
    segmenter: Segmenter, image: PIL.Image.Image | np.ndarray | None
) -> tuple[PIL.Image.Image, PIL.Image.Image, list[list[Any]]]:
    """The `/segment` route: overlay, class-id mask (palette PNG) and legend for one image."""
    rgb = prepare_image(image)
    classes = predict_classes(segmenter, rgb)
    return (
        overlay_image(rgb, classes, segmenter),
        mask_image(classes, segmenter.colours),
        legend_rows(classes, segmenter),
    )


# ------------------------------------------------------------------------------------------------ generate


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


def figure_to_image(figure: Figure, dpi: int = 110) -> PIL.Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    buffer.seek(0)
    return PIL.Image.open(buffer).convert("RGB")


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
) -> tuple[list[tuple[PIL.Image.Image, str]], PIL.Image.Image]:
    """The `/generate` route: `num_images` samples (Algorithm 2) and the trajectory strip of the first one."""
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
    )
    gallery = [(upscale_nearest(image), f"#{index + 1}") for index, image in enumerate(to_uint8_images(output.images))]
    strip = trajectory_strip(output.trajectory_timesteps, output.trajectory_samples, output.trajectory_x0)
    return gallery, strip


# ------------------------------------------------------------------------------------------------ forward process


def image_to_model_scale(image: PIL.Image.Image) -> torch.Tensor:
    """An RGB image as a (1, 3, H, W) float64 tensor in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float64) / 127.5 - 1.0)
    return pixels.permute(2, 0, 1)[None]


def model_scale_to_image(sample: torch.Tensor) -> PIL.Image.Image:
    """A (1, 3, H, W) tensor in [-1, 1] (clipped) as an RGB image."""
    pixels = ((sample[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(pixels)


def noise_schedule_plot(alphas_cumprod: np.ndarray, timestep: int) -> PIL.Image.Image:
    """alpha-bar_t (left axis) and SNR_t = abar_t / (1 - abar_t) (right axis, log) over t, marked at `timestep`."""
    steps = np.arange(len(alphas_cumprod))
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    figure = Figure(figsize=(6.4, 3.2))
    axis = figure.subplots()
    axis.plot(steps, alphas_cumprod, color="#4361ee", linewidth=2, label=r"$\bar\alpha_t$")
    axis.set_xlabel("timestep t (0-based)")
    axis.set_ylabel(r"$\bar\alpha_t$ (signal variance)", color="#4361ee")
    axis.set_ylim(-0.02, 1.02)
    snr_axis = axis.twinx()
    snr_axis.semilogy(steps, snr, color="#e63946", linewidth=2, label="SNR")
    snr_axis.set_ylabel(r"SNR = $\bar\alpha_t / (1-\bar\alpha_t)$", color="#e63946")
    axis.axvline(timestep, color="#333333", linestyle="--", linewidth=1)
    axis.plot([timestep], [alphas_cumprod[timestep]], "o", color="#4361ee", markersize=7)
    snr_axis.plot([timestep], [snr[timestep]], "o", color="#e63946", markersize=7)
    axis.set_title(
        rf"t = {timestep}:  $\bar\alpha_t$ = {alphas_cumprod[timestep]:.4g},  SNR = {snr[timestep]:.3g}", fontsize=10
    )
    axis.grid(alpha=0.3)
    return figure_to_image(figure)


def forward_summary(alphas_cumprod: np.ndarray, timestep: int) -> str:
    """The numbers of q(x_t | x_0) at `timestep`, as Markdown."""
    alpha_bar = float(alphas_cumprod[timestep])
    snr = alpha_bar / (1.0 - alpha_bar)
    return (
        f"**t = {timestep}** of {len(alphas_cumprod)} · ᾱₜ = {alpha_bar:.5g} · "
        f"x₀ scaled by √ᾱₜ = {math.sqrt(alpha_bar):.4f} · noise std √(1−ᾱₜ) = {math.sqrt(1.0 - alpha_bar):.4f} · "
        f"SNR = {snr:.4g} ({10.0 * math.log10(snr):+.1f} dB)"
    )


def forward_diffusion(
    scheduler: DDPMPaperScheduler, image: PIL.Image.Image | np.ndarray | None, timestep: Any, noise_seed: Any = 0
) -> tuple[PIL.Image.Image, PIL.Image.Image, str]:
    """The `/forward_diffusion` route: x_t ~ q(x_t | x_0) (Eq. 4) for the image, the schedule plot, the numbers."""
    num_train_timesteps = scheduler.config.num_train_timesteps
    timestep = require_whole_number(timestep, "t", 0, num_train_timesteps - 1)
    noise_seed = require_whole_number(noise_seed, "Noise seed", 0, MAX_SEED)
    x0 = image_to_model_scale(prepare_image(image))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(noise_seed), dtype=torch.float64)
    noisy = scheduler.add_noise(x0, noise, torch.tensor([timestep]))
    alphas_cumprod = scheduler.alphas_cumprod.numpy()
    return (
        model_scale_to_image(noisy),
        noise_schedule_plot(alphas_cumprod, timestep),
        forward_summary(alphas_cumprod, timestep),
    )


# ------------------------------------------------------------------------------------------------ texts


def segment_how_it_works(segmenter: Segmenter) -> str:
    config = segmenter.model.config
    window = getattr(config, "window_size", 7)
    patch = getattr(config, "patch_size", 4)
    classes = ", ".join(segmenter.id2label[i] for i in sorted(segmenter.id2label))
    stem = (
        " (this model embeds them with a small convolutional stem, Xiao et al. 2021, which trains faster from scratch)"
        if getattr(config, "patch_embedding_type", "linear") == "convolutional"
        else ""
    )
    return f"""
### How it works
**Swin Transformer** (Liu et al. 2021) cuts the image into {patch}×{patch} patches{stem} and computes self-attention only inside
non-overlapping {window}×{window} windows, so its cost grows **linearly** with the number of pixels (global attention,
as in ViT, grows quadratically). Every second block **shifts the window grid** by {window // 2} patches, so
information flows across window borders; patch merging halves the resolution between stages, which yields feature
maps at 1/4, 1/8, 1/16 and 1/32 of the input, like a CNN.
A **feature pyramid (FPN)** merges them top-down, and the **Semantic FPN head** (Kirillov et al. 2019) brings every
level to 1/4 scale, sums them and predicts one class per pixel, upsampled bilinearly to the image.

Classes: {classes}. The mask is a PNG whose pixel values are the class ids (shown in the legend colours).
Images of any size and mode are accepted; the longer side is reduced to {MAX_IMAGE_SIDE} pixels first.
"""


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


def forward_how_it_works(scheduler: DDPMPaperScheduler) -> str:
    alphas_cumprod = scheduler.alphas_cumprod.numpy()
    last_snr = alphas_cumprod[-1] / (1.0 - alphas_cumprod[-1])
    return f"""
### How it works
The forward process needs no network: q(xₜ | x₀) = N(√ᾱₜ x₀, (1−ᾱₜ) I) with ᾱₜ = ∏ₛ₌₁ᵗ (1−βₛ) (Eq. 4 of the
paper), so xₜ = √ᾱₜ x₀ + √(1−ᾱₜ) ε is drawn in one shot for any t; this is how training pairs are made.
With the linear β schedule, ᾱₜ falls slowly at first and then fast; at the last step the SNR is
{last_snr:.1e}, so x_T is all but pure N(0, I) noise, the starting point of sampling.
Pixels are scaled to [−1, 1] and the shown xₜ is clipped to that range; t counts from 0 (the paper's t − 1).
"""


# ------------------------------------------------------------------------------------------------ UI

INTRO = """
# Swin + FPN segmentation · DDPM generation
Two models built as native Hugging Face transformers / diffusers components, small enough to run on a CPU:
a **Swin Transformer with a Semantic FPN head** segments circles, squares and triangles, and a **denoising diffusion
probabilistic model** draws handwritten digits. Every tab is also an API route (see "Use via API" below).
"""

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
.fill-box img { width: 100% !important; height: 100% !important; object-fit: contain; }
.swatch { display: inline-block; width: 0.95em; height: 0.95em; border-radius: 3px; vertical-align: -0.12em;
          border: 1px solid rgba(0, 0, 0, 0.25); }
.how-it-works { font-size: 0.95em; }
footer { opacity: 0.8; }
"""


def launch_options() -> dict[str, Any]:
    """Keyword arguments of `demo.launch` shared by `main` and the tests (theme, CSS, upload limit)."""
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="rose"),
        "css": CSS,
        "max_file_size": MAX_UPLOAD_SIZE,
    }


def example_images() -> list[str]:
    return sorted(str(path) for path in EXAMPLES_DIR.glob("*.png"))


def image_input(label: str, elem_id: str) -> gr.Image:
    """An image upload passed on as PIL in its original mode (`to_rgb` converts it), with readable errors."""
    component = gr.Image(
        label=label,
        type="pil",
        image_mode=None,
        sources=["upload", "clipboard"],
        height=300,
        elem_classes=["pixelated", "fill-box"],
        elem_id=elem_id,
    )
    gradio_preprocess = component.preprocess
    component.preprocess = lambda payload: read_upload(gradio_preprocess, payload)
    return component


def image_output(label: str, **kwargs: Any) -> gr.Image:
    """A lossless (PNG) output image, scaled up crisply to fill its box."""
    return gr.Image(label=label, format="png", interactive=False, elem_classes=["pixelated", "fill-box"], **kwargs)


def build_segment_tab(segmenter: Segmenter) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = image_input("Image", elem_id="segment-image")
            button = gr.Button("Segment", variant="primary", elem_id="segment-button")
            examples = example_images()
            if examples:
                gr.Examples(
                    examples=examples, inputs=image, label="Examples (shapes test split)", elem_id="segment-examples"
                )
        with gr.Column(scale=2):
            with gr.Row():
                overlay = image_output("Predicted classes over the image", height=300, elem_id="segment-overlay")
                mask = image_output("Mask (PNG, pixel value = class id)", height=300, elem_id="segment-mask")
            legend = gr.Dataframe(
                headers=LEGEND_HEADERS,
                datatype=["number", "str", "html", "number"],
                label="Legend",
                interactive=False,
                elem_id="segment-legend",
                wrap=True,
            )
    gr.Markdown(segment_how_it_works(segmenter), elem_classes=["how-it-works"])

    def run(image: PIL.Image.Image | None):
        return segment(segmenter, image)

    button.click(
        run,
        inputs=image,
        outputs=[overlay, mask, legend],
        api_name="segment",
        concurrency_id="inference",
        concurrency_limit=INFERENCE_CONCURRENCY,
    )


def build_generate_tab(pipeline: DDPMPaperPipeline) -> None:
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    max_steps = min(MAX_INFERENCE_STEPS, num_train_timesteps)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            seed = check_whole_number_range(
                gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED, elem_id="generate-seed")
            )
            num_images = check_whole_number_range(
                gr.Slider(
                    label="Number of images",
                    minimum=1,
                    maximum=MAX_NUM_IMAGES,
                    value=DEFAULT_NUM_IMAGES,
                    step=1,
                    elem_id="generate-num-images",
                )
            )
            steps = check_whole_number_range(
                gr.Slider(
                    label="Inference steps",
                    minimum=1,
                    maximum=max_steps,
                    value=min(DEFAULT_INFERENCE_STEPS, max_steps),
                    step=1,
                    info=f"{num_train_timesteps} is the paper's full chain; fewer steps respace it",
                    elem_id="generate-steps",
                )
            )
            variance = gr.Radio(choices=VARIANCE_CHOICES, value=SIGMA_BETA, label="Reverse-process variance σₜ²")
            button = gr.Button("Generate", variant="primary", elem_id="generate-button")
        with gr.Column(scale=2):
            gallery = gr.Gallery(
                label="Samples",
                columns=4,
                format="png",
                object_fit="contain",
                height=340,
                elem_classes=["pixelated"],
                elem_id="generate-gallery",
            )
            gr.Markdown("**Denoising trajectory of sample #1** (Ho et al. 2020, Fig. 6): noise → sample")
            strip = gr.Image(
                format="png",
                interactive=False,
                show_label=False,
                elem_classes=["pixelated"],
                elem_id="generate-trajectory",
            )
    gr.Markdown(generate_how_it_works(pipeline.scheduler), elem_classes=["how-it-works"])

    def run(seed: int, num_images: int, inference_steps: int, variance: str, progress=gr.Progress()):  # noqa: B008
        return generate(pipeline, seed, num_images, inference_steps, variance, progress)

    button.click(
        run,
        inputs=[seed, num_images, steps, variance],
        outputs=[gallery, strip],
        api_name="generate",
        concurrency_id="inference",
        concurrency_limit=INFERENCE_CONCURRENCY,
    )


def build_forward_tab(scheduler: DDPMPaperScheduler) -> None:
    num_train_timesteps = scheduler.config.num_train_timesteps
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = image_input("Image x₀", elem_id="forward-image")
            timestep = check_whole_number_range(
                gr.Slider(
                    label="t",
                    minimum=0,
                    maximum=num_train_timesteps - 1,
                    value=num_train_timesteps // 4,
                    step=1,
                    elem_id="forward-t",
                )
            )
            noise_seed = check_whole_number_range(
                gr.Number(label="Noise seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
            )
            button = gr.Button("Add noise", variant="primary", elem_id="forward-button")
            examples = example_images()
            if examples:
                gr.Examples(examples=examples, inputs=image, label="Examples", elem_id="forward-examples")
        with gr.Column(scale=2):
            with gr.Row():
                noisy = image_output("xₜ ~ q(xₜ | x₀)", height=300, elem_id="forward-noisy", scale=2)
                curve = gr.Image(
                    label="ᾱₜ and SNR over t",
                    show_label=False,
                    format="png",
                    interactive=False,
                    height=300,
                    elem_id="forward-curve",
                    scale=3,
                )
            summary = gr.Markdown(elem_id="forward-summary")
    gr.Markdown(forward_how_it_works(scheduler), elem_classes=["how-it-works"])

    def run(image: PIL.Image.Image | None, t: int, noise_seed: int):
        return forward_diffusion(scheduler, image, t, noise_seed)

    settings = {"inputs": [image, timestep, noise_seed], "outputs": [noisy, curve, summary]}
    button.click(
        run,
        **settings,
        api_name="forward_diffusion",
        concurrency_id="inference",
        concurrency_limit=INFERENCE_CONCURRENCY,
    )
    timestep.release(
        run, **settings, api_visibility="private", concurrency_id="inference", concurrency_limit=INFERENCE_CONCURRENCY
    )


def save_pil_to_cache_atomically(
    img: PIL.Image.Image, cache_dir: str, name: str = "image", format: str = "webp"
) -> str:
    """gradio's `processing_utils.save_pil_to_cache`, but never rewriting a file in place.

    gradio names a cached output by the hash of its bytes and rewrites it on every request, so when two requests give
    the same image (two users segmenting the same example) one response can send a file the other is half-way through
    rewriting: the client gets "peer closed connection without sending complete message body" (gradio 6.31). Here an
    existing file (same hash, so same bytes) is left alone and a new one appears complete, by rename.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if not path.is_file():
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return str(path)


def build_demo(
    swin_fpn_model: str | os.PathLike | None = None,
    ddpm_model: str | os.PathLike | None = None,
) -> gr.Blocks:
    """Loads both models and builds the queued Space.

    Args:
        swin_fpn_model: segmentation model folder or Hub repo id; default `$SWIN_FPN_MODEL`, else
            `demo_models/swin-fpn-shapes`.
        ddpm_model: `DDPMPaperPipeline` folder or Hub repo id; default `$DDPM_MODEL`, else `demo_models/ddpm-digits`.

    Raises:
        ModelLoadError: a model is missing or unreadable (the message says to run `make demo-models`).
    """
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically  # see its docstring: a gradio race
    segmenter = load_segmenter(model_location(swin_fpn_model, SWIN_FPN_MODEL_ENV, DEFAULT_SWIN_FPN_MODEL))
    ddpm_source = model_location(ddpm_model, DDPM_MODEL_ENV, DEFAULT_DDPM_MODEL)
    pipeline = load_ddpm(ddpm_source)
    with gr.Blocks(title="Swin + FPN segmentation · DDPM generation") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Segment", id="segment"):
                build_segment_tab(segmenter)
            with gr.Tab("Generate", id="generate"):
                build_generate_tab(pipeline)
            with gr.Tab("Forward process", id="forward"):
                build_forward_tab(pipeline.scheduler)
        gr.Markdown(f"Models: segmentation `{segmenter.source}` · diffusion `{ddpm_source}`")
    demo.queue(default_concurrency_limit=INFERENCE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    return demo


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas (as MALLOC_ARENA_MAX does); False where that is not glibc.

    glibc gives threads that allocate at the same time their own arenas (up to 8 per core) and keeps freed memory in
    each; with gradio's worker threads the Space's resident memory kept rising from round to round of load: 817 to
    1071 MiB over 5 rounds of 150 requests (benchmarks/bench_space_load.py), 771 to 831 MiB with this cap set at
    start-up, flat at ~812 MiB from the second round with MALLOC_ARENA_MAX=2 in the environment (arenas created while
    importing are not capped by a later call; set the variable where you can).
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def main() -> int:
    """Serves the Space on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860)."""
    limit_malloc_arenas()
    try:
        demo = build_demo()
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    demo.launch(**launch_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
