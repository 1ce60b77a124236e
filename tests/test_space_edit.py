"""The Space's Edit tab (`/edit`): inpainting (RePaint) and image-to-image (SDEdit) with the DDPM, served in-process
and called with gradio_client; the results must be the pipeline's own for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image
from space_app_support import load_space_module, save_tiny_ddpm, save_tiny_segmenter, served_app

from hf_swin_ddpm import DDPMPaperPipeline

SIDE = 16  # the tiny DDPM's resolution


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("space_edit")
    ddpm_folder = save_tiny_ddpm(root / "ddpm")
    with served_app(save_tiny_segmenter(root / "swin-fpn"), ddpm_folder) as (_, url):
        pipeline = DDPMPaperPipeline.from_pretrained(ddpm_folder)
        pipeline.set_progress_bar_config(disable=True)
        yield Client(url, verbose=False), pipeline, root


def digit_and_mask(root):
    """A light-on-dark 'digit' and a layer with red paint over its lower half."""
    digit = np.zeros((SIDE, SIDE), dtype=np.uint8)
    digit[3:13, 6:10] = 255
    Image.fromarray(digit).convert("RGBA").save(root / "digit.png")
    paint = np.zeros((SIDE, SIDE, 4), dtype=np.uint8)
    paint[SIDE // 2 :] = (255, 45, 85, 255)
    Image.fromarray(paint).save(root / "paint.png")
    editor = {"background": handle_file(root / "digit.png"), "layers": [handle_file(root / "paint.png")]}
    return digit, editor


def read_gray(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def test_inpaint_route_is_the_pipeline_inpainting_the_painted_region(space):
    client, pipeline, root = space
    digit, editor = digit_and_mask(root)
    seen, result, strip = client.predict(editor, "Inpaint (RePaint)", 0.5, 6, 3, api_name="/edit")

    keep = np.full((SIDE, SIDE), 255, dtype=np.uint8)
    keep[SIDE // 2 :] = 0
    expected = pipeline.inpaint(
        Image.fromarray(digit),
        Image.fromarray(keep),
        num_inference_steps=6,
        jump_length=5,
        jump_n_sample=3,
        generator=torch.Generator().manual_seed(3),
        output_type="pil",
    ).images[0]
    factor = 128 // SIDE  # the Space shows images upscaled by a whole factor, nearest neighbour
    assert np.array_equal(read_gray(result)[::factor, ::factor], np.asarray(expected))
    assert np.array_equal(read_gray(seen)[::factor, ::factor], digit)
    assert np.array_equal(read_gray(result)[::factor, ::factor][: SIDE // 2], digit[: SIDE // 2])  # kept half
    assert Image.open(strip).width > Image.open(strip).height  # frames side by side


def test_img2img_route_is_the_pipeline_sdedit(space):
    client, pipeline, root = space
    digit, editor = digit_and_mask(root)
    _, result, _ = client.predict(editor, "Image-to-image (SDEdit)", 0.4, 10, 7, api_name="/edit")
    expected = pipeline.img2img(
        Image.fromarray(digit),
        strength=0.4,
        num_inference_steps=10,
        generator=torch.Generator().manual_seed(7),
        output_type="pil",
    ).images[0]
    assert np.array_equal(read_gray(result)[:: 128 // SIDE, :: 128 // SIDE], np.asarray(expected))


@pytest.mark.parametrize(
    "mode, strength, steps, match",
    [
        ("Inpaint (RePaint)", 0.5, 0, "Inference steps must be a whole number from 1 to 250"),
        ("Image-to-image (SDEdit)", 1.5, 5, "Strength must be a number from 0 to 1"),
        ("Blend", 0.5, 5, "'Blend' .* is not in the list of choices"),
    ],
)
def test_bad_settings_are_named_and_the_space_keeps_serving(space, mode, strength, steps, match):
    client, _, root = space
    _, editor = digit_and_mask(root)
    with pytest.raises(Exception, match=match):
        client.predict(editor, mode, strength, steps, 0, api_name="/edit")
    assert client.predict(editor, "Image-to-image (SDEdit)", 0.2, 5, 0, api_name="/edit")[1]


def test_inpaint_without_a_painted_region_asks_for_one(space):
    client, _, root = space
    digit_and_mask(root)
    editor = {"background": handle_file(root / "digit.png"), "layers": []}
    with pytest.raises(Exception, match="Paint over the region to regenerate"):
        client.predict(editor, "Inpaint (RePaint)", 0.5, 5, 0, api_name="/edit")


@pytest.mark.parametrize("ink", [(0, 0, 0, 255), (255, 255, 255, 255), (255, 45, 85, 255)])
def test_a_drawing_on_a_blank_canvas_becomes_light_strokes_on_dark(ink):
    tab_edit = load_space_module("tab_edit")
    drawing = np.zeros((SIDE, SIDE, 4), dtype=np.uint8)
    drawing[4:12, 7:9] = ink  # strokes of any colour, the rest transparent
    strokes = np.zeros((SIDE, SIDE, 4), dtype=np.uint8)
    strokes[:4] = (255, 45, 85, 255)
    value = {"background": None, "layers": [Image.fromarray(drawing), Image.fromarray(strokes)]}
    image, regenerate = tab_edit.split_editor_value(value)
    assert regenerate[:4].all() and not regenerate[4:].any()
    gray = np.asarray(image.convert("L"))
    assert gray[4:12, 7:9].min() == 255 and np.delete(gray, np.s_[7:9], axis=1).max() == 0


def test_an_upload_of_dark_strokes_on_light_is_inverted(space):
    _, pipeline, _ = space
    tab_edit = load_space_module("tab_edit")
    upload = np.full((SIDE * 2, SIDE * 2, 3), 255, dtype=np.uint8)
    upload[8:24, 14:18] = 0
    seen = np.asarray(tab_edit.model_image(Image.fromarray(upload), pipeline))
    assert seen.shape == (SIDE, SIDE) and seen[5:11, 7:9].min() > 200 and seen[:3].max() == 0
