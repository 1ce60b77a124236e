"""Unreadable examples mid-epoch: a corrupt PNG in an image folder and a truncated image in a parquet row stop a run
with one line naming the data, the split, the example's index and its file (also from a DataLoader worker), or, with
`--skip_bad_examples`, are logged and skipped; the skips depend only on the data, so a resumed run ends with exactly
the weights of an uninterrupted one. Readable images decode exactly as `datasets` decodes them.
"""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from training_support import assert_one_line_error, flags, run_cli_concurrently, same_weights

from hf_swin_ddpm.data import (
    DDPMTransform,
    SegmentationTrainTransform,
    UnreadableImageError,
    attach_transform,
    collate_ddpm,
    collate_segmentation,
    embedded_dataset,
)
from hf_swin_ddpm.training import train_ddpm, train_segmentation

BAD_INDEX = 6  # past the first batch, which is checked before training starts: the error comes mid-epoch


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def corrupt_image_folder(root, count: int = 12):
    """An image folder `root/train/NN.png` of `count` random grey images, file BAD_INDEX holding no image, and two
    clean validation images."""
    rng = np.random.default_rng(0)
    (root / "validation").mkdir(parents=True)
    for index in range(2):
        (root / "validation" / f"{index}.png").write_bytes(png_bytes(rng.integers(0, 256, (12, 12), dtype=np.uint8)))
    (root / "train").mkdir(parents=True)
    for index in range(count):
        path = root / "train" / f"{index:02d}.png"
        if index == BAD_INDEX:
            path.write_bytes(b"\x89PNG\r\n\x1a\n but the rest is not a PNG")
        else:
            path.write_bytes(png_bytes(rng.integers(0, 256, (12, 12), dtype=np.uint8)))
    return root


