"""train_segmentation evaluates with mmseg's protocol by default (keep-ratio, whole, at the labels' own size)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from segmentation_reference import normalised_pixels, numpy_metrics, protocol_predictions
from test_training_segmentation import TINY as SEGMENTATION_TINY
from test_training_segmentation import one_thread  # noqa: F401  (the autouse fixture)
from training_support import flags, with_flags, write_segmentation_folders

from hf_swin_ddpm import SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.data import IMAGENET_MEAN, IMAGENET_STD, MMSegTrainTransform, embedded_dataset
from hf_swin_ddpm.data.loading import segmentation_folder_dataset
from hf_swin_ddpm.swin_fpn.modeling_swin_fpn import SwinFPNAuxiliaryHead
from hf_swin_ddpm.training import train_segmentation

# the training tests' tiny run, smaller: 8 training images, 4 held out in batches of 3, 2 steps
TINY = with_flags(SEGMENTATION_TINY, max_train_samples=8, max_eval_samples=4, eval_batch_size=3, max_train_steps=2)


def test_default_evaluation_is_the_keep_ratio_protocol_at_label_size(tmp_path):
    # learning rate 1e-6: the weights stay near their random start, whose predictions vary over the image; 2 steps at
    # the default rate give a constant prediction, whose scores no resize can change (measured: --eval_scale 24 24
    # and 32 32 then give the same mIoU; here 0.1862 and 0.1897)
    argv = [*with_flags(TINY, output_dir=tmp_path / "run", learning_rate=1e-6), "--eval_scale", "24", "24"]
    result = train_segmentation.train(train_segmentation.parse_args(argv))
    dataset = embedded_dataset("shapes", "test", resolution=32).select(range(4))
    # mmseg's protocol written out independently (segmentation_reference)
    predictions, labels = protocol_predictions(result.model, dataset, (24, 24), IMAGENET_MEAN, IMAGENET_STD)
    expected = numpy_metrics(predictions, labels, 4)
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["eval_samples"] == 4
    for ours, theirs in [("mean_iou", "mIoU"), ("pixel_accuracy", "aAcc"), ("mean_dice", "mDice")]:
        assert results[f"eval_{ours}"] == pytest.approx(expected[theirs], abs=1e-9), ours
    assert results["eval_per_class_accuracy"]["background"] == pytest.approx(expected["Acc"][0], abs=1e-9)
    assert "keep-ratio resize to (24, 24)" in (tmp_path / "run" / "README.md").read_text()
    # the scale it was evaluated at is recorded with the model, as evaluate-seg's default
    assert json.loads((tmp_path / "run" / "preprocessor_config.json").read_text())["test_scale"] == [24, 24]
    assert SwinFPNImageProcessor.from_pretrained(tmp_path / "run").test_scale == [24, 24]


def square_predictions(model, dataset, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The older protocol written out: image (bilinear) and labels (nearest) resized to size x size, scored there."""
    predictions, labels = [], []
    for example in dataset:
        pixels = normalised_pixels(example["image"], (size, size), IMAGENET_MEAN, IMAGENET_STD)
        with torch.no_grad():
            predictions.append(model(pixel_values=pixels).logits[0].argmax(0).numpy())
        label = example["annotation"].resize((size, size), Image.Resampling.NEAREST)
        labels.append(np.asarray(label).astype(np.int64))
    return predictions, labels


def test_square_protocol_only_behind_its_flag(tmp_path):
    """Held-out images of 48x48 and a 32x32 model: --eval_protocol square scores at 32x32, the default at 48x48."""
    write_segmentation_folders(tmp_path / "data" / "train", count=8, resolution=32)
    write_segmentation_folders(tmp_path / "data" / "test", count=3, resolution=48)
    common = dict(train_data_dir=tmp_path / "data", num_labels=4, max_train_steps=2, model_config="tiny")
    common |= dict(resolution=32, train_batch_size=4, eval_batch_size=3, report_to="none", learning_rate=1e-6)
    result = train_segmentation.train(
        train_segmentation.parse_args(flags(**common, output_dir=tmp_path / "run", eval_protocol="square"))
    )
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    test = segmentation_folder_dataset(tmp_path / "data", "test")
    square = numpy_metrics(*square_predictions(result.model, test, 32), 4)
    keep_ratio = numpy_metrics(*protocol_predictions(result.model, test, (32, 32), IMAGENET_MEAN, IMAGENET_STD), 4)
    assert results["eval_samples"] == 3
    assert results["eval_mean_iou"] == pytest.approx(square["mIoU"], abs=1e-9)
    assert results["eval_pixel_accuracy"] == pytest.approx(square["aAcc"], abs=1e-9)
    # the two protocols tell apart on this model (learning rate 1e-6, see above): measured mIoU gap 1.1e-3, 1e6
    # times the 1e-9 of the comparison
    assert abs(square["mIoU"] - keep_ratio["mIoU"]) > 1e-5
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


