"""train_segmentation evaluates with mmseg's protocol by default (keep-ratio, whole, at the labels' own size)."""

from __future__ import annotations

import json

import pytest
from test_training_segmentation import TINY as SEGMENTATION_TINY
from test_training_segmentation import one_thread  # noqa: F401  (the autouse fixture)
from training_support import with_flags

from hf_swin_ddpm.data import IMAGENET_MEAN, IMAGENET_STD, embedded_dataset
from hf_swin_ddpm.evaluation.segmentation import evaluate_segmentation
from hf_swin_ddpm.training import train_segmentation

# the training tests' tiny run, smaller: 8 training images, 4 held out in batches of 3, 2 steps
TINY = with_flags(SEGMENTATION_TINY, max_train_samples=8, max_eval_samples=4, eval_batch_size=3, max_train_steps=2)


def test_default_evaluation_is_the_keep_ratio_protocol_at_label_size(tmp_path):
    argv = [*with_flags(TINY, output_dir=tmp_path / "run"), "--eval_scale", "24", "24"]
    result = train_segmentation.train(train_segmentation.parse_args(argv))
    dataset = embedded_dataset("shapes", "test", resolution=32).select(range(4))
    expected = evaluate_segmentation(
        result.model, dataset, scale=(24, 24), mean=IMAGENET_MEAN, std=IMAGENET_STD, progress=False
    )
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["eval_samples"] == 4
    for ours, theirs in [("mean_iou", "mIoU"), ("pixel_accuracy", "aAcc"), ("mean_dice", "mDice")]:
        assert results[f"eval_{ours}"] == pytest.approx(expected[theirs], abs=1e-9), ours
    assert results["eval_per_class_accuracy"]["background"] == pytest.approx(
        expected["per_class"]["background"]["Acc"], abs=1e-9
    )
    assert "keep-ratio resize to (24, 24)" in (tmp_path / "run" / "README.md").read_text()


def test_square_protocol_only_behind_its_flag(tmp_path):
    argv = with_flags(TINY, output_dir=tmp_path / "run", eval_protocol="square")
    train_segmentation.train(train_segmentation.parse_args(argv))
    assert "resized to 32x32, scored there" in (tmp_path / "run" / "README.md").read_text()
    with pytest.raises(SystemExit):
        train_segmentation.parse_args(with_flags(TINY, output_dir=tmp_path / "x", eval_protocol="mmseg"))


def test_swin_ade20k_recipe_sets_the_papers_run_and_flags_override(tmp_path, monkeypatch):
    base = ["--recipe", "swin-ade20k", "--dataset_name", "shapes", "--output_dir", str(tmp_path)]
    args = train_segmentation.parse_args(base)
    assert (args.decode_head_type, args.use_auxiliary_head, args.learning_rate) == ("upernet", True, 6e-5)
    assert (args.lr_scheduler, args.lr_power, args.lr_warmup_steps, args.max_train_steps) == (
        "polynomial",
        1.0,
        1500,
        160_000,
    )
    assert (args.train_batch_size, args.drop_path_rate, args.resolution, args.weight_decay) == (16, 0.3, 512, 0.01)
    assert args.train_pipeline == "mmseg" and list(args.eval_scale) == [2048, 512] and args.do_reduce_labels
    assert train_segmentation.parse_args([*base, "--learning_rate", "1e-4"]).learning_rate == 1e-4
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert train_segmentation.parse_args(base).train_batch_size == 2  # 8 processes x 2 = the paper's 16


def test_upernet_with_the_mmseg_pipeline_trains(tmp_path):
    argv = with_flags(TINY, output_dir=tmp_path / "run", decode_head_type="upernet", train_pipeline="mmseg")
    argv += ["--use_auxiliary_head", "--train_scale", "64", "16", "--scale_range", "1.0", "2.0"]
    result = train_segmentation.train(train_segmentation.parse_args(argv))
    assert result.model.config.decode_head_type == "upernet" and result.model.auxiliary_head is not None
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["global_step"] == 2 and results["train_loss"] > 0
    card = (tmp_path / "run" / "README.md").read_text()
    assert "PhotoMetricDistortion" in card and "upernet + auxiliary FCN head" in card
