"""The Space's API, served in-process on a free loopback port and called with gradio_client.

Tiny random-weight models stand in for the trained demo models; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gradio as gr
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from gradio_client import Client, handle_file
from PIL import Image
from space_app_support import (
    TINY_NUM_TRAIN_TIMESTEPS,
    load_app_module,
    load_space_module,
    save_tiny_ddpm,
    save_tiny_segmenter,
    served_app,
)

from hf_swin_ddpm import DDPMPaperPipeline, SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.data import SHAPES_ID2LABEL
from hf_swin_ddpm.data.digit_scenes import DIGIT_SCENES_ID2LABEL

LAST_T = TINY_NUM_TRAIN_TIMESTEPS - 1


@dataclass
class Space:
    client: Client
    demo: gr.Blocks
    app: ModuleType
    swin_fpn_folder: Path
    images: Path  # a folder for the test's input files

    @property
    def ddpm_folder(self) -> Path:
        return self.swin_fpn_folder.parent / "ddpm"


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Space]:
    root = tmp_path_factory.mktemp("space_api")
    swin_fpn_folder = save_tiny_segmenter(root / "swin-fpn")
    ddpm_folder = save_tiny_ddpm(root / "ddpm")
    images = root / "images"
    images.mkdir()
    with served_app(swin_fpn_folder, ddpm_folder) as (demo, url):
        yield Space(Client(url, verbose=False), demo, load_app_module(), swin_fpn_folder, images)


def test_the_models_line_names_the_folders_not_the_server_paths(space):
    lines = [
        block.value
        for block in space.demo.blocks.values()
        if isinstance(block, gr.Markdown) and str(block.value).startswith("Models:")
    ]
    assert lines == ["Models: segmentation `swin-fpn` · diffusion `ddpm`"]
    assert space.app.model_name("someone/ddpm-cifar10") == "someone/ddpm-cifar10"  # a Hub repo id as it is


def example_path(app: ModuleType, index: int = 0) -> str:
    return app.example_images()[index]


def save_input(space: Space, image: Image.Image, name: str, **save_options) -> str:
    path = space.images / name
    image.save(path, **save_options)
    return str(path)


def segment(space: Space, path: str) -> tuple[Image.Image, Image.Image, dict]:
    overlay, mask, legend = space.client.predict(handle_file(path), api_name="/segment")
    return Image.open(overlay), Image.open(mask), legend


def expected_classes(space: Space, image: Image.Image) -> np.ndarray:
    """The model's argmax at the image size, computed directly (not through the app)."""
    model = SwinFPNForSegmentation.from_pretrained(space.swin_fpn_folder).eval()
    processor = SwinFPNImageProcessor.from_pretrained(space.swin_fpn_folder)
    with torch.no_grad():
        logits = model(pixel_values=processor(images=image, return_tensors="pt")["pixel_values"]).logits
    upsampled = F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
    return upsampled.argmax(dim=1)[0].numpy()


def still_answers(space: Space) -> None:
    overlay, _, _ = segment(space, example_path(space.app))
    assert overlay.size == (96, 96)  # the digit_scenes canvases


# ------------------------------------------------------------------------------------------------ routes


def test_api_routes_and_their_first_inputs(space):
    endpoints = space.client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert parameters["/segment"] == ["image"]
    assert parameters["/generate"][:3] == ["seed", "num_images", "inference_steps"]
    assert parameters["/generate"][3] == "variance"
    assert parameters["/generate"][4] == "use_bf16"
    assert parameters["/forward_diffusion"][:2] == ["image", "t"]
    assert parameters["/segment_drawing"] == ["drawing"]


SPACE_ROUTES = {"/segment", "/segment_drawing", "/generate", "/forward_diffusion", "/interpolate", "/edit"}


