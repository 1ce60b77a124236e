"""A folder the package loads natively never stops at transformers' "run the custom code? [y/N]" prompt.

transformers' pipelines also look for a video processor (`AutoVideoProcessor`, allowed to fail). It guesses one from an
`AutoImageProcessor` entry of `preprocessor_config.json`'s `auto_map` and, finding no local class for it, asks on
stdin whether to run remote code (15 s, then it goes on). The saved folders name the image processor's remote code in
`config.json`'s `auto_map` instead, which `AutoImageProcessor` reads and the video lookup does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from factories import TINY_SWIN_FPN

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor

PROMPT = "Do you wish to run the custom code?"

PIPELINE = """
import numpy as np
from PIL import Image
from transformers import pipeline
import hf_swin_ddpm
segmenter = pipeline("image-segmentation", model="model")
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8))
print(type(segmenter.model).__name__, type(segmenter.image_processor).__name__, len(segmenter(image)) > 0)
"""


def test_pipeline_on_a_saved_folder_never_prompts(tmp_path):
    torch.manual_seed(0)
    SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN)).save_pretrained(tmp_path / "model")
    SwinFPNImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "model")
    # stdin is a pipe that never answers (`communicate` writes nothing and closes it): a prompt prints its question
    # and reads end-of-file at once instead of waiting 15 s, so the question in the output is what shows a prompt,
    # not a delay; the timeout only guards against a hang.
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PIPELINE)],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        process.kill()
        process.stdin.close()
    assert PROMPT not in output, output[-2000:]
    assert process.returncode == 0, output[-2000:]
    assert output.split()[-3:] == ["SwinFPNForSegmentation", "SwinFPNImageProcessor", "True"], output[-2000:]