def test_the_test_scale_follows_the_training_pipeline(tmp_path):
    """mmseg's convention: the test scale is the training pipeline's base scale (--train_scale for the mmseg
    pipeline, the short side at the resolution for the default one), unless --eval_scale names one."""
    base = ["--dataset_name", "shapes", "--output_dir", str(tmp_path), "--resolution", "64"]
    scale = train_segmentation.model_test_scale
    assert scale(train_segmentation.parse_args(base), 64) == (256, 64)
    mmseg = [*base, "--train_pipeline", "mmseg", "--train_scale", "1024", "256"]
    assert scale(train_segmentation.parse_args(mmseg), 64) == (1024, 256)
    assert scale(train_segmentation.parse_args([*mmseg, "--eval_scale", "96", "48"]), 64) == (96, 48)
    recipe = train_segmentation.parse_args(["--recipe", "swin-ade20k", *base[:4]])
    assert scale(recipe, recipe.resolution) == (2048, 512)


@contextlib.contextmanager
def recorded_training_forwards():
    """Every training forward of a `SwinFPNForSegmentation` (one given labels) as (pixel_values, labels, loss,
    decode logits, auxiliary head output), from torch's global forward hooks: nothing of the package is replaced."""
    calls, auxiliary = [], []

    def hook(module, args, kwargs, output):
        if isinstance(module, SwinFPNAuxiliaryHead):
            auxiliary.append(output.detach())
        elif isinstance(module, SwinFPNForSegmentation) and kwargs.get("labels") is not None:
            calls.append(
                (kwargs["pixel_values"].detach(), kwargs["labels"], output.loss.detach(), output.logits.detach())
            )

    handle = torch.nn.modules.module.register_module_forward_hook(hook, with_kwargs=True)
    try:
        yield calls, auxiliary
    finally:
        handle.remove()


def test_upernet_with_the_mmseg_pipeline_and_the_auxiliary_loss_trains(tmp_path):
    argv = with_flags(TINY, output_dir=tmp_path / "run", decode_head_type="upernet", train_pipeline="mmseg")
    argv += ["--use_auxiliary_head", "--train_scale", "64", "16", "--scale_range", "1.0", "2.0"]
    args = train_segmentation.parse_args(argv)
    with recorded_training_forwards() as (calls, auxiliary):
        result = train_segmentation.train(args)
    assert result.model.config.decode_head_type == "upernet" and result.model.auxiliary_head is not None
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["global_step"] == 2 and len(calls) == 2 and len(auxiliary) == 2  # 2 steps, no accumulation

    # the batches the model trained on are mmseg's pipeline's crops of the 8 training images (RandomResize of
    # (64, 16) x U(1, 2), RandomCrop cat_max_ratio 0.75, flip, PhotoMetricDistortion, padding 255), each once
    dataset = embedded_dataset("shapes", "train", seed=args.seed, resolution=32).select(range(8))
    pipeline = MMSegTrainTransform(32, scale=(64, 16), ratio_range=(1.0, 2.0), seed=args.seed, num_labels=4)
    expected = pipeline({"image": dataset["image"], "annotation": dataset["annotation"]}, indices=list(range(8)))
    seen = []
    for pixel_values, labels, _, _ in calls:
        for image, label in zip(pixel_values, labels, strict=True):
            matches = [
                index
                for index in range(8)
                if torch.equal(image, expected["pixel_values"][index])
                and torch.equal(label, expected["labels"][index])
            ]
            assert len(matches) == 1, "a training crop is not the mmseg pipeline's crop of a training image"
            seen += matches
    assert sorted(seen) == list(range(8))
    assert any((label == 255).any() for _, labels, _, _ in calls for label in labels)  # the padding was used

    # the loss that was minimised is mmseg's: decode cross-entropy + 0.4 x the auxiliary FCN head's, both on the
    # logits resized to the labels, ignoring 255; and it is the train_loss reported (logging every step)
    for (_, labels, loss, logits), auxiliary_output in zip(calls, auxiliary, strict=True):
        resized = F.interpolate(auxiliary_output, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        decode = F.cross_entropy(logits, labels, ignore_index=255)
        expected_loss = decode + 0.4 * F.cross_entropy(resized, labels, ignore_index=255)
        # the same float32 operations: measured difference 0; leaving out the auxiliary term changes it by 0.99
        assert float(loss) == pytest.approx(float(expected_loss), abs=1e-6)
    assert results["train_loss"] == pytest.approx(float(calls[-1][2]), abs=1e-6)
    card = (tmp_path / "run" / "README.md").read_text()
    assert "PhotoMetricDistortion" in card and "upernet + auxiliary FCN head" in card
