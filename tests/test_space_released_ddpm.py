"""The Space serving the DDPM paper's released checkpoints (diffusers' `DDPMPipeline` conversions, e.g.
`DDPM_MODEL=google/ddpm-cifar10-32`) with the paper's sampler, and saying before it starts how long a sample takes.

The Space runs as `python spaces_app/app.py` in its own process with `DDPM_MODEL` set to the repo id and `HF_HUB_CACHE`
to a Hub cache laid out as the real repository (tests/released_checkpoints.py, tiny weights of the same UNet family),
offline; it is called through gradio_client. The reference is `DDPMPaperPipeline.from_pretrained(repo,
paper_sampler=True)` here, through the same cache.
"""

from __future__ import annotations

import re

import gradio as gr
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image
from released_checkpoints import add_released_ddpm
from space_app_support import load_app_module, load_space_module, save_tiny_segmenter
from space_load_support import served_space
from test_space_browser import CHROMIUM, CHROMIUM_FLAGS, TIMEOUT_MS, loaded_image_size, require_browser, set_number

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler

CIFAR10 = "google/ddpm-cifar10-32"
CHURCH = "google/ddpm-ema-church-256"
STEPS = 6
SEED = 11
DEFAULT_STEPS = 250  # the Generate tab's default number of steps (tab_generate.DEFAULT_INFERENCE_STEPS)
DEFAULT_IMAGES = 8


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub_cache")
    # the real cifar10 repository has both .bin and safetensors weights; the Space reads safetensors only
    add_released_ddpm(cache, CIFAR10, "fixed_large", weights="both", sample_size=32)
    add_released_ddpm(cache, CHURCH, "fixed_small", weights="safetensors", seed=1, sample_size=256)
    return cache


@pytest.fixture(scope="module")
def cifar10_space(hub_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("space_released")
    segmenter = save_tiny_segmenter(root / "swin-fpn")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(hub_cache))
        with served_space(segmenter, CIFAR10, root / "server.log") as server:
            yield server


