"""`hf-swin-ddpm sample --sampler/--variance`, `inpaint` and `img2img`: each command's image is the pipeline's own for
the same seed, on saved folders and on a Hub-cache copy of a released `DDPMPipeline` repository."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from PIL import Image
from released_checkpoints import add_released_ddpm
from training_support import CONSOLE_SCRIPT, run_cli_in_process

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet

SIDE = 8
PAPER_CONFIG = DDPMPaperScheduler().config  # the saved model's scheduler: diffusers' samplers are built from it


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_ddpm")
    torch.manual_seed(0)
    pipeline = DDPMPaperPipeline(unet=paper_unet("tiny", sample_size=SIDE), scheduler=DDPMPaperScheduler())
    pipeline.save_pretrained(root / "ddpm")
    return root


def loaded(folder):
    pipeline = DDPMPaperPipeline.from_pretrained(folder / "ddpm")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def grid_of(images) -> np.ndarray:
    return np.concatenate([np.asarray(image) for image in images], axis=1)


@pytest.mark.parametrize(
    "flags, scheduler",
    [
        (["--sampler", "paper", "--variance", "fixed_small"], lambda: DDPMPaperScheduler(variance_type="fixed_small")),
        (["--sampler", "ddim"], lambda: DDIMScheduler.from_config(PAPER_CONFIG)),
        (
            ["--sampler", "dpmsolver++"],
            lambda: DPMSolverMultistepScheduler.from_config(PAPER_CONFIG, algorithm_type="dpmsolver++"),
        ),
        (["--sampler", "euler"], lambda: EulerDiscreteScheduler.from_config(PAPER_CONFIG)),
    ],
)
def test_sample_with_each_sampler_is_that_scheduler(folder, capsys, flags, scheduler):
    result = run_cli_in_process(
        "sample",
        "ddpm",
        "grid.png",
        "--num_samples",
        "2",
        "--num_inference_steps",
        "5",
        *flags,
        cwd=folder,
        capsys=capsys,
    )
    assert result.returncode == 0, result.stderr
    reference = DDPMPaperPipeline(unet=loaded(folder).unet, scheduler=scheduler())
    reference.set_progress_bar_config(disable=True)
    images = reference(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5).images
    assert np.array_equal(np.asarray(Image.open(folder / "grid.png")), grid_of(images))
    assert type(reference.scheduler).__name__ in result.stdout


def test_sample_takes_the_spelling_of_the_released_checkpoints_docs(folder, capsys):
    result = run_cli_in_process(
        "sample", "ddpm", "four.png", "--num_images", "4", "--num_inference_steps", "2", cwd=folder, capsys=capsys
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(folder / "four.png").size == (4 * SIDE, SIDE)


def test_sample_a_released_repository_from_the_hub_cache_with_the_paper_sampler(tmp_path):
    unet = add_released_ddpm(tmp_path / "cache", "google/ddpm-cifar10-32", "fixed_large", weights="safetensors")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [str(CONSOLE_SCRIPT), "sample", "google/ddpm-cifar10-32", "out.png", "--sampler", "paper"]
    command += ["--num_samples", "2", "--num_inference_steps", "4"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    reference = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(variance_type="fixed_large"))
    reference.set_progress_bar_config(disable=True)
    images = reference(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4).images
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), grid_of(images))


def test_inpaint_is_the_pipeline_inpainting(folder, capsys):
    digit = np.zeros((SIDE, SIDE), dtype=np.uint8)
    digit[2:6, 3:5] = 255
    Image.fromarray(digit).save(folder / "digit.png")
    keep = np.full((SIDE, SIDE), 255, dtype=np.uint8)
    keep[SIDE // 2 :] = 0
    Image.fromarray(keep).save(folder / "mask.png")
    result = run_cli_in_process(
        "inpaint", "ddpm", "digit.png", "mask.png", "inpainted.png", "--num_inference_steps", "6",
        "--jump_length", "3", "--jump_n_sample", "2", "--seed", "4", cwd=folder, capsys=capsys,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = loaded(folder).inpaint(
        Image.fromarray(digit),
        Image.fromarray(keep),
        num_inference_steps=6,
        jump_length=3,
        jump_n_sample=2,
        generator=torch.Generator().manual_seed(4),
    )
    written = np.asarray(Image.open(folder / "inpainted.png"))
    assert np.array_equal(written, np.asarray(expected.images[0]))
    assert np.array_equal(written[: SIDE // 2], digit[: SIDE // 2])


def test_img2img_is_the_pipeline_sdedit(folder, capsys):
    digit = np.zeros((SIDE, SIDE), dtype=np.uint8)
    digit[1:7, 3:5] = 255
    Image.fromarray(digit).save(folder / "one.png")
    result = run_cli_in_process(
        "img2img", "ddpm", "one.png", "edited.png", "--strength", "0.3", "--num_inference_steps", "10",
        cwd=folder, capsys=capsys,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = loaded(folder).img2img(
        Image.fromarray(digit), strength=0.3, num_inference_steps=10, generator=torch.Generator().manual_seed(0)
    )
    assert np.array_equal(np.asarray(Image.open(folder / "edited.png")), np.asarray(expected.images[0]))


@pytest.mark.parametrize(
    "args, message",
    [
        (("inpaint", "ddpm", "digit.png", "small_mask.png", "x.png"), "MASK: small_mask.png is 4x4 but IMAGE is 8x8"),
        (("inpaint", "ddpm", "digit.png", "grey_mask.png", "x.png"), "must be black (regenerate) and white (keep)"),
        (("inpaint", "ddpm", "colour.png", "mask.png", "x.png"), "colour (3 channels) but the model takes grayscale"),
        (("img2img", "ddpm", "digit.png", "x.png", "--strength", "1.5"), "`strength` must be a number in [0, 1]"),
        (("img2img", "ddpm", "missing.png", "x.png"), "IMAGE: missing.png is not a file"),
        (("sample", "ddpm", "x.png", "--sampler", "ddim", "--variance", "fixed_small"), "--variance: applies to"),
    ],
)
def test_bad_editing_input_is_one_line(folder, capsys, args, message):
    (folder / "x.png").unlink(missing_ok=True)
    digit = np.zeros((SIDE, SIDE), dtype=np.uint8)
    Image.fromarray(digit).save(folder / "digit.png")
    Image.fromarray(np.full((SIDE, SIDE), 255, dtype=np.uint8)).save(folder / "mask.png")
    Image.fromarray(np.full((4, 4), 255, dtype=np.uint8)).save(folder / "small_mask.png")
    Image.fromarray(np.full((SIDE, SIDE), 128, dtype=np.uint8)).save(folder / "grey_mask.png")
    colour = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(folder / "colour.png")
    result = run_cli_in_process(*args, cwd=folder, capsys=capsys)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (folder / "x.png").exists()
