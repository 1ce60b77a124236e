"""Small image helpers shared by the CLI, the Hub cards, the training scripts and the Space: grids and the class palette.

The palette is the one place class colours come from, so a class has the same colour in the training images, the
model card's example and the Space: a dark grey for background classes, ten distinct colours, then golden-angle hues;
a model whose labels are ADE20K's 150 classes (the Swin paper's Table 3 models, `openmmlab/upernet-swin-*`) gets the
standard ADE20K palette of mmsegmentation's `ADE20KDataset` instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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

# ADE20K's 150 classes (SceneParse150) in id order and their colours, as mmsegmentation's `ADE20KDataset.METAINFO`
# has them ("bed " with its trailing space, as there and in the `id2label` of the openmmlab/upernet-* repos).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip


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


def is_ade20k(id2label: Mapping[int, str]) -> bool:
    """Whether the labels are ADE20K's 150 classes in their order (`ADE20K_CLASSES`; a name may carry its synonyms
    after a comma, "windowpane, window", as in SceneParse150's `objectInfo150`)."""
    names = [id2label.get(class_id, "") for class_id in range(len(ADE20K_CLASSES))]
    return len(id2label) == len(ADE20K_CLASSES) and all(
        name.split(",")[0].strip().lower() == ade.strip() for name, ade in zip(names, ADE20K_CLASSES)
    )


def class_colours(id2label: Mapping[int, str]) -> np.ndarray:
    """One RGB colour per class id, uint8 `(num_labels, 3)`: `ADE20K_PALETTE` when the labels are ADE20K's
    (`is_ade20k`); otherwise a dark grey for background classes, `CLASS_PALETTE` for the others in id order, then
    golden-angle hues (so that any number of classes stay apart)."""
    if is_ade20k(id2label):
        return np.array(ADE20K_PALETTE, dtype=np.uint8)
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


def agg_pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str | Path, title: str = "") -> Path:
    """Write a matplotlib ``figure`` (with ``title`` above it, if any) to ``path`` at 100 dpi, creating the folder,
    and close it; returns the path."""
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    agg_pyplot().close(figure)
    return path
