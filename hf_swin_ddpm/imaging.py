"""Small image helpers shared by the CLI, the Hub cards, the training scripts and the Space: grids and the class palette.

The palette is the one place class colours come from, so a class has the same colour in the training images, the
model card's example and the Space: a dark grey for background classes, ten distinct colours, then golden-angle hues.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

BACKGROUND_NAMES = frozenset({"background", "bg"})
BACKGROUND_COLOUR = (48, 52, 63)
IGNORE_COLOUR = (255, 255, 255)  # pixels without a label (the loss's ignore index)
CLASS_PALETTE = (
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
)
GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def image_grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Paste equally sized images into a grid, ``columns`` wide (default: about square), row by row."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new(images[0].mode, (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image, ((index % columns) * width, (index // columns) * height))
    return grid


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """Two images next to each other on a white canvas, top-aligned."""
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def is_background(name: str) -> bool:
    """Whether a class name means background ("background", "bg"; any case and surrounding spaces)."""
    return name.strip().lower() in BACKGROUND_NAMES


def class_colours(id2label: Mapping[int, str]) -> np.ndarray:
    """One RGB colour per class id, uint8 `(num_labels, 3)`: a dark grey for background classes, `CLASS_PALETTE` for
    the others in id order, then golden-angle hues (so that any number of classes stay apart)."""
    num_labels = max(id2label) + 1 if id2label else 1
    colours = np.zeros((num_labels, 3), dtype=np.uint8)
    palette_index = 0
    for class_id in range(num_labels):
        if is_background(id2label.get(class_id, "")):
            colours[class_id] = BACKGROUND_COLOUR
            continue
        if palette_index < len(CLASS_PALETTE):
            colours[class_id] = CLASS_PALETTE[palette_index]
        else:
            colours[class_id] = _hsv_to_rgb((palette_index * GOLDEN_RATIO_CONJUGATE) % 1.0, 0.65, 0.95)
        palette_index += 1
    return colours


def colour_classes(classes: np.ndarray, colours: np.ndarray, ignore_index: int | None = None) -> Image.Image:
    """A class map as an RGB image in `colours` (from `class_colours`): ids beyond the classes are clipped to the
    nearest class, and `ignore_index` pixels (unlabelled ground truth) are `IGNORE_COLOUR`."""
    rgb = colours[np.clip(classes, 0, len(colours) - 1)]
    if ignore_index is not None:
        rgb[classes == ignore_index] = IGNORE_COLOUR
    return Image.fromarray(rgb)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    """HSV in [0, 1] to 8-bit RGB."""
    pil_colour = Image.new("HSV", (1, 1), (round(hue * 255), round(saturation * 255), round(value * 255)))
    return pil_colour.convert("RGB").getpixel((0, 0))
