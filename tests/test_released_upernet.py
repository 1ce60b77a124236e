"""`hf-swin-ddpm convert-upernet` on a Hub cache laid out as `openmmlab/upernet-swin-tiny` is (tiny weights of the same
family), through the real `huggingface_hub` client offline: the saved SwinFPN folder loads without conversion and
gives `from_pretrained_upernet`'s logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from released_checkpoints import REVISION, add_released_upernet

from hf_swin_ddpm import SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.imaging import ADE20K_CLASSES

REPO_ID = "openmmlab/upernet-swin-tiny"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub_cache")
    upernet = add_released_upernet(cache, REPO_ID, weights="bin")
    return cache, upernet


def snapshot(cache):
    return cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / REVISION


def run_cli(cache, *arguments):
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "hf_swin_ddpm.cli", *map(str, arguments)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_convert_upernet_folder_loads_without_conversion(hub_cache, tmp_path):
    cache, upernet = hub_cache
    result = run_cli(cache, "convert-upernet", REPO_ID, tmp_path / "out", "--allow_pickle")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["decode_head_type"] == "upernet" and config["backbone_checkpoint"] == REPO_ID
    assert [config["id2label"][str(i)] for i in range(150)] == list(ADE20K_CLASSES)
    assert "AutoImageProcessor" in config["auto_map"] and (out / "modeling_swin_fpn.py").is_file()
    card = (out / "README.md").read_text()
    assert f"base_model: {REPO_ID}" in card and f"`{REPO_ID}`" in card and "license: mit" in card
    assert "a UperNet head" in card and "Semantic FPN" not in card and "UperNet channels / pool scales" in card
    assert not list(out.glob("*.bin"))

    torch.manual_seed(0)
    pixel_values = torch.randn(1, 3, 64, 80)
    loaded = SwinFPNForSegmentation.from_pretrained(out).eval()
    converted = SwinFPNForSegmentation.from_pretrained_upernet(snapshot(cache), allow_pickle=True).eval()
    with torch.no_grad():
        actual = loaded(pixel_values).logits
        expected = converted(pixel_values).logits
        reference = upernet(pixel_values).logits
    assert (actual - expected).abs().max().item() <= 1e-5
    # transformers' UperNet on the same weights: fp32 rounding of an equal computation done differently (fused qkv,
    # oneDNN kernels) measured 6e-8 here on logits of magnitude 0.3
    assert (actual - reference).abs().max().item() < 1e-5
    processor = SwinFPNImageProcessor.from_pretrained(out)
    assert processor.size == {"height": 512, "width": 512} and list(processor.image_mean) == [0.485, 0.456, 0.406]


def test_convert_upernet_without_allow_pickle_says_so(hub_cache, tmp_path):
    cache, _ = hub_cache
    result = run_cli(cache, "convert-upernet", REPO_ID, tmp_path / "out")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "no safetensors weights" in result.stderr and "add --allow_pickle" in result.stderr, result.stderr
