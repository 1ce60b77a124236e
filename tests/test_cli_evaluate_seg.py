"""`hf-swin-ddpm evaluate-seg`: mmseg's protocol on the embedded shapes data (whole, slide, TTA), the card, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import TINY_SWIN_FPN_GEOMETRY
from huggingface_hub import ModelCard
from segmentation_reference import numpy_metrics, protocol_predictions

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.cli import main
from hf_swin_ddpm.data import IMAGENET_MEAN, IMAGENET_STD, SHAPES_ID2LABEL, embedded_dataset

CONSOLE_SCRIPT = Path(sys.executable).with_name("hf-swin-ddpm")
SAMPLES = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, one_thread) -> Path:
    folder = tmp_path_factory.mktemp("evaluate-seg") / "model"
    torch.manual_seed(0)
    config = SwinFPNConfig(**TINY_SWIN_FPN_GEOMETRY, id2label=SHAPES_ID2LABEL, image_size=32)
    SwinFPNForSegmentation(config).save_pretrained(folder)
    SwinFPNImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def expected_results(model_dir: Path, **protocol) -> dict:
    """The scores of mmseg's protocol computed independently (segmentation_reference) for the saved model."""
    model = SwinFPNForSegmentation.from_pretrained(model_dir).eval()
    dataset = embedded_dataset("shapes", "test").select(range(SAMPLES))
    predictions, labels = protocol_predictions(model, dataset, (32, 32), IMAGENET_MEAN, IMAGENET_STD, **protocol)
    return numpy_metrics(predictions, labels, len(SHAPES_ID2LABEL))


def assert_same_scores(results: dict, expected: dict) -> None:
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "mFscore"):
        assert results[key] == pytest.approx(expected[key], abs=1e-9), key
    for index, name in SHAPES_ID2LABEL.items():
        for metric in ("IoU", "Acc"):
            value = results["per_class"][name][metric]
            assert (math.nan if value is None else value) == pytest.approx(
                expected[metric][index], abs=1e-9, nan_ok=True
            )
    # the default scale: the short side at the training resolution (the processor records no test_scale); the 64x64
    # images come to 32x32 as at (32, 32), the scale the expected scores use
    assert results["num_images"] == SAMPLES and results["scale"] == [128, 32]


