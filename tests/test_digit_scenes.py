"""The digit_scenes dataset: real MNIST digits on a canvas, labelled per pixel, train and test from disjoint digits."""

import numpy as np
import pytest

from hf_swin_ddpm.data import DIGIT_SCENES_ID2LABEL, SceneLayout, dataset_id2label, embedded_dataset
from hf_swin_ddpm.data.digit_scenes import (
    BACKGROUND_THRESHOLD,
    IGNORE_INDEX,
    INK_THRESHOLD,
    generate_digit_scenes,
)


def _marked_source() -> dict[str, np.ndarray]:
    """Forty 28x28 'digits': digit k is a solid 12x12 block of ink 200 + k with a faint (64) one-pixel rim; the
    training digits are classes 0-4, the held-out ones 5-9, so a canvas shows which source it drew from."""
    images = np.zeros((40, 28, 28), dtype=np.uint8)
    images[:, 7:21, 7:21] = 64
    for k in range(40):
        images[k, 8:20, 8:20] = 200 + k // 8
    labels = np.arange(40) // 4
    return {"images": images, "labels": labels, "is_test": labels >= 5}


def test_train_and_test_canvases_use_disjoint_source_digits():
    source = _marked_source()
    for split, allowed in (("train", set(range(1, 6))), ("test", set(range(6, 11)))):
        _, annotations = generate_digit_scenes(30, split, source=source)
        seen = set(np.unique(np.concatenate([a.ravel() for a in annotations]))) - {0, IGNORE_INDEX}
        assert seen and seen <= allowed, (split, seen)


def test_one_digit_canvas_labels_follow_the_ink_thresholds():
    layout = SceneLayout(canvas_size=40, min_digits=1, max_digits=1, min_digit_size=28, max_digit_size=28)
    images, annotations = generate_digit_scenes(12, "train", layout=layout, source=_marked_source())
    for image, annotation in zip(images, annotations, strict=True):
        ink = image[..., 0].astype(int)
        if ink.mean() > 127:  # an inverted canvas: black strokes on white
            ink = 255 - ink
        assert np.array_equal(image[..., 0], image[..., 2])
        digit = annotation[ink >= INK_THRESHOLD]
        assert digit.size and len(np.unique(digit)) == 1 and 1 <= digit[0] <= 10
        assert np.all(annotation[ink < BACKGROUND_THRESHOLD] == 0)
        assert np.all(annotation[(ink >= BACKGROUND_THRESHOLD) & (ink < INK_THRESHOLD)] == IGNORE_INDEX)


def test_the_later_digit_is_on_top_where_inks_overlap():
    source = _marked_source()
    layout = SceneLayout(canvas_size=28, min_digits=2, max_digits=2, min_digit_size=28, max_digit_size=28)
    found = 0
    for i in range(40):
        images, annotations = generate_digit_scenes(i + 1, "train", layout=layout, source=source)
        rng = np.random.default_rng([0xD161, 0, 0, i])
        # replay the draws of render_scene: count, then (index, size, top/left) per digit
        rng.integers(2, 3)
        first = int(rng.integers(20)), int(rng.integers(28, 29)), rng.integers(-7, 8, size=2)
        second = int(rng.integers(20)), int(rng.integers(28, 29)), rng.integers(-7, 8, size=2)
        if source["labels"][first[0]] == source["labels"][second[0]]:
            continue
        annotation = annotations[i]
        top, left = (int(v) for v in second[2])
        rows, cols = np.mgrid[0:28, 0:28]
        inside_second = (rows - top >= 8) & (rows - top < 20) & (cols - left >= 8) & (cols - left < 20)
        assert np.all(annotation[inside_second] == source["labels"][second[0]] + 1)
        found += 1
    assert found


def test_digit_scenes_split_is_deterministic_a_prefix_and_documented():
    small = embedded_dataset("digit_scenes", "test", num_examples=3)
    large = embedded_dataset("digit_scenes", "test", num_examples=5)
    again = embedded_dataset("digit_scenes", "test", num_examples=3)
    other_seed = embedded_dataset("digit_scenes", "test", num_examples=3, seed=1)
    for i in range(3):
        assert np.array_equal(np.asarray(small[i]["image"]), np.asarray(large[i]["image"]))
        assert np.array_equal(np.asarray(small[i]["annotation"]), np.asarray(again[i]["annotation"]))
    assert any(not np.array_equal(np.asarray(small[i]["image"]), np.asarray(other_seed[i]["image"])) for i in range(3))
    assert small[0]["image"].size == (96, 96) and small[0]["image"].mode == "RGB"
    assert small[0]["annotation"].mode == "L"
    assert dataset_id2label(small) == DIGIT_SCENES_ID2LABEL and len(DIGIT_SCENES_ID2LABEL) == 11
    assert embedded_dataset("digit_scenes", "train", num_examples=1, resolution=64)[0]["image"].size == (64, 64)


def test_scene_layout_rejects_impossible_layouts():
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        SceneLayout(min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="max_digit_size <= canvas_size"):
        SceneLayout(canvas_size=32, max_digit_size=48)
