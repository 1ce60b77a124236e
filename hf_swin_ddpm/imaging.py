"""Small image helpers shared by the CLI, the Hub cards and the training scripts."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image


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