def test_the_space_card_and_the_docs_list_every_route_and_tab(space):
    endpoints = space.client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == SPACE_ROUTES  # "Segment these" is a page event, not a route
    tabs = [block.label for block in space.demo.blocks.values() if isinstance(block, gr.Tab)]
    assert {"Segment", "Generate", "Forward process", "Interpolate", "Edit", "Draw", "Upload"} <= set(tabs)
    root = Path(space.app.__file__).resolve().parents[1]
    for document in (root / "spaces_app" / "README.md", root / "docs" / "space.md"):
        text = document.read_text(encoding="utf-8")
        for route in SPACE_ROUTES:
            assert f"`{route}`" in text, (document, route)
        for tab in ("Segment", "Generate", "Forward process", "Interpolate", "Edit", "Segment these"):
            assert f"| {tab}" in text or f"**{tab}**" in text, (document, tab)


def test_segment_mask_is_a_lossless_png_of_the_models_argmax(space):
    scene = Image.open(example_path(space.app)).convert("RGB").resize((64, 64), Image.Resampling.BOX)
    path = save_input(space, scene, "scene_at_the_training_size.png")  # one forward, no slide windows
    overlay, mask, legend = segment(space, path)
    assert mask.format == "PNG" and mask.mode == "P" and overlay.size == mask.size == (64, 64)
    classes = np.asarray(mask)
    expected = expected_classes(space, Image.open(path).convert("RGB"))
    assert np.array_equal(classes, expected)
    assert len(np.unique(classes)) >= 2  # the random model still separates some pixels

    assert legend["headers"] == ["class id", "class", "colour", "pixels (%)"]
    rows = legend["data"]
    assert [row[1] for row in rows] == list(SHAPES_ID2LABEL.values())
    shares = np.array([row[3] for row in rows], dtype=float)
    assert abs(shares.sum() - 100.0) < 0.05
    counted = 100.0 * np.bincount(classes.ravel(), minlength=len(rows)) / classes.size
    np.testing.assert_allclose(shares, counted, atol=0.006)
    palette = np.array(mask.getpalette()[: 3 * len(rows)]).reshape(-1, 3)
    for class_id, row in enumerate(rows):
        assert "#{:02x}{:02x}{:02x}".format(*palette[class_id]) in row[2]


def test_overlay_tints_predicted_objects_and_leaves_background_pixels(space):
    path = example_path(space.app, 1)
    overlay, mask, _ = segment(space, path)
    original = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    changed = np.abs(np.asarray(overlay, dtype=int) - original).sum(axis=2) > 0
    classes = np.asarray(mask)
    assert not changed[classes == 0].any()  # background is shown as is
    assert changed[classes != 0].mean() > 0.95


