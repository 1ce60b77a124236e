"""The split an evaluation reads (`hf_swin_ddpm.data.load_evaluation_split`): a folder of just images/ and
annotations/ is one evaluation set, evaluated as it is."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from training_support import write_segmentation_folders

from hf_swin_ddpm.data import load_evaluation_split


def test_a_folder_without_splits_is_one_evaluation_set(tmp_path):
    write_segmentation_folders(tmp_path / "eval", count=5)
    dataset, split = load_evaluation_split(train_data_dir=tmp_path / "eval", task="segmentation")
    assert split == "all" and len(dataset) == 5
    for index, example in enumerate(dataset):  # every pair, with its own pixels
        expected = np.asarray(Image.open(tmp_path / "eval" / "annotations" / f"{index:03d}.png"))
        assert np.array_equal(np.asarray(example["annotation"]), expected)


def test_split_folders_are_still_preferred_and_a_missing_named_split_is_an_error(tmp_path):
    write_segmentation_folders(tmp_path / "data" / "validation", count=3)
    write_segmentation_folders(tmp_path / "data" / "train", count=4)
    dataset, split = load_evaluation_split(train_data_dir=tmp_path / "data", task="segmentation")
    assert split == "validation" and len(dataset) == 3
    with pytest.raises(ValueError, match="test"):
        load_evaluation_split(train_data_dir=tmp_path / "data", split="test", task="segmentation")
