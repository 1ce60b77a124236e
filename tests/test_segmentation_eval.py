"""mmseg's evaluation protocol: keep-ratio sizes, metrics against numpy, scoring at the labels' own size."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from segmentation_reference import IGNORE, numpy_metrics, protocol_predictions, recording_copy

from hf_swin_ddpm.data import IMAGENET_MEAN, IMAGENET_STD, SegmentationEvalTransform, keep_ratio_size
from hf_swin_ddpm.evaluation.segmentation import (
    InferenceProtocol,
    class_counts,
    evaluate_segmentation,
    format_results_table,
    scores_from_counts,
)


@pytest.mark.parametrize(
    "height, width, scale, expected",
    [
        (512, 683, (2048, 512), (512, 683)),  # an ADE20K image: unchanged
        (256, 256, (2048, 512), (512, 512)),  # short side to 512
        (300, 4000, (2048, 512), (154, 2048)),  # long side capped at 2048: 300 * 2048 / 4000 = 153.6
        (1000, 500, (512, 2048), (1024, 512)),  # the order of the scale does not matter
        (64, 48, (32, 32), (32, 24)),  # a square training size: fit inside it
        (3, 5, (2048, 512), (512, 853)),  # factor min(2048 / 5, 512 / 3) = 170.67; 5 * 170.67 = 853.3
    ],
)
def test_keep_ratio_sizes(height, width, scale, expected):
    assert keep_ratio_size(height, width, scale) == expected


def test_keep_ratio_size_rejects_bad_scales():
    with pytest.raises(ValueError, match="scale must be two positive sizes"):
        keep_ratio_size(10, 10, (512,))
    with pytest.raises(ValueError, match="scale must be two positive sizes"):
        keep_ratio_size(10, 10, (0, 512))


def constructed_maps() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Label maps with ignored pixels, a class that is only predicted (3) and one that occurs nowhere (4)."""
    rng = np.random.default_rng(0)
    labels, predictions = [], []
    for height, width in [(13, 29), (40, 7), (16, 16)]:
        label = rng.integers(0, 3, size=(height, width))
        label[rng.random((height, width)) < 0.1] = IGNORE
        prediction = np.where(rng.random((height, width)) < 0.7, np.where(label == IGNORE, 0, label), 0)
        prediction[rng.random((height, width)) < 0.15] = 3
        prediction[rng.random((height, width)) < 0.1] = rng.integers(0, 3)
        labels.append(label)
        predictions.append(prediction)
    return predictions, labels


def test_metrics_match_an_independent_numpy_computation():
    predictions, labels = constructed_maps()
    names = {0: "wall", 1: "floor", 2: "sky", 3: "tree", 4: "car"}
    counts = sum(
        class_counts(torch.from_numpy(p), torch.from_numpy(label), 5) for p, label in zip(predictions, labels)
    )
    ours = scores_from_counts(counts, names)
    expected = numpy_metrics(predictions, labels, 5)
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-12), key
    assert list(ours["per_class"]) == ["wall", "floor", "sky", "tree", "car"]
    for index, name in names.items():
        np.testing.assert_allclose(ours["per_class"][name]["IoU"], expected["IoU"][index], atol=1e-12)
        np.testing.assert_allclose(ours["per_class"][name]["Acc"], expected["Acc"][index], atol=1e-12)
    assert ours["per_class"]["tree"]["IoU"] == 0.0 and np.isnan(ours["per_class"]["tree"]["Acc"])
    assert np.isnan(ours["per_class"]["car"]["IoU"])
    # a class predicted but absent from the labels: Dice 0, but no recall and so no F-score (mmseg's beta = 1)
    assert ours["per_class"]["tree"]["Dice"] == 0.0 and np.isnan(ours["per_class"]["tree"]["Fscore"])
    for name in ("wall", "floor", "sky"):
        assert ours["per_class"][name]["Dice"] == pytest.approx(ours["per_class"][name]["Fscore"], abs=1e-12)
    table = format_results_table(ours)
    assert "wall" in table and f"{100 * ours['mIoU']:.2f}" in table


def test_class_counts_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        class_counts(torch.zeros(4, 5), torch.zeros(5, 4), 3)


