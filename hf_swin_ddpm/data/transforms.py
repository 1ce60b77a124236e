"""Training and evaluation transforms for both models, written with PIL, numpy and torch (no torchvision).

Reproducible augmentation: every random decision for an example comes from
``np.random.default_rng([seed, epoch, index])`` (see :func:`example_rng`), where ``index`` is the example's position
in the dataset. The augmentation of an example therefore depends neither on global random state, nor on the order
in which examples are visited, nor on the number of processes or data-loader workers, so a run resumed from a
checkpoint at any step sees exactly the augmented examples an uninterrupted run would see. Call ``set_epoch`` at
the start of every epoch (before creating the epoch's data-loader iterator, so workers get the new value).

The transforms are batch callables for ``Dataset.with_transform``. They read each example's index from the
``INDEX_COLUMN`` column, which :func:`attach_transform` adds, or from the ``indices`` argument
(``IterableDataset.map(..., with_indices=True)``); transforms without randomness do not need indices.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_IGNORE_INDEX = 255
INDEX_COLUMN = "__index__"
# Resampling for images: bilinear (as diffusers' train_unconditional.py), which keeps upscaled 8x8 digits smooth
# where bicubic overshoots into ringing. Label maps always use nearest neighbour, so they keep only valid class ids.
IMAGE_RESAMPLE = Image.Resampling.BILINEAR
LABEL_RESAMPLE = Image.Resampling.NEAREST

Batch = dict[str, list[Any]]


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator for the augmentation of example ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return np.random.default_rng([seed, epoch, index])


def check_labels(
    labels: np.ndarray, num_labels: int, ignore_index: int = DEFAULT_IGNORE_INDEX, where: str = "a label map"
) -> None:
    """Raise ``ValueError`` naming the first value in ``labels`` outside ``[0, num_labels)`` that is not
    ``ignore_index``; ``where`` says which example (e.g. ``"example 12"``)."""
    labels = np.asarray(labels)
    invalid = ((labels < 0) | (labels >= num_labels)) & (labels != ignore_index)
    if invalid.any():
        values = np.unique(labels[invalid])
        raise ValueError(
            f"label value {int(values[0])} in {where} is outside [0, {num_labels}) and is not the ignore index "
            f"{ignore_index} (invalid values: {', '.join(str(int(v)) for v in values[:10])})"
        )


def _describe(index: int | None, image: Image.Image | None = None) -> str:
    """``"example 3 (path/to/file.png)"``: how an error names the example it is about."""
    where = "an example" if index is None else f"example {index}"
    filename = getattr(image, "filename", "") if image is not None else ""
    return f"{where} ({filename})" if filename else where


class IndexedTransform:
    """Base of the batch transforms: holds the seed and epoch and finds each example's index."""

    needs_indices = False
    output_columns: tuple[str, ...] = ()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` in the per-example random generators from now on."""
        self.epoch = epoch

    def batch_indices(self, batch: Batch, indices: Sequence[int] | None) -> list[int | None]:
        """The dataset index of every example in ``batch`` (None where unknown and not needed)."""
        size = len(next(iter(batch.values())))
        if indices is None and INDEX_COLUMN in batch:
            indices = batch[INDEX_COLUMN]
        if indices is not None:
            return [int(index) for index in indices]
        if self.needs_indices:
            raise ValueError(
                f"{type(self).__name__} draws random augmentations per example and needs the example indices: "
                "apply it with hf_swin_ddpm.data.attach_transform(dataset, transform)"
            )
        return [None] * size

    def rng(self, index: int | None) -> np.random.Generator | None:
        """The example's random generator, or None for a transform without randomness."""
        return example_rng(self.seed, self.epoch, index) if self.needs_indices else None


class DDPMTransform(IndexedTransform):
    """Image → ``{"input": float tensor (C, H, W) in [-1, 1]}`` for DDPM training.

    Converts to "L" (``channels=1``) or "RGB" (``channels=3``), resizes the short side to ``resolution`` with
    bilinear resampling and centre-crops a square (``ImageOps.fit``), optionally flips horizontally with
    probability 1/2, and maps uint8 ``x`` to ``x / 127.5 - 1``.
    """

    output_columns = ("input",)

    def __init__(
        self,
        resolution: int,
        channels: int = 3,
        random_flip: bool = False,
        *,
        seed: int = 0,
        image_column: str = "image",
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        super().__init__(seed)
        self.resolution = resolution
        self.channels = channels
        self.random_flip = random_flip
        self.image_column = image_column
        self.needs_indices = random_flip

    def transform_image(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Transform one PIL image; ``rng`` decides the flip (required when ``random_flip``)."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        if image.size != (self.resolution, self.resolution):
            image = ImageOps.fit(image, (self.resolution, self.resolution), method=IMAGE_RESAMPLE)
        array = np.asarray(image, dtype=np.float32).reshape(self.resolution, self.resolution, self.channels)
        if self.random_flip:
            if rng is None:
                raise ValueError("random_flip needs a random generator for each image")
            if rng.random() < 0.5:
                array = array[:, ::-1]
        array = array / 127.5 - 1.0
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def __call__(self, batch: Batch, indices: Sequence[int] | None = None) -> dict[str, list[torch.Tensor]]:
        """Batch transform for ``with_transform`` (or ``IterableDataset.map(batched=True, with_indices=True)``)."""
        images = batch[self.image_column]
        return {
            "input": [
                self.transform_image(image, self.rng(index))
                for image, index in zip(images, self.batch_indices(batch, indices), strict=True)
            ]
        }


def _image_and_labels(
    image: Image.Image, annotation: Image.Image, index: int | None
) -> tuple[Image.Image, np.ndarray]:
    """The RGB image and the annotation as an integer (H, W) array, after checking they fit together."""
    if annotation.size != image.size:
        raise ValueError(
            f"{_describe(index, annotation)}: the annotation is {annotation.size[0]}x{annotation.size[1]} but its "
            f"image is {image.size[0]}x{image.size[1]}; masks must have the size of their images"
        )
    labels = np.asarray(annotation)
    if labels.ndim != 2:
        raise ValueError(
            f"{_describe(index, annotation)}: the annotation has mode {annotation.mode!r}; expected a single-channel "
            "label map (mode L, P or I) whose pixel values are class ids"
        )
    return image.convert("RGB"), labels.astype(np.int64)


class SegmentationTransform(IndexedTransform):
    """Shared part of the segmentation transforms: label preparation, normalisation, batching."""

    output_columns = ("pixel_values", "labels")

    def __init__(
        self,
        resolution: int,
        *,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        num_labels: int | None = None,
        reduce_labels: bool = False,
        seed: int = 0,
        image_column: str = "image",
        annotation_column: str = "annotation",
    ) -> None:
        super().__init__(seed)
        self.resolution = resolution
        self.ignore_index = ignore_index
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.num_labels = num_labels
        self.reduce_labels = reduce_labels
        self.image_column = image_column
        self.annotation_column = annotation_column

    def checked_example(
        self, image: Image.Image, annotation: Image.Image, rng: np.random.Generator | None, index: int | None
    ) -> tuple[Image.Image, np.ndarray]:
        """The RGB image and its checked label array, for a random transform (which needs ``rng``)."""
        if rng is None:
            raise ValueError(f"{type(self).__name__} needs a random generator for each example")
        image, labels = _image_and_labels(image, annotation, index)
        return image, self.prepare_labels(labels, _describe(index, annotation))

    def prepare_labels(self, labels: np.ndarray, where: str) -> np.ndarray:
        """Apply ``reduce_labels`` (0 → ignore, others minus 1, as for ADE20K) and check the values."""
        if self.reduce_labels:
            labels = np.where(labels == 0, self.ignore_index, labels - 1)
            labels[labels == self.ignore_index - 1] = self.ignore_index
        if self.num_labels is not None:
            check_labels(labels, self.num_labels, self.ignore_index, where)
        return labels

    def normalize(self, image: Image.Image) -> np.ndarray:
        """uint8 RGB image → float32 (H, W, 3) with ``(x / 255 - mean) / std``."""
        return (np.asarray(image, dtype=np.float32) / 255.0 - self.mean) / self.std

    def transform_example(
        self, image: Image.Image, annotation: Image.Image, rng: np.random.Generator | None, index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the normalised (H, W, 3) image and the (H, W) labels of one example."""
        raise NotImplementedError

    def __call__(self, batch: Batch, indices: Sequence[int] | None = None) -> dict[str, list[torch.Tensor]]:
        """Batch transform: ``pixel_values`` float32 (3, H, W) and ``labels`` int64 (H, W) per example."""
        pixel_values, labels = [], []
        examples = zip(batch[self.image_column], batch[self.annotation_column], strict=True)
        for (image, annotation), index in zip(examples, self.batch_indices(batch, indices), strict=True):
            image_array, label_array = self.transform_example(image, annotation, self.rng(index), index)
            pixel_values.append(torch.from_numpy(np.ascontiguousarray(image_array.transpose(2, 0, 1))))
            labels.append(torch.from_numpy(np.ascontiguousarray(label_array, dtype=np.int64)))
        return {"pixel_values": pixel_values, "labels": labels}


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map to ``size`` = (width, height)."""
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, LABEL_RESAMPLE), dtype=np.int64)


class SegmentationTrainTransform(SegmentationTransform):
    """Random scale, random crop, random horizontal flip and normalisation (the Swin/mmseg ADE20K recipe).

    The scale maps the short side to ``resolution`` times a factor drawn uniformly from ``scale_range``
    (image bilinear, labels nearest). A crop of ``resolution`` x ``resolution`` is taken at a random offset; where
    the scaled image is smaller, the normalised image is padded with 0 (the mean colour) and the labels with
    ``ignore_index``, right and bottom. The flip happens with probability ``flip_probability``.
    Random draws per example, in order: scale, crop top, crop left, flip, from ``example_rng(seed, epoch, index)``.
    """

    needs_indices = True

    def __init__(
        self,
        resolution: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        flip_probability: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(resolution, ignore_index=ignore_index, mean=mean, std=std, **kwargs)
        self.scale_range = scale_range
        self.flip_probability = flip_probability

    def _pad(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pad right/bottom to at least ``resolution``: 0 on the image, ``ignore_index`` on the labels."""
        pad_height = max(self.resolution - labels.shape[0], 0)
        pad_width = max(self.resolution - labels.shape[1], 0)
        if pad_height == 0 and pad_width == 0:
            return image, labels
        image = np.pad(image, ((0, pad_height), (0, pad_width), (0, 0)), constant_values=0.0)
        labels = np.pad(labels, ((0, pad_height), (0, pad_width)), constant_values=self.ignore_index)
        return image, labels

    def transform_example(
        self, image: Image.Image, annotation: Image.Image, rng: np.random.Generator | None, index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.checked_example(image, annotation, rng, index)
        factor = self.resolution / min(image.size) * rng.uniform(*self.scale_range)
        size = (max(1, round(image.size[0] * factor)), max(1, round(image.size[1] * factor)))
        image_array = self.normalize(image.resize(size, IMAGE_RESAMPLE))
        image_array, labels = self._pad(image_array, _resize_labels(labels, size))
        top = int(rng.integers(0, labels.shape[0] - self.resolution + 1))
        left = int(rng.integers(0, labels.shape[1] - self.resolution + 1))
        window = (slice(top, top + self.resolution), slice(left, left + self.resolution))
        image_array, labels = image_array[window], labels[window]
        if rng.random() < self.flip_probability:
            image_array, labels = image_array[:, ::-1], labels[:, ::-1]
        return image_array, labels


class SegmentationEvalTransform(SegmentationTransform):
    """Resize to ``resolution`` x ``resolution`` (image bilinear, labels nearest) and normalise; no randomness."""

    def sizes(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """(width, height) of the resized image and of the resized labels (None: labels keep their size)."""
        return (self.resolution, self.resolution), (self.resolution, self.resolution)

    def transform_example(
        self,
        image: Image.Image,
        annotation: Image.Image,
        rng: np.random.Generator | None = None,
        index: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        image, labels = _image_and_labels(image, annotation, index)
        labels = self.prepare_labels(labels, _describe(index, annotation))
        image_size, label_size = self.sizes(*image.size)
        if image_size != image.size:
            image = image.resize(image_size, IMAGE_RESAMPLE)
        if label_size is not None:
            labels = _resize_labels(labels, label_size)
        return self.normalize(image), labels


def keep_ratio_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """The (height, width) mmseg's ``Resize(scale, keep_ratio=True)`` gives (mmcv's ``rescale_size``): the largest
    aspect-preserving size whose long side is at most ``max(scale)`` and short side at most ``min(scale)``, each side
    rounded to the nearest pixel. ``(2048, 512)`` brings a 683x512 ADE20K image to 683x512 and 256x256 to 512x512."""
    if len(scale) != 2 or min(scale) < 1:
        raise ValueError(f"scale must be two positive sizes such as (2048, 512), got {tuple(scale)}")
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def short_side_scale(resolution: int) -> tuple[int, int]:
    """mmseg's base scale for a training resolution (crop size): the short side at `resolution`, the long side at
    most 4x it, as ``(2048, 512)`` for 512 crops. The test scale of models trained with random rescaling of the short
    side around `resolution` (``SegmentationTrainTransform``), and of saved models that record none."""
    return 4 * int(resolution), int(resolution)


class SegmentationKeepRatioEvalTransform(SegmentationEvalTransform):
    """mmseg's test pipeline: the image resized (bilinear) keeping its aspect ratio to ``scale`` (see
    :func:`keep_ratio_size`) and normalised; the label map left at its original size, to score predictions brought
    back to it. No randomness. Batch with :func:`collate_segmentation_lists` (the sizes differ)."""

    def __init__(self, scale: Sequence[int], **kwargs: Any) -> None:
        keep_ratio_size(1, 1, scale)  # checks the scale
        super().__init__(min(scale), **kwargs)
        self.scale = (int(scale[0]), int(scale[1]))

    def sizes(self, width: int, height: int) -> tuple[tuple[int, int], None]:
        new_height, new_width = keep_ratio_size(height, width, self.scale)
        return (new_width, new_height), None


# mmseg's PhotoMetricDistortion defaults (mmseg/datasets/transforms/transforms.py).
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # in OpenCV's hue units (degrees / 2, 180 per turn)
CV2_HUE_UNITS, PIL_HUE_UNITS = 180, 256


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's ``convert``: ``clip(x * alpha + beta, 0, 255)`` truncated to uint8."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _hsv_apply(image: np.ndarray, channel: int, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``change`` to one channel of the image in HSV (PIL's, every channel 0-255) and convert back."""
    hsv = np.array(Image.fromarray(image).convert("HSV"))
    hsv[..., channel] = change(hsv[..., channel])
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def photo_metric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's ``PhotoMetricDistortion`` on a uint8 RGB (H, W, 3) array, each step with probability 1/2, in its order:
    brightness (add U(-32, 32)), contrast (multiply by U(0.5, 1.5)) either here or last (a coin flip), saturation
    (multiply S by U(0.5, 1.5)), hue (shift H by an integer in [-18, 18) OpenCV units, i.e. 2 degrees each), contrast
    if not done earlier. HSV conversions use PIL (its hue scale of 256 per turn stands in for OpenCV's 180). Only the
    image changes: label maps are never passed here."""

    def brightness(values: np.ndarray) -> np.ndarray:
        return _convert(values, beta=rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)) if rng.integers(2) else values

    def contrast(values: np.ndarray) -> np.ndarray:
        return _convert(values, alpha=rng.uniform(*CONTRAST_RANGE)) if rng.integers(2) else values

    image = brightness(image)
    contrast_first = rng.integers(2) == 1
    if contrast_first:
        image = contrast(image)
    if rng.integers(2):
        alpha = rng.uniform(*SATURATION_RANGE)
        image = _hsv_apply(image, 1, lambda saturation: _convert(saturation, alpha=alpha))
    if rng.integers(2):
        shift = int(rng.integers(-HUE_DELTA, HUE_DELTA)) * PIL_HUE_UNITS / CV2_HUE_UNITS
        image = _hsv_apply(image, 0, lambda hue: np.round(hue.astype(np.float64) + shift).astype(np.int64) % 256)
    if not contrast_first:
        image = contrast(image)
    return image


def cat_max_ratio_crop(
    labels: np.ndarray,
    crop_size: tuple[int, int],
    rng: np.random.Generator,
    cat_max_ratio: float = 0.75,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    max_attempts: int = 10,
) -> tuple[int, int]:
    """mmseg's ``RandomCrop`` offsets (top, left): a uniformly placed ``crop_size`` window, re-drawn up to
    ``max_attempts`` times while it holds fewer than two classes or one class covers ``cat_max_ratio`` or more of
    its non-ignored pixels (after the last attempt mmseg keeps one more unchecked draw, and so does this)."""
    margins = (max(labels.shape[0] - crop_size[0], 0), max(labels.shape[1] - crop_size[1], 0))

    def draw() -> tuple[int, int]:
        return int(rng.integers(0, margins[0] + 1)), int(rng.integers(0, margins[1] + 1))

    top, left = draw()
    if cat_max_ratio >= 1.0:
        return top, left
    for _ in range(max_attempts):
        window = labels[top : top + crop_size[0], left : left + crop_size[1]]
        classes, counts = np.unique(window, return_counts=True)
        counts = counts[classes != ignore_index]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
        top, left = draw()
    return top, left


class MMSegTrainTransform(SegmentationTrainTransform):
    """mmseg's ADE20K training pipeline (``configs/_base_/datasets/ade20k.py``), used by the Swin paper:

    ``RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)``: a ratio r ~ U(0.5, 2.0) and a
    keep-ratio resize to the scale times r (:func:`keep_ratio_size`; image bilinear, labels nearest);
    ``RandomCrop(crop_size, cat_max_ratio=0.75)`` (:func:`cat_max_ratio_crop`); ``RandomFlip(0.5)``;
    ``PhotoMetricDistortion`` (:func:`photo_metric_distortion`, image only); normalisation, then padding right and
    bottom to the crop with 0 on the image and ``ignore_index`` on the labels (mmseg's ``SegDataPreProcessor``).
    Random draws per example, in that order, from ``example_rng(seed, epoch, index)``: a resumed run sees the same
    crops.
    """

    needs_indices = True

    def __init__(
        self,
        crop_size: int = 512,
        scale: Sequence[int] = (2048, 512),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_probability: float = 0.5,
        photometric: bool = True,
        **kwargs: Any,
    ) -> None:
        keep_ratio_size(1, 1, scale)
        super().__init__(crop_size, flip_probability=flip_probability, **kwargs)
        self.scale, self.ratio_range = tuple(scale), tuple(ratio_range)
        self.cat_max_ratio, self.photometric = cat_max_ratio, photometric

    def transform_example(
        self, image: Image.Image, annotation: Image.Image, rng: np.random.Generator | None, index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.checked_example(image, annotation, rng, index)
        ratio = rng.uniform(*self.ratio_range)
        scale = (max(1, int(self.scale[0] * ratio)), max(1, int(self.scale[1] * ratio)))
        height, width = keep_ratio_size(image.height, image.width, scale)
        pixels = np.asarray(image.resize((width, height), IMAGE_RESAMPLE))
        labels = _resize_labels(labels, (width, height))
        crop = (self.resolution, self.resolution)
        top, left = cat_max_ratio_crop(labels, crop, rng, self.cat_max_ratio, self.ignore_index)
        window = (slice(top, top + crop[0]), slice(left, left + crop[1]))
        pixels, labels = pixels[window], labels[window]
        if rng.random() < self.flip_probability:
            pixels, labels = pixels[:, ::-1], labels[:, ::-1]
        if self.photometric:
            pixels = photo_metric_distortion(np.ascontiguousarray(pixels), rng)
        image_array = (pixels.astype(np.float32) / 255.0 - self.mean) / self.std
        return self._pad(image_array, labels)


class UnreadableImageError(ValueError):
    """An image (or label map) that cannot be decoded: the message names the data, the example and the file."""


# What PIL and datasets raise for a corrupt, truncated or missing image file.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _decode_failure(error: BaseException) -> str:
    """What went wrong, in one line (PIL names the in-memory file object, which says nothing to the user)."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error).strip())
    return text.splitlines()[0] if text else type(error).__name__


def _stored_file(value: object) -> str:
    """The file name an undecoded ``datasets.Image`` value carries (``{"bytes", "path"}``), or ``""``."""
    return (value.get("path") or "") if isinstance(value, dict) else ""


class DecodingTransform:
    """Decode a batch's image columns, then apply ``transform``: an unreadable example raises
    :class:`UnreadableImageError` naming ``source``, the example's index and its file, or, with
    ``skip_bad_examples``, is logged and becomes ``None`` in every output column (the collate functions drop it).

    The columns are stored undecoded (``datasets.Image(decode=False)``, see :func:`attach_transform`) and decoded here
    with their own ``datasets.Image`` features, so a readable image comes out exactly as ``datasets`` would give it.
    Which examples are skipped depends only on the data, so a resumed run skips the same ones.
    """

    def __init__(
        self,
        transform: Callable[..., dict[str, list[Any]]],
        image_features: dict[str, datasets.Image],
        source: str = "the dataset",
        skip_bad_examples: bool = False,
    ) -> None:
        self.transform = transform
        self.image_features = image_features
        self.source = source
        self.skip_bad_examples = skip_bad_examples

    def _decode_row(self, batch: Batch, row: int, index: int | None) -> dict[str, Any] | None:
        """The decoded image columns of one row; None when one cannot be read and bad examples are skipped."""
        decoded = {}
        for column, feature in self.image_features.items():
            value = batch[column][row]
            try:
                decoded[column] = feature.decode_example(value)
            except DECODE_ERRORS as error:
                file = _stored_file(value)
                where = f"example {'?' if index is None else index}" + (f" ({file})" if file else "")
                reason = _decode_failure(error).replace(f" {file!r}", "")
                message = f"{self.source}, {where}: the {column!r} column cannot be read as an image ({reason})"
                if not self.skip_bad_examples:
                    raise UnreadableImageError(
                        f"{message}; replace or remove the file, or skip unreadable examples "
                        "(--skip_bad_examples in the training scripts)"
                    ) from error
                logger.warning("skipping %s", message)
                return None
        return decoded

    def __call__(self, batch: Batch, indices: Sequence[int] | None = None) -> dict[str, list[Any]]:
        size = len(next(iter(batch.values())))
        if indices is None and INDEX_COLUMN in batch:
            indices = batch[INDEX_COLUMN]
        row_indices = [None] * size if indices is None else [int(index) for index in indices]
        decoded = [self._decode_row(batch, row, row_indices[row]) for row in range(size)]
        readable = [row for row in range(size) if decoded[row] is not None]
        subset = {column: [values[row] for row in readable] for column, values in batch.items()}
        for column in self.image_features:
            subset[column] = [decoded[row][column] for row in readable]
        kept_indices = None if indices is None else [row_indices[row] for row in readable]
        if not readable:  # the columns the transform would have returned, all None
            columns = getattr(self.transform, "output_columns", tuple(batch))
            return {column: [None] * size for column in columns}
        output = self.transform(subset, kept_indices)
        if len(readable) == size:
            return output
        expanded: dict[str, list[Any]] = {column: [None] * size for column in output}
        for position, row in enumerate(readable):
            for column, values in output.items():
                expanded[column][row] = values[position]
        return expanded


def _decoded_image_features(features: datasets.Features | None) -> dict[str, datasets.Image]:
    """The columns that ``datasets`` decodes to PIL images, with their features."""
    if not features:
        return {}
    return {
        name: feature for name, feature in features.items() if isinstance(feature, datasets.Image) and feature.decode
    }


def attach_transform(
    dataset: datasets.Dataset | datasets.IterableDataset,
    transform: Callable[..., dict[str, list[Any]]],
    *,
    source: str = "the dataset",
    skip_bad_examples: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Apply a batch transform lazily, giving it each example's index and decoding the images in a way that names
    an unreadable one (see :class:`DecodingTransform`; ``source`` is how errors name the data).

    A ``Dataset`` gets an ``INDEX_COLUMN`` with its row numbers and ``with_transform(transform)``; an
    ``IterableDataset`` gets ``map(transform, batched=True, with_indices=True)``, where the index is the position
    in the stream this process reads.
    """
    image_features = _decoded_image_features(dataset.features)
    for column in image_features:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    if image_features:
        transform = DecodingTransform(transform, image_features, source, skip_bad_examples)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(transform, batched=True, with_indices=True, remove_columns=dataset.column_names)
    if INDEX_COLUMN not in dataset.column_names:
        dataset = dataset.add_column(INDEX_COLUMN, np.arange(len(dataset), dtype=np.int64))
    return dataset.with_transform(transform)


def readable_examples(examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The examples of a batch that were read (skipped ones hold ``None``); an error when none was."""
    readable = [example for example in examples if all(value is not None for value in example.values())]
    if not readable:
        raise UnreadableImageError(
            f"all {len(examples)} examples of a batch are unreadable and were skipped; check the dataset's files"
        )
    return readable


def collate_ddpm(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack ``{"input": (C, H, W)}`` examples into ``{"input": (B, C, H, W)}`` (skipped examples left out)."""
    examples = readable_examples(examples)
    return {"input": torch.stack([example["input"] for example in examples])}


def collate_segmentation(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack examples into ``pixel_values`` (B, 3, H, W) float and ``labels`` (B, H, W) int64 (skipped ones left out)."""
    examples = readable_examples(examples)
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }


def collate_segmentation_lists(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    """Keep examples of different sizes as lists: ``pixel_values`` [(3, h, w)] and ``labels`` [(H, W)] (skipped ones
    left out)."""
    examples = readable_examples(examples)
    return {
        "pixel_values": [example["pixel_values"] for example in examples],
        "labels": [example["labels"] for example in examples],
    }
