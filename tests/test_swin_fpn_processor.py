"""SwinFPNImageProcessor and `pipeline("image-segmentation")`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, pipeline

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_images_are_resized_rescaled_and_normalised_with_imagenet_statistics():
    processor = SwinFPNImageProcessor(size={"height": 32, "width": 48})
    image = random_image(20, 30)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 48)
    resized = np.asarray(image.resize((48, 32), Image.BILINEAR), dtype=np.float64) / 255.0
    expected = ((resized - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    assert np.abs(pixel_values[0].numpy() - expected).max() < 1e-5


def test_label_maps_take_the_same_geometry_with_nearest_sampling():
    processor = SwinFPNImageProcessor(size={"height": 64, "width": 64})
    label = np.zeros((16, 16), dtype=np.uint8)
    label[:8, :8], label[8:, 8:] = 3, 7
    batch = processor(random_image(16, 16), segmentation_maps=Image.fromarray(label), return_tensors="pt")
    labels = batch["labels"]
    assert labels.shape == (1, 64, 64) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) == {0, 3, 7}  # nearest: no interpolated in-between ids
    assert (labels[0, :32, :32] == 3).all() and (labels[0, 32:, 32:] == 7).all()


def test_reduce_labels_maps_background_to_ignore_index():
    processor = SwinFPNImageProcessor(size={"height": 4, "width": 4}, do_reduce_labels=True)
    label = np.array([[0, 1], [2, 5]], dtype=np.uint8)
    labels = processor(random_image(2, 2), segmentation_maps=Image.fromarray(label), return_tensors="pt")["labels"]
    assert labels[0, 0, 0] == 255 and labels[0, 0, 3] == 0 and labels[0, 3, 0] == 1 and labels[0, 3, 3] == 4


def test_post_process_resizes_logits_and_takes_the_argmax():
    processor = SwinFPNImageProcessor()
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 2, :2] = 5.0
    logits[1, 1] = 5.0

    class Outputs:
        pass

    outputs = Outputs()
    outputs.logits = logits
    maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(8, 8), (3, 5)])
    assert maps[0].shape == (8, 8) and maps[1].shape == (3, 5)
    assert (maps[0][:3] == 2).all() and (maps[0][5:] == 0).all()
    assert (maps[1] == 1).all()
    unsized = processor.post_process_semantic_segmentation(outputs)
    assert torch.equal(unsized[0], logits[0].argmax(0))
    with pytest.raises(ValueError, match="target_sizes"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=[(8, 8)])


def test_processor_round_trips_and_loads_with_auto_image_processor(tmp_path):
    processor = SwinFPNImageProcessor(size={"height": 40, "width": 40}, do_reduce_labels=True)
    processor.save_pretrained(tmp_path)
    SwinFPNConfig(num_labels=2).save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SwinFPNImageProcessor
    assert loaded.size["height"] == 40 and loaded.do_reduce_labels is True


def test_image_segmentation_pipeline_returns_one_mask_per_predicted_class():
    torch.manual_seed(0)
    id2label = {0: "background", 1: "circle", 2: "square"}
    config = SwinFPNConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        fpn_hidden_size=16,
        head_hidden_size=8,
        head_num_groups=4,
        id2label=id2label,
    )
    model = SwinFPNForSegmentation(config).eval()
    processor = SwinFPNImageProcessor(size={"height": 64, "width": 64})
    segmenter = pipeline("image-segmentation", model=model, image_processor=processor)
    image = random_image(50, 70, seed=3)
    results = segmenter(image)

    inputs = processor(image, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = processor.post_process_semantic_segmentation(
        type("O", (), {"logits": logits}), target_sizes=[(50, 70)]
    )[0]
    present = sorted(expected.unique().tolist())
    assert len(present) >= 2  # the comparison below is meaningful only with several classes
    assert [r["label"] for r in results] == [id2label[c] for c in present]
    union = np.zeros((50, 70), dtype=int)
    for result in results:
        mask = np.asarray(result["mask"]) > 0
        assert result["mask"].size == (70, 50)
        class_id = {v: k for k, v in id2label.items()}[result["label"]]
        assert (mask == (expected.numpy() == class_id)).all()
        union += mask
    assert (union == 1).all()  # the masks partition the image
