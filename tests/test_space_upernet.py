"""The Space with `SWIN_FPN_MODEL=openmmlab/upernet-swin-tiny` (a Hub cache laid out as the real repository, tiny
weights, read through the real `huggingface_hub` client offline): served by its own process, called with
`gradio_client`, it converts the UperNet to our SwinFPN, segments a photograph with our slide inference and shows
ADE20K's class names in the standard ADE20K palette."""

from __future__ import annotations

import importlib.resources

import httpx
import numpy as np
from gradio_client import handle_file
from PIL import Image
from released_checkpoints import REVISION, add_released_upernet
from space_app_support import load_space_module, save_tiny_ddpm
from space_load_support import served_space

from hf_swin_ddpm import SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.imaging import ADE20K_CLASSES, ADE20K_PALETTE

REPO_ID = "openmmlab/upernet-swin-tiny"


def test_space_serves_a_converted_upernet_with_ade20k_names(tmp_path, monkeypatch):
    cache = tmp_path / "hub_cache"
    add_released_upernet(cache, REPO_ID, weights="safetensors")  # the Space reads safetensors only
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    photograph = str(importlib.resources.files("sklearn.datasets.images") / "china.jpg")
    with served_space(REPO_ID, save_tiny_ddpm(tmp_path / "ddpm"), tmp_path / "space.log") as space:
        config = httpx.get(space.url + "config", timeout=30).text
        overlay, mask, legend = space.client().predict(handle_file(photograph), api_name="/segment")
    assert "china.jpg" in config and "flower.jpg" in config  # the photographs are among the examples
    assert f"converted from `{REPO_ID}`" in config and "UperNet head" in config

    # what our model predicts with its slide inference, computed here from the same snapshot
    snapshot = cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / REVISION
    model = SwinFPNForSegmentation.from_pretrained_upernet(snapshot).eval()
    processor = SwinFPNImageProcessor.from_pretrained(snapshot)
    tab_segment, image_inputs = load_space_module("tab_segment"), load_space_module("image_inputs")
    image = image_inputs.prepare_image(Image.open(photograph))
    assert tab_segment.uses_slide_inference(model, processor, image)  # 640 x 427 against 512 x 512 windows
    expected = tab_segment.predict_classes(model, processor, image)
    mask = Image.open(mask)
    assert mask.mode == "P" and np.array_equal(np.asarray(mask), expected)
    palette = np.array(mask.getpalette()[: 3 * 150]).reshape(150, 3)
    assert np.array_equal(palette, np.array(ADE20K_PALETTE))

    rows = legend["data"]
    present = sorted(np.flatnonzero(np.bincount(expected.ravel(), minlength=150)))
    assert sorted(row[0] for row in rows) == present
    for class_id, name, swatch, _ in rows:
        assert name == ADE20K_CLASSES[class_id]
        assert "#{:02x}{:02x}{:02x}".format(*ADE20K_PALETTE[class_id]) in swatch
