"""What every tab of the Space shares: checks of the inputs (numbers, uploads) and image conversions.

Every problem becomes a `gr.Error` that names the input and what to do: gradio shows it in the page and API
clients get it as the error message.
"""

from __future__ import annotations

import io
import math
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
from matplotlib.figure import Figure

MAX_IMAGE_SIDE = 1024  # longer images are downscaled to this before inference
MAX_SEED = 2**32 - 1
# Uploads with more pixels are refused before they are decoded: a small PNG of one colour can hold hundreds of
# megapixels, several GB once decoded and converted. 50 megapixels is a large camera photo.
MAX_UPLOAD_PIXELS = 50_000_000
HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


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


def figure_to_image(figure: Figure, dpi: int = 110) -> PIL.Image.Image:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    buffer.seek(0)
    return PIL.Image.open(buffer).convert("RGB")
