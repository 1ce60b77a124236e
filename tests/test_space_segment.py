"""spaces_app/tab_segment.py: the Space's slide inference for images larger than the model's training size."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from factories import TINY_SWIN_FPN
from space_app_support import load_space_module

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor


@pytest.fixture(scope="module")
def segment_module():
    return load_space_module("tab_segment")


@pytest.fixture(scope="module")
def model_and_processor(one_thread):
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN, image_size=32)).eval()
    return model, SwinFPNImageProcessor(size={"height": 32, "width": 32})


def random_image(width: int, height: int) -> PIL.Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return PIL.Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_large_images_are_predicted_at_full_resolution_with_sliding_windows(segment_module, model_and_processor):
    model, processor = model_and_processor
    image = random_image(75, 50)
    assert segment_module.uses_slide_inference(model, processor, image)
    classes = segment_module.predict_classes(model, processor, image)
    assert classes.shape == (50, 75) and classes.dtype == np.int64
    # the same computation by hand: normalise at full size, windows of 32 every 21 pixels, count-map average
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - processor.image_mean) / processor.image_std
    pixel_values = torch.from_numpy(pixels.transpose(2, 0, 1))[None].float()
    total, count = torch.zeros(1, 3, 50, 75), torch.zeros(50, 75)
    for top in (0, 18):  # range(0, 50 - 32, 21) + [50 - 32]
        for left in (0, 21, 42, 43):
            window = (slice(None), slice(None), slice(top, top + 32), slice(left, left + 32))
            with torch.no_grad():
                total[window] += model(pixel_values[window]).logits
            count[top : top + 32, left : left + 32] += 1
    expected = (total / count)[0].argmax(0).numpy()
    assert np.array_equal(classes, expected)


def test_small_images_keep_the_resize_path(segment_module, model_and_processor):
    model, processor = model_and_processor
    image = random_image(30, 20)
    assert not segment_module.uses_slide_inference(model, processor, image)
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"])
    expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[(20, 30)])[0].numpy()
    assert np.array_equal(segment_module.predict_classes(model, processor, image), expected)


def test_models_without_inference_take_the_resize_path(segment_module, model_and_processor):
    _, processor = model_and_processor
    assert not segment_module.uses_slide_inference(torch.nn.Identity(), processor, random_image(100, 100))
    assert segment_module.training_size(SwinFPNImageProcessor(do_resize=False)) is None