def stripes_dataset() -> datasets.Dataset:
    """Non-square images whose label is the colour of thin vertical stripes: a square resize distorts them."""
    rng = np.random.default_rng(3)
    images, annotations = [], []
    for height, width in [(24, 72), (30, 50), (40, 21)]:
        label = (np.arange(width)[None, :] // 3 % 3).repeat(height, 0)
        label[: height // 4] = rng.integers(0, 3, size=(height // 4, width))
        colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)
        image = colours[label] + rng.integers(0, 20, size=(height, width, 3)).astype(np.uint8)
        images.append(Image.fromarray(image))
        annotations.append(Image.fromarray(label.astype(np.uint8), mode="L"))
    return datasets.Dataset.from_dict({"image": images, "annotation": annotations})


def test_scoring_at_the_labels_size_differs_from_square_resized_scoring(tiny_swin_fpn):
    dataset = stripes_dataset()
    results = evaluate_segmentation(
        tiny_swin_fpn, dataset, scale=(32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD, progress=False
    )
    # the same protocol computed here: keep-ratio resize, whole inference, logits resized to the label size
    predictions, labels = [], []
    for example in dataset:
        image, label = example["image"], np.asarray(example["annotation"]).astype(np.int64)
        height, width = keep_ratio_size(image.height, image.width, (32, 32))
        array = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(((array - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)).float()[None]
        with torch.no_grad():
            logits = tiny_swin_fpn(pixels).logits
            logits = torch.nn.functional.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
        predictions.append(logits[0].argmax(0).numpy())
        labels.append(label)
    expected = numpy_metrics(predictions, labels, 3)
    assert results["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-12)
    assert results["aAcc"] == pytest.approx(expected["aAcc"], abs=1e-12)
    assert results["num_images"] == 3 and results["scale"] == [32, 32] and results["protocol"]["mode"] == "whole"

    # the old square protocol: image and labels resized to 32 x 32, scored there
    square = SegmentationEvalTransform(32, num_labels=3)
    batch = square({"image": dataset["image"], "annotation": dataset["annotation"]})
    with torch.no_grad():
        square_predictions = tiny_swin_fpn(torch.stack(batch["pixel_values"])).logits.argmax(1).numpy()
    square_metrics = numpy_metrics(list(square_predictions), [lab.numpy() for lab in batch["labels"]], 3)
    assert abs(square_metrics["mIoU"] - results["mIoU"]) > 1e-3


@pytest.mark.parametrize(
    "protocol",
    [
        # stride 6, not the default 2/3 of the crop (10): a protocol that lost its stride places other windows
        InferenceProtocol(mode="slide", crop_size=16, stride=6),
        InferenceProtocol(scales=(0.75, 1.25), flip=True),
        InferenceProtocol(mode="slide", crop_size=16, stride=6, scales=(0.75, 1.0), flip=True),
    ],
    ids=["slide", "tta", "slide-tta"],
)
def test_slide_and_tta_protocols_reach_the_model_as_mmseg_runs_them(tiny_swin_fpn, protocol):
    """Crop, stride, scales and flip reach `model.inference`: the windows and views the model is given are those of
    mmseg's slide inference and TTA written out independently (segmentation_reference), and so are the metrics."""
    dataset = stripes_dataset()
    model = recording_copy(tiny_swin_fpn)
    results = evaluate_segmentation(
        model, dataset, scale=(32, 32), protocol=protocol, mean=IMAGENET_MEAN, std=IMAGENET_STD, progress=False
    )
    evaluated, model.inputs = model.inputs, []
    predictions, labels = protocol_predictions(
        model,
        dataset,
        (32, 32),
        IMAGENET_MEAN,
        IMAGENET_STD,
        mode=protocol.mode,
        crop=protocol.crop_size,
        stride=protocol.stride,
        scales=protocol.scales,
        flip=protocol.flip,
    )
    expected_inputs = model.inputs
    # the same windows and views, in mmseg's order; the images are exactly the reference's (the same PIL resize and
    # float32 arithmetic), the views of rescaled images too (the same interpolate call)
    assert [tuple(x.shape) for x in evaluated] == [tuple(x.shape) for x in expected_inputs]
    for ours, theirs in zip(evaluated, expected_inputs, strict=True):
        assert torch.equal(ours, theirs)
    expected = numpy_metrics(predictions, labels, 3)
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "mFscore"):
        assert results[key] == pytest.approx(expected[key], abs=1e-12), key
    assert results["protocol"] == {
        "mode": protocol.mode,
        "crop_size": protocol.crop_size,
        "stride": protocol.stride,
        "scales": list(protocol.scales),
        "flip": protocol.flip,
    }
