"""Shared training helpers (hf_swin_ddpm.training.common) and the demo-model recipe runner."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from hf_swin_ddpm.training import common, demo_models
from hf_swin_ddpm.training.common import TrainingError


def test_model_config_is_a_preset_or_a_json_file(tmp_path):
    presets = {"tiny": {"width": 8}}
    assert common.load_model_config("tiny", presets) == {"width": 8}
    (tmp_path / "config.json").write_text(json.dumps({"width": 3}))
    assert common.load_model_config(str(tmp_path / "config.json"), presets) == {"width": 3}
    assert common.load_model_config(str(tmp_path), presets) == {"width": 3}  # a saved model folder
    with pytest.raises(TrainingError, match="'huge' is neither a preset \\(tiny\\)"):
        common.load_model_config("huge", presets)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(TrainingError, match="JSON object"):
        common.load_model_config(str(tmp_path / "list.json"), presets)


def test_latest_checkpoint_skips_incomplete_saves(tmp_path):
    assert common.resolve_resume_checkpoint("latest", tmp_path) is None
    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-30.tmp", "checkpoint-x", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"")
    assert [path.name for path in common.complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert common.resolve_resume_checkpoint("latest", tmp_path).name == "checkpoint-10"
    assert common.resolve_resume_checkpoint("checkpoint-2", tmp_path).name == "checkpoint-2"
    with pytest.raises(TrainingError, match="incomplete"):
        common.resolve_resume_checkpoint(str(tmp_path / "checkpoint-30.tmp"), tmp_path)
    with pytest.raises(TrainingError, match="not a checkpoint folder"):
        common.resolve_resume_checkpoint("checkpoint-99", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="not a checkpoint"):
        common.resolve_resume_checkpoint(str(tmp_path / "empty"), tmp_path)


def test_fallback_model_card_has_the_hub_metadata(tmp_path):
    fields = {
        "model_name": "tiny-ddpm",
        "datasets": ["cifar10"],
        "training_data": "CIFAR-10 train split.",
        "hyperparameters": {"learning_rate": 2e-4},
        "bits_per_dim": 3.75,
        "eval_split": "test",
        "image_file": "sample_grid.png",
    }
    card = ModelCard(str(common._render_fallback_card("ddpm", fields)))
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert {"hf-swin-ddpm", "ddpm"} <= set(card.data.tags) and card.data.datasets == ["cifar10"]
    assert card.data.eval_results[0].metric_value == 3.75
    assert "0.0002" in card.text and "sample_grid.png" in card.text
    segmentation = ModelCard(str(common._render_fallback_card("swin_fpn", {"model_name": "m", "mean_iou": 0.5})))
    assert segmentation.data.library_name == "transformers" and segmentation.data.eval_results is None  # no dataset


def test_command_line_masks_the_token():
    assert common.command_line("train_ddpm", ["--hub_token", "hf_secret", "--seed", "1"]) == (
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
