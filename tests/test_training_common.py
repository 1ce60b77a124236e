"""The training scripts' shared modules (arguments, checkpoints, publishing) and the demo-model recipe runner."""

from __future__ import annotations

import argparse
import json

import pytest
from huggingface_hub import ModelCard

from hf_swin_ddpm.training import arguments, checkpoints, demo_models, publishing
from hf_swin_ddpm.training.errors import TrainingError


def test_model_config_is_a_preset_or_a_json_file(tmp_path):
    presets = {"tiny": {"width": 8}}
    assert arguments.load_model_config("tiny", presets) == {"width": 8}
    (tmp_path / "config.json").write_text(json.dumps({"width": 3}))
    assert arguments.load_model_config(str(tmp_path / "config.json"), presets) == {"width": 3}
    assert arguments.load_model_config(str(tmp_path), presets) == {"width": 3}  # a saved model folder
    with pytest.raises(TrainingError, match="'huge' is neither a preset \\(tiny\\)"):
        arguments.load_model_config("huge", presets)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(TrainingError, match="JSON object"):
        arguments.load_model_config(str(tmp_path / "list.json"), presets)


def test_latest_checkpoint_skips_incomplete_saves(tmp_path):
    assert checkpoints.resolve_resume_checkpoint("latest", tmp_path) is None
    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-30.tmp", "checkpoint-x", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"")
    assert [path.name for path in checkpoints.complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert checkpoints.resolve_resume_checkpoint("latest", tmp_path).name == "checkpoint-10"
    assert checkpoints.resolve_resume_checkpoint("checkpoint-2", tmp_path).name == "checkpoint-2"
    with pytest.raises(TrainingError, match="incomplete"):
        checkpoints.resolve_resume_checkpoint(str(tmp_path / "checkpoint-30.tmp"), tmp_path)
    with pytest.raises(TrainingError, match="not a checkpoint folder"):
        checkpoints.resolve_resume_checkpoint("checkpoint-99", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="not a checkpoint"):
        checkpoints.resolve_resume_checkpoint(str(tmp_path / "empty"), tmp_path)


def run_args(**overrides) -> argparse.Namespace:
    values = {
        "hub_model_id": None,
        "output_dir": "unused",
        "dataset_name": "user/cifar10-copy",
        "train_data_dir": None,
        "dataset_config_name": None,
        "mixed_precision": None,
        "seed": 3,
        "command_line": "train_ddpm --dataset_name user/cifar10-copy --seed 3",
        "hub_private_repo": False,
        "hub_token": None,
    }
    return argparse.Namespace(**{**values, **overrides})


RUN_RESULTS = {"total_train_batch_size": 64, "global_step": 1500, "num_processes": 2, "eval_split": "test"}


def test_the_run_card_is_the_hub_card_with_every_field(tmp_path):
    args = run_args(hub_model_id="me/tiny-ddpm")
    fields = publishing.run_card_fields(
        args,
        RUN_RESULTS,
        tmp_path,
        model_config="tiny",
        hyperparameters={"learning_rate": 2e-4, "EMA": "decay 0.9999"},
        metric=("bits_per_dim", 3.75),
        training_data="Trained on user/cifar10-copy at 32x32.",
        image_file="sample_grid.png",
        image_caption="8 samples",
        num_train_timesteps=1000,
    )
    path = publishing.write_model_card(tmp_path, "ddpm", fields)
    card = ModelCard.load(path)
    # metadata as hub.render_model_card writes it: library, task, tags, datasets, model-index
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert {"hf-swin-ddpm", "ddpm"} <= set(card.data.tags) and card.data.datasets == ["user/cifar10-copy"]
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("bits_per_dim", 3.75)
    assert (result.dataset_name, result.dataset_split) == ("user/cifar10-copy", "test")
    assert card.data.model_name == "tiny-ddpm"
    # the hyperparameter table: the run's rows around the script's, in order
    rows = [line.split(" | ")[0].lstrip("| ") for line in card.text.splitlines() if line.startswith("| ")]
    expected = ["model_config", "train_batch_size (total)", "optimizer steps", "learning_rate", "EMA"]
    expected += ["mixed_precision", "processes", "seed", "command"]
    start = rows.index("model_config")
    assert rows[start : start + len(expected)] == expected
    for shown in ("| 0.0002 |", "| 1500 |", "| 64 |", "| no |", "train_ddpm --dataset_name", "me/tiny-ddpm"):
        assert shown in card.text, shown
    assert "![8 samples](sample_grid.png)" in card.text


def test_a_run_without_a_number_records_no_result(tmp_path):
    fields = publishing.run_card_fields(
        run_args(dataset_name="shapes"),
        RUN_RESULTS,
        tmp_path / "seg-run",
        model_config="tiny",
        hyperparameters={},
        metric=("mean_iou", float("nan")),
        labels=["background", "circle"],
    )
    card = ModelCard.load(publishing.write_model_card(tmp_path, "swin_fpn", fields))
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-segmentation"
    assert card.data.eval_results is None and card.data.datasets is None  # an embedded dataset is no Hub id
    assert card.data.model_name == "seg-run" and "circle" in card.text
    percentage = publishing.run_card_fields(
        run_args(), RUN_RESULTS, tmp_path, model_config="t", hyperparameters={}, metric=("mean_iou", 45.8)
    )
    with pytest.raises(ValueError, match="mean_iou must be a fraction"):  # the card's one check of the result
        publishing.write_model_card(tmp_path / "percentage", "swin_fpn", percentage)


def test_command_line_masks_the_token():
    assert arguments.command_line("train_ddpm", ["--hub_token", "hf_secret", "--seed", "1"]) == (
        "train_ddpm --hub_token *** --seed 1"
    )


def test_demo_models_skip_a_complete_model(tmp_path, capsys):
    recipe = demo_models.DEMO_RECIPES["segmentation"]
    folder = tmp_path / recipe.folder
    folder.mkdir()
    for name in recipe.required_files:
        (folder / name).write_text("{}")
    assert demo_models.is_complete(folder, recipe)
    assert demo_models.main(["--output_root", str(tmp_path), "--only", "segmentation"]) == 0
    assert "already trained, skipping" in capsys.readouterr().out
    ddpm = demo_models.DEMO_RECIPES["ddpm"]
    for sub in ("unet", "scheduler"):
        (tmp_path / ddpm.folder / sub).mkdir(parents=True)
    for name in ddpm.required_files:
        (tmp_path / ddpm.folder / name).write_text("{}")
    assert not demo_models.is_complete(tmp_path / ddpm.folder, ddpm)  # no weights yet