def image_in_mode(mode: str) -> Image.Image:
    """A 48x40 test picture in `mode`."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(np.linspace(0, 65535, 40 * 48).reshape(40, 48).astype(np.uint16))
    if mode == "P-transparent":
        palette_image = rgb.convert("P")
        palette_image.info["transparency"] = 0
        return palette_image
    return rgb.convert(mode)


@pytest.mark.parametrize(
    ("mode", "file_name"),
    [
        ("RGBA", "rgba.png"),
        ("LA", "la.png"),
        ("L", "grey.png"),
        ("1", "bilevel.png"),
        ("P", "palette.png"),
        ("P-transparent", "palette_alpha.png"),
        ("CMYK", "cmyk.jpg"),
        ("CMYK", "cmyk.tiff"),
        ("I;16", "sixteen_bit.png"),
        ("RGB", "photo.jpg"),
        ("RGB", "photo.webp"),
    ],
)
def test_segment_accepts_common_image_modes(space, mode, file_name):
    image = image_in_mode(mode)
    path = save_input(space, image, file_name)
    overlay, mask, legend = segment(space, path)
    assert overlay.mode == "RGB" and overlay.size == mask.size == (48, 40)
    assert abs(sum(row[3] for row in legend["data"]) - 100.0) < 0.05


def test_huge_images_are_downscaled_to_the_bound(space):
    ramp = np.linspace(0, 255, 3000, dtype=np.uint8)
    huge = Image.fromarray(np.stack([np.tile(ramp, (1500, 1))] * 3, axis=2))  # 3000 x 1500, compresses well
    overlay, mask, _ = segment(space, save_input(space, huge, "huge.png"))
    assert (
        overlay.size
        == mask.size
        == (load_space_module("image_inputs").MAX_IMAGE_SIDE, load_space_module("image_inputs").MAX_IMAGE_SIDE // 2)
    )


@pytest.mark.parametrize(
    ("file_name", "content"),
    [
        ("not_an_image.png", b"this is plain text, not a picture"),
        ("empty.jpg", b""),
        ("truncated.png", None),  # the first half of a real PNG
    ],
)
def test_unreadable_uploads_give_a_clear_error_and_the_server_keeps_serving(space, file_name, content):
    path = space.images / file_name
    if content is None:
        content = Path(example_path(space.app, 2)).read_bytes()
        content = content[: len(content) // 2]
    path.write_bytes(content)
    with pytest.raises(Exception, match=r"Could not read '.*': it is not an image or it is corrupt"):
        space.client.predict(handle_file(str(path)), api_name="/segment")
    still_answers(space)


# ------------------------------------------------------------------------------------------------ generate


def generate(space: Space, seed, num_images, steps, variance="sigma² = beta") -> tuple[list[np.ndarray], Image.Image]:
    gallery, strip = space.client.predict(seed, num_images, steps, variance, api_name="/generate")
    return [np.asarray(Image.open(item["image"])) for item in gallery], Image.open(strip)


def diffusers_samples(space: Space, seed: int, num_images: int, steps: int, variance_type: str) -> np.ndarray:
    """The reference: diffusers' own DDPMPipeline and DDPMScheduler with the paper's schedule (T = 1000, betas
    linear from 1e-4 to 0.02), no clipping of x_0 (Algorithm 2) and evenly spaced timesteps. Floats in [0, 1],
    (N, H, W, C). Its float32 betas differ from our float64 ones: the samples agree to 6e-6 (measured)."""
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        variance_type=variance_type,
        clip_sample=False,
        timestep_spacing="linspace",
    )
    pipeline = DDPMPipeline(unet=UNet2DModel.from_pretrained(space.ddpm_folder / "unet"), scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipeline(batch_size=num_images, generator=generator, num_inference_steps=steps, output_type="np").images


def assert_shows(served: list[np.ndarray], expected: np.ndarray) -> None:
    """Each served 8-bit sample (upscaled with nearest) is the rounding of the expected float sample: within half a
    level plus 2e-5 of the scale (3x the measured float gap between the reference and our chain)."""
    assert len(served) == len(expected)
    for shown, sample in zip(served, expected, strict=True):
        factor = shown.shape[0] // sample.shape[0]
        assert np.array_equal(shown, np.kron(shown[::factor, ::factor], np.ones((factor, factor), dtype=np.uint8)))
        gap = np.abs(shown[::factor, ::factor].astype(float) - sample[..., 0] * 255.0)
        assert gap.max() <= 0.5 + 255 * 2e-5, gap.max()


def test_generate_returns_the_requested_number_of_upscaled_samples_and_a_trajectory(space):
    samples, strip = generate(space, seed=3, num_images=3, steps=10)
    assert len(samples) == 3
    assert all(sample.shape == (128, 128) for sample in samples)  # 16x16, upscaled 8x with nearest
    assert_shows(samples, diffusers_samples(space, seed=3, num_images=3, steps=10, variance_type="fixed_large"))

    # the strip draws the first sample's chain as DDPMPaperPipeline records it for the same seed: x_t and the x_0
    # estimate at TRAJECTORY_FRAMES evenly spaced steps of the 10
    tab = load_space_module("tab_generate")
    pipeline = DDPMPaperPipeline.from_pretrained(space.ddpm_folder)
    expected = pipeline(
        batch_size=3,
        generator=torch.Generator().manual_seed(3),
        num_inference_steps=10,
        output_type="np",
        return_trajectory=True,
        trajectory_timesteps=tab.TRAJECTORY_FRAMES,
    )
    assert expected.trajectory_timesteps == [999, 888, 666, 555, 444, 333, 111, 0]  # steps 0 1 3 4 5 6 8 9 of 10
    shown = np.asarray(strip.convert("RGB"))
    first = tab.trajectory_strip(expected.trajectory_timesteps, expected.trajectory_samples, expected.trajectory_x0)
    assert np.array_equal(shown, np.asarray(first))
    second = tab.trajectory_strip(
        expected.trajectory_timesteps, expected.trajectory_samples[:, 1:], expected.trajectory_x0[:, 1:]
    )
    assert second.size != first.size or not np.array_equal(shown, np.asarray(second))  # the strip tells them apart


def test_generate_same_seed_gives_identical_samples(space):
    first, _ = generate(space, seed=7, num_images=2, steps=3)
    again, _ = generate(space, seed=7, num_images=2, steps=3)
    other, _ = generate(space, seed=8, num_images=2, steps=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_generate_variance_choices_are_sigma_beta_and_beta_tilde(space):
    large, _ = generate(space, seed=1, num_images=2, steps=3, variance="sigma² = beta")
    small, _ = generate(space, seed=1, num_images=2, steps=3, variance="beta-tilde")
    expected_large = diffusers_samples(space, seed=1, num_images=2, steps=3, variance_type="fixed_large")
    expected_small = diffusers_samples(space, seed=1, num_images=2, steps=3, variance_type="fixed_small")
    assert np.abs(expected_large - expected_small).max() * 255 > 10  # the two chains are told apart by the check
    assert_shows(large, expected_large)
    assert_shows(small, expected_small)


def test_generate_bf16_checkbox_runs_the_unet_in_bf16_with_samples_close_to_fp32(space):
    conv_outputs: list[torch.dtype] = []

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            conv_outputs.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)  # the app is served in this process
    try:
        gallery, _ = space.client.predict(5, 2, 3, "sigma² = beta", True, api_name="/generate")
    finally:
        handle.remove()
    bf16 = [np.asarray(Image.open(item["image"]), dtype=np.int16) for item in gallery]
    fp32, _ = generate(space, seed=5, num_images=2, steps=3)  # the checkbox is off by default
    other_seed, _ = generate(space, seed=6, num_images=2, steps=3)
    assert conv_outputs and set(conv_outputs) == {torch.bfloat16}
    # The random UNet's 3-step chain saturates most pixels, so a pixel near the clamp may flip; with the same noise
    # the samples differ on average by 0.29 of 255 here, against 129 between two seeds.
    difference = np.mean([np.abs(a - b).mean() for a, b in zip(bf16, fp32, strict=True)])
    seeds = np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(other_seed, fp32, strict=True)])
    assert difference < 0.05 * seeds
    # and they are the pipeline's bf16 samples for that seed
    pipeline = DDPMPaperPipeline.from_pretrained(space.ddpm_folder)
    expected = pipeline(
        batch_size=2,
        generator=torch.Generator().manual_seed(5),
        num_inference_steps=3,
        output_type="np",
        autocast_dtype=torch.bfloat16,
    ).images
    assert_shows([sample.astype(np.uint8) for sample in bf16], expected)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 2, 0), "Inference steps must be a whole number from 1 to 1000"),
        ((0, 2, 1001), "Inference steps must be a whole number from 1 to 1000"),
        ((0, 2, 2.5), "Inference steps must be a whole number"),
        ((0, 0, 2), "Number of images must be a whole number from 1 to 16"),
        ((0, 17, 2), "Number of images must be a whole number from 1 to 16"),
        ((-1, 2, 2), "Seed must be a whole number from 0 to"),
    ],
)
def test_generate_rejects_out_of_range_numbers(space, arguments, message):
    with pytest.raises(Exception, match=message):
        space.client.predict(*arguments, "sigma² = beta", api_name="/generate")
    samples, _ = generate(space, seed=0, num_images=1, steps=1)
    assert len(samples) == 1


def test_generate_rejects_an_unknown_variance(space):
    with pytest.raises(Exception, match="not in the list of choices"):
        space.client.predict(0, 1, 1, "fixed_medium", api_name="/generate")


# ------------------------------------------------------------------------------------------------ forward process


def forward(space: Space, path: str, t: int, noise_seed: int = 0) -> tuple[np.ndarray, Image.Image, str]:
    noisy, curve, summary = space.client.predict(handle_file(path), t, noise_seed, api_name="/forward_diffusion")
    return np.asarray(Image.open(noisy), dtype=float), Image.open(curve), summary


def test_forward_process_at_t0_is_the_image(space):
    path = example_path(space.app)
    noisy, curve, summary = forward(space, path, 0)
    original = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    difference = np.abs(noisy - original)
    assert difference.mean() < 2.0 and difference.max() <= 8  # noise std sqrt(beta_1) = 0.01 = 1.3 levels
    assert "t = 0" in summary and curve.width > 200


def test_forward_process_at_the_last_step_is_almost_pure_noise(space):
    path = example_path(space.app)
    noisy, _, summary = forward(space, path, LAST_T)
    original = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert abs(np.corrcoef(noisy.ravel(), original.ravel())[0, 1]) < 0.05
    scaled = noisy / 127.5 - 1.0  # N(0, 1) clipped to [-1, 1]: mean 0, std 0.718, 31.7% at the bounds
    assert abs(scaled.mean()) < 0.05
    assert 0.68 < scaled.std() < 0.76
    assert 0.28 < np.mean(np.abs(scaled) >= 0.999) < 0.36
    assert f"t = {LAST_T}" in summary


def test_forward_process_is_seeded_and_depends_on_t(space):
    path = example_path(space.app)
    first, _, _ = forward(space, path, 300, noise_seed=5)
    again, _, _ = forward(space, path, 300, noise_seed=5)
    later, _, _ = forward(space, path, 600, noise_seed=5)
    assert np.array_equal(first, again) and not np.array_equal(first, later)


@pytest.mark.parametrize("t", [-1, TINY_NUM_TRAIN_TIMESTEPS, 10.5])
def test_forward_process_rejects_out_of_range_t(space, t):
    with pytest.raises(Exception, match=f"t must be a whole number from 0 to {LAST_T}"):
        space.client.predict(handle_file(example_path(space.app)), t, 0, api_name="/forward_diffusion")
    still_answers(space)


def test_forward_process_rejects_a_corrupt_upload(space):
    path = space.images / "corrupt.webp"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 garbage")
    with pytest.raises(Exception, match="not an image or it is corrupt"):
        space.client.predict(handle_file(str(path)), 10, 0, api_name="/forward_diffusion")
    still_answers(space)


# ------------------------------------------------------------------------------------------------ in-process


def test_queue_bounds_concurrency_and_waiting_jobs(space):
    demo = space.demo
    assert demo._queue.max_size == space.app.QUEUE_MAX_SIZE
    assert demo._queue.default_concurrency_limit == space.app.INFERENCE_CONCURRENCY
    model_events = [fn for fn in demo.fns.values() if fn.api_name in {*(r[1:] for r in SPACE_ROUTES), "run"}]
    model_events += [fn for fn in demo.fns.values() if fn.fn.__name__ == "segment_these"]
    assert len(model_events) == 8  # the six routes, the t slider's release and "Segment these"
    for fn in model_events:  # one shared pool of workers for every event that runs a model
        assert (fn.concurrency_id, fn.concurrency_limit) == ("inference", space.app.INFERENCE_CONCURRENCY)


@pytest.mark.parametrize(
    "array",
    [
        np.full((5, 6), 200, dtype=np.uint8),
        np.full((5, 6, 1), 200, dtype=np.uint8),
        np.dstack([np.full((5, 6, 3), 200, dtype=np.uint8), np.full((5, 6), 255, dtype=np.uint8)]),
        np.full((5, 6), 51400, dtype=np.uint16),
        np.full((5, 6, 3), 200 / 255, dtype=np.float32),
        np.ones((5, 6), dtype=bool),
    ],
    ids=["grey", "grey1", "rgba", "uint16", "float", "bool"],
)
def test_numpy_arrays_become_rgb(array):
    inputs = load_space_module("image_inputs")
    rgb = inputs.to_rgb(array)
    assert rgb.mode == "RGB" and rgb.size == (6, 5)
    expected = 255 if array.dtype == bool else 200
    assert np.all(np.asarray(rgb) == expected)


def test_sixteen_bit_images_are_scaled_not_clipped():
    inputs = load_space_module("image_inputs")
    ramp = Image.fromarray(np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16))
    assert np.asarray(inputs.to_rgb(ramp))[0, :, 0].tolist() == [0, 64, 128, 255]


def test_transparent_pixels_become_white():
    inputs = load_space_module("image_inputs")
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    assert np.asarray(inputs.to_rgb(rgba)).tolist() == [[[255, 255, 255], [10, 20, 30]]]


def test_bad_arrays_and_missing_images_raise_gradio_errors():
    inputs = load_space_module("image_inputs")
    with pytest.raises(gr.Error, match="Expected an image array"):
        inputs.to_rgb(np.zeros((2, 3, 5), dtype=np.uint8))
    with pytest.raises(gr.Error, match="Upload an image first"):
        inputs.to_rgb(None)


def test_missing_models_tell_the_user_to_run_make_demo_models(tmp_path, monkeypatch, capsys):
    app = load_app_module()
    missing = tmp_path / "no-such-model"
    with pytest.raises(app.ModelLoadError, match="make demo-models"):
        app.build_demo(swin_fpn_model=missing, ddpm_model=missing)
    monkeypatch.setenv("SWIN_FPN_MODEL", str(missing))
    assert app.main() == 1
    error = capsys.readouterr().err
    assert "make demo-models" in error and str(missing) in error and "SWIN_FPN_MODEL" in error


def test_a_folder_without_a_pipeline_is_reported(tmp_path):
    app = load_app_module()
    with pytest.raises(app.ModelLoadError, match="no model_index.json.*make demo-models"):
        app.load_ddpm(str(tmp_path))


def test_generate_reports_progress_on_every_denoising_step(space):
    pipeline = space.app.load_ddpm(str(space.ddpm_folder))
    reported = []

    def progress(fraction, desc=None, unit="steps"):
        reported.append((fraction, desc))

    gallery, _ = space.app.generate(pipeline, 0, 1, 3, "beta-tilde", progress=progress)
    assert len(gallery) == 1
    assert reported == [((1, 3), "Denoising"), ((2, 3), "Denoising"), ((3, 3), "Denoising")]


def test_model_locations_come_from_the_argument_then_the_environment_then_the_default(monkeypatch):
    app = load_app_module()
    monkeypatch.delenv("DDPM_MODEL", raising=False)
    assert app.model_location(None, "DDPM_MODEL", app.DEFAULT_DDPM_MODEL) == str(app.DEFAULT_DDPM_MODEL)
    demo_models = Path(app.__file__).resolve().parents[1] / "demo_models"
    assert app.DEFAULT_DDPM_MODEL == demo_models / "ddpm-mnist"
    assert app.DEFAULT_SWIN_FPN_MODEL == demo_models / "swin-fpn-digit-scenes"
    monkeypatch.setenv("DDPM_MODEL", "someone/ddpm-digits")
    assert app.model_location(None, "DDPM_MODEL", app.DEFAULT_DDPM_MODEL) == "someone/ddpm-digits"
    assert app.model_location("/models/mine", "DDPM_MODEL", app.DEFAULT_DDPM_MODEL) == "/models/mine"
    assert app.looks_like_hub_repo_id("someone/ddpm-digits") and not app.looks_like_hub_repo_id("/no/such/folder")


def test_interpolate_route_serves_the_pipelines_interpolation(space):
    endpoints = space.client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in endpoints["/interpolate"]["parameters"]][:4] == ["a", "b", "t", "points"]
    first, second = example_path(space.app, 0), example_path(space.app, 1)
    gallery, strip = space.client.predict(
        handle_file(first), handle_file(second), 500, 3, 2, 4, True, api_name="/interpolate"
    )
    served = [np.asarray(Image.open(item["image"])) for item in gallery]
    assert [item["caption"] for item in gallery] == ["lambda = 0.00", "lambda = 0.50", "lambda = 1.00"]

    pipeline = DDPMPaperPipeline.from_pretrained(space.ddpm_folder)
    expected = pipeline.interpolate(
        Image.open(first).convert("RGB"),
        Image.open(second).convert("RGB"),
        t=500,
        num_points=3,
        generator=torch.Generator().manual_seed(2),
        num_inference_steps=4,
        output_type="np",
    ).images
    for shown, image in zip(served, expected, strict=True):
        factor = shown.shape[0] // image.shape[0]  # 16x16 samples shown upscaled (nearest) to 96x96
        assert factor == 6 and shown.shape == (96, 96, 3)
        np.testing.assert_array_equal(shown[::factor, ::factor, 0], (image[..., 0] * 255).round().astype(np.uint8))
    assert Image.open(strip).size == (3 * 96, 96)
    with pytest.raises(Exception, match="t must be a whole number from 0 to 999"):
        space.client.predict(handle_file(first), handle_file(second), 1000, 3, 2, 4, True, api_name="/interpolate")


# ------------------------------------------------------------------------------------------------ drawings


def drawing_strokes(ink: tuple[int, int, int], size: int = 384) -> Image.Image:
    """Two strokes of `ink` on a transparent canvas, as the sketchpad's layer (or composite without background)."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pixels = np.asarray(layer).copy()
    pixels[size // 4 : 3 * size // 4, size // 4 : size // 4 + 16] = (*ink, 255)  # a "1"
    pixels[size // 4 : size // 4 + 16, size // 2 : 3 * size // 4] = (*ink, 255)  # the bar of a "7"
    return Image.fromarray(pixels)


def expected_drawing_classes(space: Space, drawing: Image.Image) -> np.ndarray:
    """The model's argmax for a drawing reduced (area average) to the 64x64 training size, upsampled to the drawing."""
    model = SwinFPNForSegmentation.from_pretrained(space.swin_fpn_folder).eval()
    processor = SwinFPNImageProcessor.from_pretrained(space.swin_fpn_folder)
    small = drawing.resize((64, 64), Image.Resampling.BOX)
    with torch.no_grad():
        logits = model(pixel_values=processor(images=small, return_tensors="pt")["pixel_values"]).logits
    upsampled = F.interpolate(logits, size=(drawing.height, drawing.width), mode="bilinear", align_corners=False)
    return upsampled.argmax(dim=1)[0].numpy()


@pytest.mark.parametrize(("ink", "ground"), [((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255))])
def test_segment_drawing_puts_transparent_drawings_on_the_opposite_ground(space, ink, ground):
    strokes = drawing_strokes(ink)
    composite = save_input(space, strokes, f"composite_{ink[0]}.png")
    value = {"background": None, "layers": [handle_file(composite)], "composite": handle_file(composite)}
    overlay, mask, legend = space.client.predict(value, api_name="/segment_drawing")
    overlay, classes = np.asarray(Image.open(overlay)), np.asarray(Image.open(mask))
    on_ground = Image.alpha_composite(Image.new("RGBA", strokes.size, (*ground, 255)), strokes).convert("RGB")
    assert np.array_equal(classes, expected_drawing_classes(space, on_ground))
    background = classes == 0
    assert np.array_equal(overlay[background], np.asarray(on_ground)[background])  # the drawing, on its ground
    assert abs(sum(row[3] for row in legend["data"]) - 100.0) < 0.05


def test_drawing_image_composites_what_the_sketchpad_sends():
    tab = load_space_module("tab_segment")
    white = drawing_strokes((255, 255, 255), size=32)
    black = drawing_strokes((0, 0, 0), size=32)
    painted = np.asarray(white)[:, :, 3] > 0
    # strokes only (no composite): light ink goes on black, dark ink on white
    on_black = np.asarray(tab.drawing_image({"background": None, "layers": [white], "composite": None}))
    assert (on_black[painted] == 255).all() and (on_black[~painted] == 0).all()
    on_white = np.asarray(tab.drawing_image({"background": None, "layers": [black], "composite": None}))
    assert (on_white[painted] == 0).all() and (on_white[~painted] == 255).all()
    # the opaque canvas of the tab (white ground, black ink): background and strokes as drawn
    blank = tab.blank_drawing(tab.BLACK_ON_WHITE)
    assert blank["background"].size == (tab.DRAWING_SIDE, tab.DRAWING_SIDE)
    ground = Image.new("RGBA", (32, 32), (255, 255, 255, 255))
    drawn = np.asarray(tab.drawing_image({"background": ground, "layers": [black], "composite": None}))
    assert np.array_equal(drawn, on_white)
    composite = Image.alpha_composite(Image.new("RGBA", (32, 32), (40, 40, 40, 255)), white)
    as_sent = tab.drawing_image({"background": None, "layers": [], "composite": composite})
    assert np.array_equal(np.asarray(as_sent), np.asarray(composite.convert("RGB")))  # an opaque composite as it is
    for empty in (None, {"background": None, "layers": [], "composite": None}, blank):
        with pytest.raises(gr.Error, match="Draw one or more digits"):
            tab.drawing_image(empty)


def test_the_segmenters_legend_names_the_digit_classes(tmp_path):
    app = load_app_module()
    segmenter = app.load_segmenter(str(save_tiny_segmenter(tmp_path / "digits", DIGIT_SCENES_ID2LABEL)))
    _, _, legend = load_space_module("tab_segment").segment_drawing(
        segmenter, {"background": None, "layers": [drawing_strokes((0, 0, 0), size=96)], "composite": None}
    )
    assert [row[1] for row in legend] == ["background", *"0123456789"]


# ------------------------------------------------------------------------------------------------ segment these


def test_samples_canvas_lays_the_samples_out_at_the_segmenters_scale():
    tab = load_space_module("tab_generate")
    rng = np.random.default_rng(0)
    samples = [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(16)]
    for sample in samples:
        sample.paste(0, (0, 0, 28, 2))  # black borders: the ground
        sample.paste(0, (0, 26, 28, 28))
        sample.paste(0, (0, 0, 2, 28))
        sample.paste(0, (26, 0, 28, 28))
    sizes = {count: tab.samples_canvas(samples[:count]).size for count in (1, 2, 3, 4, 6, 8, 9, 12, 16)}
    assert sizes == {
        1: (96, 96),
        2: (96, 96),
        3: (96, 96),
        4: (96, 96),
        6: (108, 96),
        8: (144, 96),
        9: (108, 108),
        12: (144, 108),
        16: (144, 144),
    }
    canvas = np.asarray(tab.samples_canvas(samples[:8]))  # 4 x 2 cells of 36: 144 x 72, centred on 144 x 96
    cell, top = tab.CANVAS_CELL_SIDE, 12
    assert (canvas[:top] == 0).all() and (canvas[top + 2 * cell :] == 0).all()
    for index, sample in enumerate(samples[:8]):
        row, column = divmod(index, 4)
        expected = np.asarray(sample.convert("RGB").resize((cell, cell), Image.Resampling.BOX))
        shown = canvas[top + row * cell : top + (row + 1) * cell, column * cell : (column + 1) * cell]
        assert np.array_equal(shown, expected)
    single = np.asarray(tab.samples_canvas(samples[:1]))
    assert (single[:30] == 0).all() and (single[66:] == 0).all()  # centred on the black ground
    with pytest.raises(gr.Error, match="Generate some samples first"):
        tab.samples_canvas([])


def test_segment_these_segments_the_generated_samples_on_one_canvas(space):
    gallery, _ = space.client.predict(4, 8, 2, "sigma² = beta", api_name="/generate")
    samples = [(item["image"], item["caption"]) for item in gallery]  # the gallery's value, as the page sends it
    (segment_these,) = [fn.fn for fn in space.demo.fns.values() if fn.fn.__name__ == "segment_these"]
    tabs, sources, canvas, overlay, mask, legend = segment_these(samples)
    assert tabs.selected == "segment" and sources.selected == "segment-upload"
    expected_canvas = load_space_module("tab_generate").samples_canvas([Image.open(path) for path, _ in samples])
    assert canvas.size == (144, 96) and np.array_equal(np.asarray(canvas), np.asarray(expected_canvas))
    segmenter = space.app.load_segmenter(str(space.swin_fpn_folder))
    expected_overlay, expected_mask, expected_legend = load_space_module("tab_segment").segment(segmenter, canvas)
    assert np.array_equal(np.asarray(mask), np.asarray(expected_mask))
    assert np.array_equal(np.asarray(overlay), np.asarray(expected_overlay)) and legend == expected_legend
    with pytest.raises(gr.Error, match="Generate some samples first"):
        segment_these(None)
