"""mmseg's ADE20K training pipeline: RandomResize, cat_max_ratio RandomCrop, flip, PhotoMetricDistortion, padding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hf_swin_ddpm.data import MMSegTrainTransform, example_rng, photo_metric_distortion
from hf_swin_ddpm.data.transforms import cat_max_ratio_crop


def dominated_labels(size: int = 96) -> np.ndarray:
    """One class covers about 80% of the map; a few small islands of two others and some ignored pixels."""
    labels = np.zeros((size, size), dtype=np.int64)
    labels[10:30, 10:40] = 1
    labels[60:80, 50:90] = 2
    labels[:, :4] = 255
    return labels


def single_class_ratio_ok(window: np.ndarray, ratio: float) -> bool:
    classes, counts = np.unique(window[window != 255], return_counts=True)
    return len(classes) > 1 and counts.max() / counts.sum() < ratio


def test_cat_max_ratio_holds_over_many_draws():
    labels = dominated_labels()
    kept = baseline = 0
    draws = 300
    for index in range(draws):
        top, left = cat_max_ratio_crop(labels, (40, 40), example_rng(0, 0, index), cat_max_ratio=0.75)
        kept += single_class_ratio_ok(labels[top : top + 40, left : left + 40], 0.75)
        top, left = cat_max_ratio_crop(labels, (40, 40), example_rng(0, 0, index), cat_max_ratio=1.0)
        baseline += single_class_ratio_ok(labels[top : top + 40, left : left + 40], 0.75)
    assert baseline < 0.6 * draws  # without the constraint, many crops are dominated by one class
    # with it, a crop is dominated only when the first draw and all 10 re-draws are: probability (1 - p)^11
    expected_violations = draws * (1 - baseline / draws) ** 11
    assert draws - kept <= 3 * expected_violations + 3, (baseline, kept)


def test_crop_larger_than_the_map_starts_at_the_origin():
    rng = example_rng(0, 0, 0)
    assert cat_max_ratio_crop(np.zeros((10, 12), dtype=np.int64), (32, 32), rng) == (0, 0)


def example_pair(height: int = 90, width: int = 140) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
    annotation = Image.fromarray(dominated_labels(max(height, width))[:height, :width].astype(np.uint8), mode="L")
    return image, annotation


def test_transform_is_reproducible_per_seed_epoch_and_index():
    image, annotation = example_pair()
    transform = MMSegTrainTransform(crop_size=48, scale=(256, 64), num_labels=3)
    first = transform.transform_example(image, annotation, example_rng(7, 2, 11), 11)
    again = transform.transform_example(image, annotation, example_rng(7, 2, 11), 11)
    other = transform.transform_example(image, annotation, example_rng(7, 3, 11), 11)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == (48, 48, 3) and first[1].shape == (48, 48)


def test_random_resize_keeps_the_ratio_and_pads_with_the_ignore_index():
    image, annotation = example_pair(30, 60)  # resized by r in [0.5, 2] of (200, 20): 10x20 .. 40x80
    transform = MMSegTrainTransform(crop_size=64, scale=(200, 20), num_labels=3, photometric=False)
    padded = 0
    for index in range(20):
        pixels, labels = transform.transform_example(image, annotation, example_rng(0, 0, index), index)
        assert labels.shape == (64, 64) and pixels.shape == (64, 64, 3)
        valid_rows = int((labels != 255).any(axis=1).sum())
        padded += valid_rows < 64
        assert np.all(pixels[valid_rows:] == 0.0)  # normalised padding is 0
    assert padded == 20  # the short side (at most 40) never reaches the crop


def test_photo_metric_distortion_leaves_labels_untouched_and_changes_images():
    image, annotation = example_pair()
    with_photo = MMSegTrainTransform(crop_size=48, scale=(256, 64), num_labels=3)
    without = MMSegTrainTransform(crop_size=48, scale=(256, 64), num_labels=3, photometric=False)
    changed = 0
    for index in range(12):
        pixels, labels = with_photo.transform_example(image, annotation, example_rng(1, 0, index), index)
        plain_pixels, plain_labels = without.transform_example(image, annotation, example_rng(1, 0, index), index)
        assert np.array_equal(labels, plain_labels)
        changed += not np.array_equal(pixels, plain_pixels)
    assert changed >= 8  # each of four steps applies with probability 1/2


@pytest.mark.parametrize("seed", range(6))
def test_photo_metric_distortion_steps_follow_mmseg(seed):
    """Replays the draws: brightness adds beta and truncates, contrast multiplies, as mmseg's convert."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    result = photo_metric_distortion(pixels, np.random.default_rng(100 + seed))
    replay = np.random.default_rng(100 + seed)
    expected = pixels
    if replay.integers(2):
        expected = np.clip(expected.astype(np.float32) + replay.uniform(-32, 32), 0, 255).astype(np.uint8)
    contrast_first = replay.integers(2) == 1
    saturation, hue = None, None
    if contrast_first and replay.integers(2):
        expected = np.clip(expected.astype(np.float32) * replay.uniform(0.5, 1.5), 0, 255).astype(np.uint8)
    if replay.integers(2):
        saturation = replay.uniform(0.5, 1.5)
    if replay.integers(2):
        hue = replay.integers(-18, 18)
    if saturation is None and hue is None:  # no HSV round trip: the result is closed-form
        if not contrast_first and replay.integers(2):
            expected = np.clip(expected.astype(np.float32) * replay.uniform(0.5, 1.5), 0, 255).astype(np.uint8)
        assert np.array_equal(result, expected)
    assert result.dtype == np.uint8 and result.shape == pixels.shape
