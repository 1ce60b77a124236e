"""Procedural "shapes" segmentation data: solid shapes on random textured backgrounds.

Each image holds 2 or 3 non-overlapping shapes (1 in about 2% of images, where no second one fits; circle,
square, triangle, of bounding radius 15-26% of the image side; squares and triangles randomly rotated) with a random
solid colour each, on a background drawn from five textures (colour noise, linear gradient, sinusoidal
stripes, checkerboard, smooth blotches) made of random colours. Shape and background colours come from the same
distribution (uniform RGB), so only the geometry tells the classes apart; a shape's colour is redrawn until it
stands out from the background colours (RGB distance at least ``MIN_CONTRAST``). Shapes do not touch, so every
shape's pixels are exactly the pixels of its class inside its bounding circle. Edges are hard (no anti-aliasing):
the label map matches the image pixel for pixel.

Randomness: image ``i`` of a split is drawn from ``np.random.default_rng([SHAPES_STREAM, seed, split_id, i])``, so
a dataset is fully determined by ``(seed, split, resolution)``, a smaller ``num_examples`` gives a prefix of the
larger dataset, and the ``train`` and ``test`` splits come from different seed streams.

Rasterisation is vectorised with numpy over the pixel grid (one array expression per shape and per background):
about 0.5-0.7 s per 1,000 64x64 images on one core; PNG-encoding them into a ``Dataset`` adds about as much.
A small stride-4 CNN reaches a test mean IoU of about 0.93 after 150 s of single-thread CPU training on the
default 2,000 training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES_ID2LABEL: dict[int, str] = {0: "background", 1: "circle", 2: "square", 3: "triangle"}
SHAPES_SPLITS: dict[str, int] = {"train": 0, "test": 1}
SHAPES_DEFAULT_SIZES: dict[str, int] = {"train": 2000, "test": 200}
SHAPES_DEFAULT_RESOLUTION = 64
BACKGROUND_KINDS = ("noise", "gradient", "stripes", "checker", "blotches")

SHAPES_STREAM = 0x5A4E5  # separates these seed streams from any other use of the same seed
MIN_SHAPES, MAX_SHAPES = 2, 3
# Circumradius of a shape's bounding circle, as a fraction of the image side.
MIN_RADIUS, MAX_RADIUS = 0.15, 0.26
# A circle's radius relative to its bounding circle, so circles and squares have about the same area (2 r^2).
CIRCLE_RADIUS_FACTOR = 0.8
MIN_GAP_PIXELS = 2.0
MIN_CONTRAST = 100.0
PLACEMENT_ATTEMPTS = 100
COLOUR_ATTEMPTS = 50
POLYGON_SIDES = {2: 4, 3: 3}  # class id -> number of sides of the regular polygon


@dataclass(frozen=True)
class PlacedShape:
    """One shape drawn into an image: its class id, centre (x, y) in pixels, bounding radius, angle and RGB colour."""

    label: int
    center_x: float
    center_y: float
    radius: float
    angle: float
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class ShapesArrays:
    """A generated split: ``images`` (N, H, W, 3) uint8, ``annotations`` (N, H, W) uint8 and each image's shapes."""

    images: np.ndarray
    annotations: np.ndarray
    shapes: list[list[PlacedShape]]


def pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the (x, y) coordinates of the pixel centres, each of shape (resolution, resolution), float32."""
    centres = np.arange(resolution, dtype=np.float32) + 0.5
    return centres[None, :].repeat(resolution, 0), centres[:, None].repeat(resolution, 1)


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """Draw one RGB colour, uniform in [0, 255]^3 (float32)."""
    return rng.uniform(0.0, 255.0, size=3).astype(np.float32)


def _projection(x: np.ndarray, y: np.ndarray, angle: float) -> np.ndarray:
    """Signed distance of every pixel along the direction ``angle``."""
    return x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))


def _blend(colour_a: np.ndarray, colour_b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-pixel mix ``(1 - weight) * a + weight * b`` of two colours, shape (H, W, 3)."""
    return colour_a + weight[..., None] * (colour_b - colour_a)


def _smooth_noise(rng: np.random.Generator, resolution: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [0, 1] on a ``cells`` x ``cells`` lattice, shape (H, W)."""
    lattice = rng.uniform(0.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    position = np.linspace(0.0, cells, resolution, dtype=np.float32)
    low = np.minimum(position.astype(np.int64), cells - 1)
    frac = position - low
    rows = lattice[low] * (1 - frac)[:, None] + lattice[low + 1] * frac[:, None]
    return rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :]


def render_background(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, kind: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw a background texture of two random colours.

    Returns the (H, W, 3) float32 image and the reference colours that shapes must contrast with.
    """
    resolution = x.shape[0]
    colour_a, colour_b = random_colour(rng), random_colour(rng)
    if kind == "noise":
        sigma = rng.uniform(10.0, 40.0)
        noise = rng.standard_normal(size=(resolution, resolution, 3)).astype(np.float32) * np.float32(sigma)
        return colour_a + noise, [colour_a]
    if kind == "gradient":
        along = _projection(x, y, rng.uniform(0.0, 2 * np.pi))
        weight = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    elif kind == "stripes":
        period = rng.uniform(0.06, 0.2) * resolution
        phase = rng.uniform(0.0, 2 * np.pi)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * _projection(x, y, rng.uniform(0.0, np.pi)) / period + phase)
    elif kind == "checker":
        cell = rng.uniform(0.06, 0.2) * resolution
        weight = ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    elif kind == "blotches":
        weight = _smooth_noise(rng, resolution, cells=int(rng.integers(2, 6)))
    else:
        raise ValueError(f"unknown background kind {kind!r}; valid: {', '.join(BACKGROUND_KINDS)}")
    return _blend(colour_a, colour_b, weight.astype(np.float32)), [colour_a, colour_b, (colour_a + colour_b) / 2]


