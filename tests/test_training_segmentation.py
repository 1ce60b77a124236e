"""SwinFPN training (hf_swin_ddpm.training.train_segmentation): outputs, exact resume, two processes, data layouts,
optimizer groups, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from training_support import (
    assert_one_line_error,
    counting_ddp_modules_at_end_training,
    flags,
    run_cli_concurrently,
    run_two_processes,
    same_weights,
    tree_digest,
    with_flags,
    write_segmentation_folders,
)
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.data import embedded_dataset
from hf_swin_ddpm.training import train_segmentation

# shapes at 32x32 with the tiny preset: 12 training images in batches of 4 (3 per epoch), 5 held-out images.
TINY = flags(
    dataset_name="shapes",
    model_config="tiny",
    resolution=32,
    train_batch_size=4,
    max_train_samples=12,
    max_eval_samples=5,
    eval_batch_size=2,
    logging_steps=1,
    report_to="none",
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(*argv: str) -> train_segmentation.SegmentationTrainingResult:
    return train_segmentation.train(train_segmentation.parse_args(list(argv)))


def test_outputs_and_exact_resume(tmp_path):
    first = tmp_path / "run"
    argv = with_flags(TINY, output_dir=first, max_train_steps=5)
    uninterrupted = train(*argv, *flags(checkpointing_steps=2, eval_steps=2, report_to="tensorboard"))
    assert sorted(path.name for path in first.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert list((first / "logs").rglob("events.out.tfevents*"))

    model = AutoModelForSemanticSegmentation.from_pretrained(first)
    assert same_weights(model.state_dict(), uninterrupted.model.state_dict())
    assert model.config.id2label == {0: "background", 1: "circle", 2: "square", 3: "triangle"}
    processor = AutoImageProcessor.from_pretrained(first)
    assert processor.size["height"] == processor.size["width"] == 32

    results = json.loads((first / "all_results.json").read_text())
    assert results["global_step"] == 5 and results["num_processes"] == 1
    assert results["eval_samples"] == 5 and results["eval_split"] == "test"
    assert 0.0 <= results["eval_mean_iou"] <= 1.0 and 0.0 <= results["eval_pixel_accuracy"] <= 1.0
    assert set(results["eval_per_class_iou"]) == {"background", "circle", "square", "triangle"}
    assert (first / "example_prediction.png").is_file()

    card = ModelCard.load(first / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-segmentation"
    assert {"hf-swin-ddpm", "swin", "fpn"} <= set(card.data.tags)
    assert card.data.eval_results[0].metric_type == "mean_iou"
    assert "example_prediction.png" in card.text and "drop_path_rate" in card.text

    resumed = train(
        *with_flags(TINY, output_dir=tmp_path / "other", max_train_steps=5),
        "--resume_from_checkpoint",
        str(first / "checkpoint-2"),
    )
    assert same_weights(resumed.model.state_dict(), uninterrupted.model.state_dict())
    resumed_latest = train(*argv, "--resume_from_checkpoint", "latest")  # from checkpoint-4
    assert same_weights(resumed_latest.model.state_dict(), uninterrupted.model.state_dict())


def test_no_weight_decay_on_norms_biases_and_position_tables():
    config = SwinFPNConfig(
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 2],
        window_size=2,
        fpn_hidden_size=8,
        head_hidden_size=8,
        head_num_groups=2,
        num_labels=3,
    )
    model = SwinFPNForSegmentation(config)
    decay, no_decay = train_segmentation.parameter_groups(model, 0.01)
    norm_weights = {
        f"{module_name}.weight"
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.LayerNorm | torch.nn.GroupNorm)
    }
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    exempt = {names[id(parameter)] for parameter in no_decay["params"]}
    decayed = {names[id(parameter)] for parameter in decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert exempt | decayed == set(names.values()) and not exempt & decayed
    tables = {name for name in names.values() if name.endswith("relative_position_bias_table")}
    biases = {name for name in names.values() if name.endswith(".bias")}
    assert tables and any(name.startswith("decode_head") for name in norm_weights)  # GroupNorm in the head
    assert exempt == tables | biases | norm_weights


def _train_on_two_processes(output_dir: str, *extra: str) -> None:
    with counting_ddp_modules_at_end_training() as ddp_alive:
        result = train(*with_flags(TINY, output_dir=output_dir, max_train_steps=3), *extra)
    torch.save(
        {"weights": result.model.state_dict(), "results": result.results, "ddp_alive": ddp_alive},
        Path(output_dir) / f"process-{result.process_index}.pt",
    )


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streamed"])
def test_two_processes_keep_identical_weights_and_gather_all_eval_images(tmp_path, streaming):
    # a stream's keep-ratio batches (lists) are sharded by process, not dispatched: still every image exactly once
    output_dir = tmp_path / "two"
    run_two_processes(lambda: _train_on_two_processes(str(output_dir), *(["--streaming"] if streaming else [])))
    first, second = (torch.load(output_dir / f"process-{i}.pt", weights_only=False) for i in range(2))
    assert same_weights(first["weights"], second["weights"])
    assert first["results"]["eval_mean_iou"] == second["results"]["eval_mean_iou"]
    assert first["ddp_alive"] == second["ddp_alive"] == [0]  # the DDP wrapper freed before the process group
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["eval_samples"] == 5  # not 6 (padding) nor 3 (one process)


def test_trains_on_image_and_mask_folders_and_on_parquet(tmp_path):
    write_segmentation_folders(tmp_path / "folders", count=10)
    argv = flags(model_config="tiny", resolution=32, train_batch_size=4, max_train_steps=2, report_to="none")
    folders = train(*argv, *flags(train_data_dir=tmp_path / "folders", output_dir=tmp_path / "a", num_labels=4))
    assert folders.results["eval_split"] == "train" and folders.results["eval_samples"] == 1  # 10% held out
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    for split, count in (("train", 8), ("test", 3)):
        embedded_dataset("shapes", split, num_examples=count, resolution=32).to_parquet(
            parquet_dir / f"{split}.parquet"
        )
    parquet = train(*argv, *flags(train_data_dir=parquet_dir, output_dir=tmp_path / "b"))
    assert parquet.results["eval_split"] == "test" and parquet.results["eval_samples"] == 3
    assert parquet.model.config.num_labels == 4  # found in the annotations


def test_cli_bad_input_is_one_line_and_leaves_checkpoints_alone(tmp_path):
    output_dir = tmp_path / "out"
    train(*with_flags(TINY, output_dir=output_dir, max_train_steps=2, checkpointing_steps=2))
    before = tree_digest(output_dir)
    write_segmentation_folders(tmp_path / "wrong_size", count=4, mask_size=24)
    write_segmentation_folders(tmp_path / "bad_labels", count=4, label_offset=3)
    common = flags(output_dir=output_dir, resume_from_checkpoint="latest", max_train_steps=4, resolution=32)
    cases = [
        (flags(dataset_name="shapes", model_config="huge"), ["--model_config", "huge", "tiny"]),
        (flags(train_data_dir="wrong_size", model_config="tiny", num_labels=4), ["24x24", "32x32"]),
        (flags(train_data_dir="bad_labels", model_config="tiny", num_labels=4), ["outside [0, 4)"]),
    ]
    results = run_cli_concurrently([["train-seg", *case, *common] for case, _ in cases], cwd=tmp_path)
    for (_, fragments), result in zip(cases, results, strict=True):
        assert_one_line_error(result, *fragments)
    assert tree_digest(output_dir) == before


def test_gradient_checkpointing_trains_to_the_same_weights(tmp_path):
    plain = train(*with_flags(TINY, output_dir=tmp_path / "plain", max_train_steps=3))
    checkpointed = train(
        *with_flags(TINY, output_dir=tmp_path / "checkpointed", max_train_steps=3),
        "--gradient_checkpointing",
    )
    blocks = [block for stage in checkpointed.model.backbone.stages for block in stage.blocks]
    assert blocks and all(block.gradient_checkpointing for block in blocks)
    assert not any(block.gradient_checkpointing for stage in plain.model.backbone.stages for block in stage.blocks)
    assert same_weights(checkpointed.model.state_dict(), plain.model.state_dict())


def test_loss_flags_reach_the_model_with_median_frequency_weights_from_the_training_labels(tmp_path):
    """`--loss ce:1.0,dice:0.5 --class_weight auto`: the saved config's `loss_types` hold the two losses and the
    weights median(f) / f_c of the training split's pixel frequencies (counted here with numpy)."""
    argv = with_flags(TINY, output_dir=tmp_path / "run", max_train_steps=2)
    result = train(*argv, *flags(loss="ce:1.0,dice:0.5", class_weight="auto"))
    train_split = embedded_dataset("shapes", "train", resolution=32).select(range(12))  # the run's 12 images
    maps = [np.asarray(example["annotation"]).ravel() for example in train_split]
    counts = sum(np.bincount(labels, minlength=4) for labels in maps).astype(float)
    # Eigen & Fergus's frequency: pixels of class c over the pixels of the images where c is present
    present_pixels = sum((np.bincount(labels, minlength=4) > 0) * labels.size for labels in maps)
    frequency = counts / present_pixels
    expected = np.median(frequency) / frequency
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["loss_types"]
    assert [entry["type"] for entry in saved] == ["CrossEntropyLoss", "DiceLoss"]
    assert [entry["loss_weight"] for entry in saved] == [1.0, 0.5]
    for entry in saved:
        np.testing.assert_allclose(entry["class_weight"], expected, rtol=1e-6)
    assert result.model.config.loss_types == saved


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (flags(loss="ce:1.0,tversky:1"), ["--loss", "unknown loss 'tversky'"]),
        (flags(class_weight="1,2"), ["--class_weight", "2", "4"]),
        (flags(class_weight="1,-1,1,1"), ["--class_weight", ">= 0", "'-1'"]),
    ],
)
def test_bad_loss_flags_are_one_line(tmp_path, extra, fragments):
    results = run_cli_concurrently([["train-seg", *TINY, *flags(output_dir=tmp_path / "o"), *extra]], cwd=tmp_path)
    assert_one_line_error(results[0], *fragments)