def reference(hub_cache, repo_id: str, **kwargs) -> DDPMPaperPipeline:
    pipeline = DDPMPaperPipeline.from_pretrained(
        repo_id, cache_dir=hub_cache, local_files_only=True, use_safetensors=True, **kwargs
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def float_samples(pipeline: DDPMPaperPipeline, num_images: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(SEED)
    return pipeline(batch_size=num_images, generator=generator, num_inference_steps=STEPS, output_type="np").images


def rounding_gap(shown: np.ndarray, sample: np.ndarray) -> float:
    """Largest gap, in 8-bit levels, between a served sample (upscaled with nearest) and a float sample in [0, 1]."""
    factor = shown.shape[0] // sample.shape[0]
    return float(np.abs(shown[::factor, ::factor].astype(float) - sample * 255.0).max())


def test_a_released_cifar10_repo_id_is_served_with_the_papers_sampler(cifar10_space, hub_cache):
    client = cifar10_space.client()
    gallery, strip = client.predict(SEED, 2, STEPS, "sigma² = beta", False, api_name="/generate")
    served = [Image.open(item["image"]) for item in gallery]
    assert [(image.mode, image.size) for image in served] == [("RGB", (128, 128))] * 2  # 32x32 RGB, upscaled 4x

    paper = reference(hub_cache, CIFAR10, paper_sampler=True)
    assert type(paper.scheduler) is DDPMPaperScheduler
    expected = float_samples(paper, 2)
    for image, sample in zip(served, expected, strict=True):
        shown = np.asarray(image)
        assert np.array_equal(shown, np.kron(shown[::4, ::4], np.ones((4, 4, 1), dtype=np.uint8)))
        # the same chain in both processes (one thread each): the served pixels are its rounding to 8 bits; 1e-3 of a
        # level covers float noise between the two processes (none seen). Random weights drive 99.4% of the values to
        # 0 or 255 (measured at 6 steps); that pattern over 6,144 values still pins the chain down, and the rest match
        # to the rounding
        assert rounding_gap(shown, sample) <= 0.5 + 1e-3

    # the trajectory strip draws the same chain's x_t and x_0 estimates (x_t is mostly unsaturated early on)
    tab = load_space_module("tab_generate")
    generator = torch.Generator().manual_seed(SEED)
    chain = paper(
        batch_size=2,
        generator=generator,
        num_inference_steps=STEPS,
        output_type="np",
        return_trajectory=True,
        trajectory_timesteps=tab.TRAJECTORY_FRAMES,
    )
    drawn = tab.trajectory_strip(chain.trajectory_timesteps, chain.trajectory_samples, chain.trajectory_x0)
    assert np.array_equal(np.asarray(Image.open(strip).convert("RGB")), np.asarray(drawn.convert("RGB")))

    # not the repository's own sampler (diffusers' DDPMScheduler, clipping x_0 at every step)
    own = reference(hub_cache, CIFAR10)
    assert type(own.scheduler) is DDPMScheduler
    assert max(rounding_gap(np.asarray(image), sample) for image, sample in zip(served, float_samples(own, 2))) > 1


def estimate_figures(line: str) -> tuple[str, int, str, float]:
    """(per-image time, steps, resolution, milliseconds per UNet call) read back from the Generate tab's line."""
    match = re.search(
        r"About (.+?) per image\*\* at (\d+) steps on this hardware .*one float32 UNet call at (\d+×\d+), batch 1 took "
        r"([\d.]+) ms",
        line,
    )
    assert match, line
    return match[1], int(match[2]), match[3], float(match[4])


def test_the_generate_tab_says_how_long_a_sample_takes_before_it_starts(cifar10_space):
    components = cifar10_space.client().config["components"]
    lines = [c["props"]["value"] for c in components if c.get("props", {}).get("elem_id") == "generate-estimate"]
    assert len(lines) == 1
    per_image, steps, resolution, milliseconds = estimate_figures(lines[0])
    assert (steps, resolution) == (DEFAULT_STEPS, "32×32")
    tab = load_space_module("tab_generate")
    # the line's figures agree: per image = steps x one UNet call (the call rounded to 0.1 ms in the line)
    assert milliseconds > 0
    low, high = (steps * (milliseconds + d) / 1000 for d in (-0.05, 0.05))
    if per_image.endswith(" s") and "min" not in per_image:  # "0.87 s", "2.5 s", "12 s": within the shown precision
        shown = float(per_image[:-2])
        precision = 0.005 if shown < 1 else 0.05 if shown < 10 else 0.5
        assert low - precision <= shown <= high + precision, (per_image, low, high)
    else:
        assert per_image in {tab.format_duration(value) for value in (low, high)}, (per_image, low, high)
    assert f"for {DEFAULT_IMAGES})" in lines[0]


def test_a_256_model_is_accepted_with_its_variance_and_an_estimate_that_follows_the_steps(hub_cache):
    """The Space given a 256x256 release (a folder: the snapshot in the cache) serves it with the official code's
    beta-tilde for the LSUN models, and the time line follows the steps and images chosen."""
    app = load_app_module()
    tab = load_space_module("tab_generate")
    snapshot = next((hub_cache / f"models--{CHURCH.replace('/', '--')}" / "snapshots").iterdir())
    pipeline = app.load_ddpm(str(snapshot))
    assert type(pipeline.scheduler) is DDPMPaperScheduler
    assert (pipeline.scheduler.config.variance_type, pipeline.scheduler.config.clip_sample) == ("fixed_small", False)

    with gr.Blocks() as demo:
        app.build_generate_tab(pipeline)
    radio = next(block for block in demo.blocks.values() if isinstance(block, gr.Radio))
    assert radio.value == tab.SIGMA_BETA_TILDE
    line = next(
        block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "generate-estimate"
    ).value
    _, steps, resolution, milliseconds = estimate_figures(line)
    assert (steps, resolution) == (DEFAULT_STEPS, "256×256")
    # the change listeners of the steps slider and the images slider recompute the line
    listeners = [fn for fn in demo.fns.values() if fn.name == "estimate_line"]
    assert len(listeners) == 2
    updated = listeners[0].fn(1000, 3)
    assert estimate_figures(updated)[1:] == (1000, "256×256", milliseconds)
    per_image = estimate_figures(updated)[0]  # 1000 calls of the call shown rounded to 0.1 ms
    assert per_image in {tab.format_duration(1000 * (milliseconds + d) / 1000) for d in (-0.05, 0.05)}, updated
    assert "for 3)" in updated

    # a sample at 256x256 through the tab's route function, equal to the paper's pipeline for the seed
    gallery, _ = tab.generate(pipeline, SEED, 1, 2, tab.SIGMA_BETA_TILDE)
    shown = np.asarray(gallery[0][0])
    assert shown.shape == (256, 256, 3)
    generator = torch.Generator().manual_seed(SEED)
    expected = pipeline(batch_size=1, generator=generator, num_inference_steps=2, output_type="np").images[0]
    assert rounding_gap(shown, expected) <= 0.5 + 1e-3  # the same chain in one process: its 8-bit rounding


def test_in_the_browser_the_estimate_follows_the_steps_before_generating(cifar10_space):
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(cifar10_space.url)
        page.get_by_role("tab", name="Generate").click()
        estimate = page.locator("#generate-estimate")
        assert f"per image at {DEFAULT_STEPS} steps" in estimate.inner_text()
        set_number(page, "generate-steps", 1000)
        page.wait_for_function(
            "() => document.querySelector('#generate-estimate').innerText.includes('per image at 1000 steps')"
        )
        assert "32×32, batch 1" in estimate.inner_text()
        set_number(page, "generate-num-images", 2)
        page.wait_for_function("() => document.querySelector('#generate-estimate').innerText.includes('for 2)')")
        set_number(page, "generate-steps", 4)
        page.click("#generate-button")
        page.wait_for_function("document.querySelectorAll('#generate-gallery img').length === 2")
        assert loaded_image_size(page, "#generate-gallery img") == (128, 128)  # 32x32, shown 4x
        browser.close()


@pytest.mark.parametrize(
    "seconds, text",
    [(0.04, "0.04 s"), (2.5, "2.5 s"), (42.4, "42 s"), (200, "3 min 20 s"), (180, "3 min"), (7500, "2 h 5 min")],
)
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert load_space_module("tab_generate").format_duration(seconds) == text