def test_whole_mode_console_script_table_json_and_card(model_dir, tmp_path):
    command = [str(CONSOLE_SCRIPT), "evaluate-seg", str(model_dir), "--dataset_name", "shapes"]
    command += ["--max_eval_samples", str(SAMPLES), "--output", "results.json", "--update_card"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "mIoU" in result.stdout and "triangle" in result.stdout
    assert "evaluate: 100%" in result.stderr  # the progress bar
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["split"] == "test" and results["protocol"]["mode"] == "whole"
    assert set(results["per_class"]) == set(SHAPES_ID2LABEL.values())
    assert_same_scores(results, expected_results(model_dir))

    card = ModelCard.load(model_dir / "README.md")
    metrics = {r.metric_type: r for r in card.data.eval_results}
    assert set(metrics) == {"mean_iou", "pixel_accuracy", "mean_accuracy", "mean_dice", "mean_fscore"}
    assert metrics["mean_iou"].metric_value == pytest.approx(results["mIoU"], abs=1e-6)
    assert metrics["mean_iou"].dataset_name == "shapes" and metrics["mean_iou"].dataset_split == "test"
    assert "whole inference" in metrics["mean_iou"].metric_config
    assert "## Evaluation on shapes (test)" in card.text


def test_slide_and_tta_modes_and_card_update_replaces(model_dir, tmp_path, capsys):
    output = tmp_path / "slide.json"
    argv = ["evaluate-seg", str(model_dir), "--dataset_name", "shapes", "--max_eval_samples", str(SAMPLES)]
    # stride 4, not the default 2/3 of the crop (16): windows at 0, 4, 8 of the 32 pixels instead of 0, 8
    slide = [*argv, "--mode", "slide", "--crop_size", "24", "--stride", "4", "--output", str(output)]
    assert main(slide) == 0
    results = json.loads(output.read_text())
    assert results["protocol"] == {"mode": "slide", "crop_size": 24, "stride": 4, "scales": [1.0], "flip": False}
    assert_same_scores(results, expected_results(model_dir, mode="slide", crop=24, stride=4))

    tta = [*argv, "--tta", "--scales", "0.75", "1.25", "--output", str(output), "--update_card"]
    assert main(tta) == 0
    results = json.loads(output.read_text())
    assert results["protocol"]["scales"] == [0.75, 1.25] and results["protocol"]["flip"] is True
    assert_same_scores(results, expected_results(model_dir, scales=(0.75, 1.25), flip=True))
    assert main([*argv, "--tta", "--scales", "0.75", "1.25", "--output", str(output), "--update_card"]) == 0
    card = ModelCard.load(model_dir / "README.md")
    mean_ious = [r for r in card.data.eval_results if r.metric_type == "mean_iou"]
    assert len(mean_ious) == 1 and "TTA scales [0.75, 1.25] + flip" in mean_ious[0].metric_config
    assert mean_ious[0].metric_value == pytest.approx(results["mIoU"], abs=1e-6)
    assert card.text.count("## Evaluation on shapes") == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give exactly one of --dataset_name and --train_data_dir"),
        (["--dataset_name", "shapes", "--train_data_dir", "x"], "give exactly one of"),
        (["--dataset_name", "shapes", "--crop_size", "16"], "apply to --mode slide"),
        (["--dataset_name", "shapes", "--scales", "0", "1"], "--scales: expected positive ratios"),
        (["--dataset_name", "shapes", "--mode", "slide", "--crop_size", "8", "--stride", "9"], "exceeds crop_size"),
        (["--dataset_name", "shapes", "--split", "nope"], "nope"),
        (["--dataset_name", "shapes", "--scale", "0", "512"], "--scale: expected two positive sizes"),
    ],
)
def test_errors_are_one_line(model_dir, tmp_path, capsys, extra, message):
    status = main(
        ["evaluate-seg", str(model_dir), "--max_eval_samples", "1", "--output", str(tmp_path / "r.json")] + extra
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert error[-1].startswith("hf-swin-ddpm evaluate-seg: error: ") and message in error[-1], error
    assert "Traceback" not in "\n".join(error)


def test_missing_model_and_hub_card_errors(tmp_path, capsys):
    assert main(["evaluate-seg", str(tmp_path / "missing" / "x.txt"), "--dataset_name", "shapes"]) == 2
    assert "MODEL" in capsys.readouterr().err
    assert main(["evaluate-seg", "someone/model", "--dataset_name", "shapes", "--update_card"]) == 2
    assert "is not a local model folder" in capsys.readouterr().err


def test_labels_outside_the_model_classes_are_named(tmp_path, capsys):
    folder = tmp_path / "two-classes"
    SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN_GEOMETRY, num_labels=2, image_size=32)).save_pretrained(
        folder
    )
    status = main(["evaluate-seg", str(folder), "--dataset_name", "shapes", "--output", str(tmp_path / "r.json")])
    assert status == 2
    assert "outside [0, 2)" in capsys.readouterr().err.strip().splitlines()[-1]