def digits_with_bad_rows() -> datasets.Dataset:
    """Eight embedded digits; row 3 holds bytes that are no image (file "three.png"), row 5 a PNG cut in half."""
    digits = embedded_dataset("digits", "train").select_columns(["image"]).select(range(8))
    rows = digits.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[3]["image"] = {"bytes": b"not an image", "path": "three.png"}
    whole = rows[5]["image"]["bytes"]
    rows[5]["image"] = {"bytes": whole[: len(whole) // 2], "path": None}
    return datasets.Dataset.from_list(rows, features=datasets.Features({"image": datasets.Image()}))


def test_readable_images_decode_exactly_as_datasets_decodes_them():
    digits = embedded_dataset("digits", "train").select_columns(["image"]).select(range(8))
    transform = DDPMTransform(16, 1, random_flip=True, seed=1)
    ours = collate_ddpm([attach_transform(digits, transform)[index] for index in range(8)])["input"]
    decoded_by_datasets = [
        transform.transform_image(digits[index]["image"], transform.rng(index)) for index in range(8)
    ]
    assert torch.equal(ours, torch.stack(decoded_by_datasets))


def test_an_unreadable_example_is_named_or_skipped_and_dropped_from_its_batch(caplog):
    bad = digits_with_bad_rows()
    transform = DDPMTransform(8, 1)
    named = attach_transform(bad, transform, source="digits (the 'train' split)")
    with pytest.raises(UnreadableImageError, match=r"digits \(the 'train' split\), example 3 \(three\.png\).*image"):
        named[3]
    with pytest.raises(UnreadableImageError, match=r"example 5: .*truncated.*--skip_bad_examples"):
        named.__getitems__([4, 5])
    assert named[4]["input"].shape == (1, 8, 8)

    skipping = attach_transform(bad, transform, source="digits", skip_bad_examples=True)
    batch = skipping.__getitems__(list(range(8)))
    assert [example["input"] is None for example in batch] == [index in (3, 5) for index in range(8)]
    stacked = collate_ddpm(batch)["input"]
    expected = [transform.transform_image(bad[index]["image"]) for index in range(8) if index not in (3, 5)]
    assert torch.equal(stacked, torch.stack(expected))
    assert "skipping digits, example 3 (three.png)" in caplog.text and "example 5" in caplog.text
    with pytest.raises(UnreadableImageError, match="all 2 examples of a batch are unreadable"):
        collate_ddpm(skipping.__getitems__([3, 5]))

    streamed = attach_transform(bad.to_iterable_dataset(), transform, skip_bad_examples=True)
    assert [example["input"] is None for example in streamed] == [index in (3, 5) for index in range(8)]


def test_a_bad_label_map_is_skipped_with_its_image():
    rng = np.random.default_rng(1)
    rows = [
        {"image": png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), "annotation": png_bytes(labels)}
        for labels in rng.integers(0, 3, (4, 8, 8), dtype=np.uint8)
    ]
    rows[2]["annotation"] = rows[2]["annotation"][:20]
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    table = datasets.Dataset.from_dict(
        {key: [{"bytes": row[key], "path": None} for row in rows] for key in ("image", "annotation")}, features
    )
    transform = SegmentationTrainTransform(8, scale_range=(1, 1), num_labels=3)
    with pytest.raises(UnreadableImageError, match="example 2: the 'annotation' column"):
        attach_transform(table, transform)[2]
    batch = collate_segmentation(attach_transform(table, transform, skip_bad_examples=True).__getitems__([0, 1, 2, 3]))
    assert batch["pixel_values"].shape == (3, 3, 8, 8) and batch["labels"].shape == (3, 8, 8)


DDPM = flags(
    model_config="tiny",
    resolution=8,
    train_batch_size=4,
    max_train_steps=6,
    eval_bpd_timesteps=0,
    ddpm_num_inference_steps=2,
    num_sample_images=2,
    logging_steps=1,
    report_to="none",
    lr_warmup_steps=1,
    seed=0,  # the bad file comes in the second batch of epoch 0 (and again in epoch 1)
    random_flip=True,
)


def test_a_corrupt_png_mid_epoch_stops_with_its_name_or_is_skipped_and_resume_stays_exact(tmp_path):
    folder = corrupt_image_folder(tmp_path / "scraped")
    data = ["--train_data_dir", str(folder)]
    stopped, stopped_in_worker = run_cli_concurrently(
        [
            ["train-ddpm", *DDPM, *data, "--output_dir", str(tmp_path / "stopped"), "--checkpointing_steps", "1"],
            ["train-ddpm", *DDPM, *data, "--output_dir", str(tmp_path / "worker"), "--dataloader_num_workers", "1"],
        ],
        cwd=tmp_path,
    )
    bad_file = str(folder / "train" / f"{BAD_INDEX:02d}.png")
    for result in (stopped, stopped_in_worker):
        assert_one_line_error(
            result, "local folder scraped (the 'train' split)", f"example {BAD_INDEX} ({bad_file})", "cannot be read"
        )
    assert (tmp_path / "stopped" / "checkpoint-1").is_dir()  # the steps before it are kept
    assert not (tmp_path / "stopped" / "unet").exists()

    argv = [*DDPM, *data, "--skip_bad_examples", "--checkpointing_steps", "2"]
    uninterrupted = train_ddpm.train(train_ddpm.parse_args([*argv, "--output_dir", str(tmp_path / "a")]))
    assert uninterrupted.results["global_step"] == 6
    resumed = train_ddpm.train(
        train_ddpm.parse_args(
            [*argv, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", str(tmp_path / "a/checkpoint-2")]
        )
    )
    assert same_weights(resumed.training_weights, uninterrupted.training_weights)
    assert same_weights(resumed.unet.state_dict(), uninterrupted.unet.state_dict())


def write_parquet_split(path, count: int, truncated_row: int | None = None) -> None:
    """A segmentation parquet file of `count` rows of random images and masks; `truncated_row`'s image is cut short."""
    rng = np.random.default_rng(count)
    images = [png_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]
    masks = [png_bytes(rng.integers(0, 3, (32, 32), dtype=np.uint8)) for _ in range(count)]
    if truncated_row is not None:
        images[truncated_row] = images[truncated_row][: len(images[truncated_row]) // 3]
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    rows = {
        "image": [{"bytes": data, "path": f"img_{i}.png"} for i, data in enumerate(images)],
        "annotation": [{"bytes": data, "path": f"ann_{i}.png"} for i, data in enumerate(masks)],
    }
    datasets.Dataset.from_dict(rows, features).to_parquet(str(path))


def parquet_dataset_with_truncated_row(root):
    """A parquet dataset folder (as a Hub dataset's files): train.parquet, whose row BAD_INDEX is truncated, and a
    clean validation.parquet."""
    root.mkdir()
    write_parquet_split(root / "train.parquet", 8, truncated_row=BAD_INDEX)
    write_parquet_split(root / "validation.parquet", 2)
    return root


SEGMENTATION = flags(
    model_config="tiny",
    resolution=32,
    num_labels=3,
    train_batch_size=2,
    max_train_steps=6,
    max_eval_samples=2,
    logging_steps=1,
    report_to="none",
    lr_warmup_steps=1,
    seed=4,
)


def test_a_truncated_parquet_row_stops_with_its_index_or_is_skipped_in_memory_and_streamed(tmp_path):
    table = parquet_dataset_with_truncated_row(tmp_path / "scraped")
    common = [*SEGMENTATION, "--dataset_name", str(table), "--scale_range", "1", "1"]
    stopped, streamed = run_cli_concurrently(
        [
            ["train-seg", *common, "--output_dir", str(tmp_path / "stopped")],
            ["train-seg", *common, "--output_dir", str(tmp_path / "streamed"), "--streaming"],
        ],
        cwd=tmp_path,
    )
    for result in (stopped, streamed):
        assert_one_line_error(result, f"{table} (the 'train' split)", "(img_", "'image' column", "truncated")
    assert f"example {BAD_INDEX} (img_{BAD_INDEX}.png)" in stopped.stderr  # the row of the file

    argv = [*common, "--skip_bad_examples", "--checkpointing_steps", "3"]
    uninterrupted = train_segmentation.train(
        train_segmentation.parse_args([*argv, "--output_dir", str(tmp_path / "a")])
    )
    assert uninterrupted.results["global_step"] == 6
    resumed = train_segmentation.train(
        train_segmentation.parse_args(
            [*argv, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", str(tmp_path / "a/checkpoint-3")]
        )
    )
    assert same_weights(resumed.model.state_dict(), uninterrupted.model.state_dict())
    assert json.loads((tmp_path / "a" / "all_results.json").read_text())["global_step"] == 6