def shape_mask(shape: PlacedShape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centres lie inside ``shape``."""
    dx, dy = x - np.float32(shape.center_x), y - np.float32(shape.center_y)
    if shape.label == 1:
        radius = CIRCLE_RADIUS_FACTOR * shape.radius
        return dx * dx + dy * dy <= np.float32(radius * radius)
    sides = POLYGON_SIDES[shape.label]
    # A regular polygon is the intersection of half-planes: the projection on each edge normal is at most the
    # inradius. The normals point to the edge midpoints, between consecutive vertices.
    inradius = np.float32(shape.radius * np.cos(np.pi / sides))
    inside = np.ones(x.shape, dtype=bool)
    for side in range(sides):
        normal_angle = shape.angle + np.pi / sides + 2 * np.pi * side / sides
        inside &= _projection(dx, dy, normal_angle) <= inradius
    return inside


def _contrasting_colour(rng: np.random.Generator, references: list[np.ndarray]) -> np.ndarray:
    """Draw colours until one is at least ``MIN_CONTRAST`` from every reference; else keep the most distant draw."""
    best, best_distance = None, -1.0
    for _ in range(COLOUR_ATTEMPTS):
        colour = random_colour(rng)
        distance = min(float(np.linalg.norm(colour - reference)) for reference in references)
        if distance >= MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _place_shape(rng: np.random.Generator, resolution: int, placed: list[PlacedShape]) -> tuple[float, ...] | None:
    """Find a centre and radius whose bounding circle is inside the image and clear of ``placed``; None if none.

    Draws ``PLACEMENT_ATTEMPTS`` candidates at once and keeps the first that fits.
    """
    radii = rng.uniform(MIN_RADIUS, MAX_RADIUS, size=PLACEMENT_ATTEMPTS) * resolution
    centres = rng.uniform(radii[:, None] + 1.0, resolution - radii[:, None] - 1.0, size=(PLACEMENT_ATTEMPTS, 2))
    fits = np.ones(PLACEMENT_ATTEMPTS, dtype=bool)
    for other in placed:
        distance = np.hypot(centres[:, 0] - other.center_x, centres[:, 1] - other.center_y)
        fits &= distance >= radii + other.radius + MIN_GAP_PIXELS
    if not fits.any():
        return None
    first = int(np.argmax(fits))
    return float(centres[first, 0]), float(centres[first, 1]), float(radii[first])


def render_example(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[PlacedShape]]:
    """Draw one image, its label map and the list of its shapes from ``rng``."""
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    image, references = render_background(rng, x, y, kind)
    annotation = np.zeros(x.shape, dtype=np.uint8)
    placed: list[PlacedShape] = []
    for _ in range(int(rng.integers(MIN_SHAPES, MAX_SHAPES + 1))):
        placement = _place_shape(rng, x.shape[0], placed)
        if placement is None:
            continue
        label = int(rng.integers(1, len(SHAPES_ID2LABEL)))
        colour = np.round(_contrasting_colour(rng, references))
        shape = PlacedShape(label, *placement, float(rng.uniform(0.0, 2 * np.pi)), tuple(int(c) for c in colour))
        mask = shape_mask(shape, x, y)
        image[mask] = colour
        annotation[mask] = label
        placed.append(shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), annotation, placed


def generate_shapes(
    num_examples: int, resolution: int = SHAPES_DEFAULT_RESOLUTION, *, seed: int = 0, split: str = "train"
) -> ShapesArrays:
    """Generate ``num_examples`` images of ``split`` at ``resolution`` x ``resolution`` from ``seed``."""
    if split not in SHAPES_SPLITS:
        raise ValueError(f"unknown split {split!r} for 'shapes'; valid: {', '.join(SHAPES_SPLITS)}")
    if resolution < 16:
        raise ValueError(f"shapes resolution must be at least 16, got {resolution}")
    if seed < 0 or num_examples < 0:
        raise ValueError(f"seed and num_examples must be non-negative, got seed={seed}, num_examples={num_examples}")
    x, y = pixel_grid(resolution)
    images = np.empty((num_examples, resolution, resolution, 3), dtype=np.uint8)
    annotations = np.empty((num_examples, resolution, resolution), dtype=np.uint8)
    shapes: list[list[PlacedShape]] = []
    for index in range(num_examples):
        rng = np.random.default_rng([SHAPES_STREAM, seed, SHAPES_SPLITS[split], index])
        images[index], annotations[index], placed = render_example(rng, x, y)
        shapes.append(placed)
    return ShapesArrays(images, annotations, shapes)