def test_train_data_dir_with_reduced_labels(model_dir, tmp_path):
    from datasets import Dataset
    from PIL import Image
    from training_support import write_segmentation_folders

    root = write_segmentation_folders(tmp_path / "folder", count=3, label_offset=1)  # classes 1..4, as ADE20K's
    output = tmp_path / "r.json"
    argv = ["evaluate-seg", str(model_dir), "--train_data_dir", str(root), "--split", "train", "--do_reduce_labels"]
    assert main([*argv, "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["reduce_labels"] is True and results["num_images"] == 3 and results["split"] == "train"
    names = sorted((root / "images").iterdir())
    dataset = Dataset.from_dict(
        {
            "image": [Image.open(path).convert("RGB") for path in names],
            "annotation": [Image.open(root / "annotations" / path.name) for path in names],
        }
    )
    model = SwinFPNForSegmentation.from_pretrained(model_dir).eval()
    predictions, labels = protocol_predictions(model, dataset, (32, 32), IMAGENET_MEAN, IMAGENET_STD)
    reduced = [np.where(label == 0, 255, label - 1) for label in labels]  # ADE20K's reduction: 0 ignored, c -> c - 1
    expected = numpy_metrics(predictions, reduced, len(SHAPES_ID2LABEL))
    assert results["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-9)
    assert results["aAcc"] == pytest.approx(expected["aAcc"], abs=1e-9)


def test_two_processes_under_accelerate_launch_give_the_one_process_metrics(model_dir, tmp_path, capsys):
    """`accelerate launch --num_processes 2` (two CPU processes over gloo): each evaluates a shard of the 5 images
    (3 + 2), the class counts are summed, and the results file is the one-process file, value for value."""
    import os
    import socket

    from training_support import run_cli_in_process

    argv = ["evaluate-seg", str(model_dir), "--dataset_name", "shapes", "--max_eval_samples", "5"]
    argv += ["--mode", "slide", "--crop_size", "24", "--stride", "16"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "-m", "hf_swin_ddpm.cli", *argv, "--output", "two.json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["ACCELERATE_USE_CPU"] = "1"  # --multi_gpu on CPUs: torchrun workers talking over gloo
    two = subprocess.run(launch, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("Wrote ") == 1  # the main process writes the results, once
    assert "evaluate: 100%" in two.stderr and "3/3" in two.stderr  # the main process's bar: its shard of 3
    one = run_cli_in_process(*argv, "--output", "one.json", cwd=tmp_path, capsys=capsys)
    assert one.returncode == 0, one.stderr
    results = json.loads((tmp_path / "two.json").read_text())
    assert results["num_images"] == 5
    assert results == json.loads((tmp_path / "one.json").read_text())


def test_default_scale_is_the_recorded_test_scale_else_the_short_side_at_the_training_size(tmp_path, capsys):
    """On 48x24 images: the processor's test_scale (64, 16) when recorded (images to 32x16), else (128, 32) from its
    32x32 size (images to 64x32), each the same results as giving that --scale, and not those of the old square
    default (32, 32), which shrank the images to 32x16."""
    from PIL import Image
    from training_support import write_segmentation_folders

    root = write_segmentation_folders(tmp_path / "data", count=3, resolution=24)
    for kind in ("images", "annotations"):
        for path in (root / kind).iterdir():
            resample = Image.BILINEAR if kind == "images" else Image.NEAREST
            Image.open(path).resize((48, 24), resample).save(path)
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN_GEOMETRY, id2label=SHAPES_ID2LABEL, image_size=32))
    with torch.no_grad():  # a prediction that depends on the image's scale
        for parameter in model.decode_head.parameters():
            if parameter.ndim > 1:
                parameter.normal_(std=0.5)
    model.save_pretrained(tmp_path / "plain")
    SwinFPNImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "plain")
    model.save_pretrained(tmp_path / "recorded")
    SwinFPNImageProcessor(size={"height": 32, "width": 32}, test_scale=[64, 16]).save_pretrained(tmp_path / "recorded")

    def evaluate(folder: str, *extra: str) -> dict:
        output = tmp_path / "r.json"
        argv = ["evaluate-seg", str(tmp_path / folder), "--train_data_dir", str(root), "--output", str(output)]
        assert main([*argv, *extra]) == 0, capsys.readouterr().err
        return json.loads(output.read_text())

    recorded = evaluate("recorded")
    assert recorded["scale"] == [64, 16] and recorded == evaluate("recorded", "--scale", "64", "16")
    plain = evaluate("plain")
    assert plain["scale"] == [128, 32] and plain == evaluate("plain", "--scale", "128", "32")
    square = evaluate("plain", "--scale", "32", "32")
    assert square["aAcc"] != plain["aAcc"]
