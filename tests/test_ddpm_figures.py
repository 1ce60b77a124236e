"""DDPMPaperPipeline.interpolate (Fig. 8) and shared_latent_samples (Fig. 7), and the Space's Interpolate tab."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler
from hf_swin_ddpm.diffusion import paper_unet

pytestmark = pytest.mark.usefixtures("one_thread")
T = 50


@pytest.fixture(scope="module")
def pipe() -> DDPMPaperPipeline:
    torch.manual_seed(0)
    unet = paper_unet(
        "tiny", sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), norm_num_groups=4
    ).eval()
    pipeline = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(num_train_timesteps=T))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)
    a[:, 1:7, 3:5] = 1.0  # a bar
    b[:, 2:6, 2:6] = 0.8  # a square
    return a, b


def reverse_decoding(pipe, image, t, seed, num_inference_steps=None):
    """The reverse-process decoding of one image from x_t, drawing the noise in interpolate's order."""
    generator = torch.Generator().manual_seed(seed)
    start = pipe._start_timestep(t, num_inference_steps)
    x0 = pipe.preprocess(image)
    noise = torch.randn(x0.shape, generator=generator)
    latent = pipe.encode(x0, start, noise)
    return pipe.decode(latent, start, pipe._reverse_generators(generator, 1, same=True))


@pytest.mark.parametrize("num_inference_steps", [None, 10])
def test_interpolation_end_points_are_the_reverse_process_decodings_of_each_image(pipe, num_inference_steps):
    a, b = digit_images()
    output = pipe.interpolate(
        a,
        b,
        t=30,
        num_points=5,
        generator=torch.Generator().manual_seed(7),
        output_type="pt",
        num_inference_steps=num_inference_steps,
    )
    assert output.images.shape == (5, 1, 8, 8)
    expected_a = pipe._postprocess(reverse_decoding(pipe, a, 30, 7, num_inference_steps), "pt")
    expected_b = pipe._postprocess(reverse_decoding(pipe, b, 30, 7, num_inference_steps), "pt")
    torch.testing.assert_close(output.images[0], expected_a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(output.images[-1], expected_b[0], atol=1e-5, rtol=0)
    # the middle points are neither end, and the latents are the linear mixes
    assert (output.images[2] - output.images[0]).abs().max() > 1e-3
    latents = output.trajectory_samples
    torch.testing.assert_close(latents[2], (latents[0] + latents[-1]) / 2, atol=1e-6, rtol=0)
    scheduler = DDPMPaperScheduler(num_train_timesteps=T)
    scheduler.set_timesteps(num_inference_steps or T)
    assert output.trajectory_timesteps == [max(int(s) for s in scheduler.timesteps if s <= 30)]


def test_own_noise_changes_only_the_far_latent_and_pil_images_are_accepted(pipe):
    a, b = digit_images()
    shared = pipe.interpolate(a, b, t=20, num_points=2, generator=torch.Generator().manual_seed(1), output_type="pt")
    own = pipe.interpolate(
        a, b, t=20, num_points=2, shared_noise=False, generator=torch.Generator().manual_seed(1), output_type="pt"
    )
    torch.testing.assert_close(shared.trajectory_samples[0], own.trajectory_samples[0])  # a's noise comes first
    assert (shared.trajectory_samples[1] - own.trajectory_samples[1]).abs().max() > 1e-2
    pil = pipe.interpolate(
        Image.fromarray((a[0].numpy() * 255).astype(np.uint8)),
        b,
        t=0,
        num_points=3,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    assert pil.images.shape == (3, 8, 8, 1)


def test_shared_latent_samples_decode_one_latent_per_t_with_independent_noise(pipe):
    a, _ = digit_images()
    output = pipe.shared_latent_samples(
        a, timesteps=[10, 40], num_samples=3, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert output.images.shape == (6, 1, 8, 8) and output.trajectory_timesteps == [10, 40]
    assert output.trajectory_samples.shape == (2, 1, 8, 8)
    row = output.images[:3]
    assert (row[0] - row[1]).abs().max() > 1e-3  # independent reverse noise
    # each row starts from its latent: decoding that latent with the row's generators gives the row
    generator = torch.Generator().manual_seed(0)
    pipe._start_timestep(10, None)
    torch.randn((1, 1, 8, 8), generator=generator)  # the first latent's noise
    generators = pipe._reverse_generators(generator, 3, same=False)
    latent = output.trajectory_samples[0].unsqueeze(0).expand(3, -1, -1, -1)
    torch.testing.assert_close(pipe._postprocess(pipe.decode(latent, 10, generators), "pt"), row, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t": T}, r"`t` must be an integer timestep in \[0, 49\]"),
        ({"num_points": 1}, "`num_points`"),
        ({"num_inference_steps": 0}, "`num_inference_steps`"),
        ({"generator": 3}, "torch.Generator"),
        ({"output_type": "jpg"}, "`output_type`"),
    ],
)
def test_interpolate_bad_arguments_raise(pipe, kwargs, match):
    a, b = digit_images()
    with pytest.raises(ValueError, match=match):
        pipe.interpolate(a, b, **{"t": 30, **kwargs})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.interpolate(a * 2, b, t=30)


# --- the Space's Interpolate tab -------------------------------------------------------------------------------


def test_space_interpolate_route_shows_the_pipeline_interpolation(pipe):
    import gradio as gr
    from space_app_support import load_space_module

    interpolate = load_space_module("tab_interpolate").interpolate

    a, b = digit_images()
    pil_a = Image.fromarray((a[0].numpy() * 255).round().astype(np.uint8))
    pil_b = Image.fromarray((b[0].numpy() * 255).round().astype(np.uint8))
    gallery, strip = interpolate(pipe, pil_a, pil_b, t=30, num_points=4, seed=5)
    expected = pipe.interpolate(
        pil_a, pil_b, t=30, num_points=4, generator=torch.Generator().manual_seed(5), output_type="np"
    ).images
    assert [caption for _, caption in gallery] == ["lambda = 0.00", "lambda = 0.33", "lambda = 0.67", "lambda = 1.00"]
    for (shown, _), image in zip(gallery, expected):
        factor = shown.width // 8
        small = np.asarray(shown)[::factor, ::factor, 0]  # nearest upscaling of the grayscale sample
        np.testing.assert_array_equal(small, (image[..., 0] * 255).round().astype(np.uint8))
    assert strip.size == (4 * gallery[0][0].width, gallery[0][0].height)
    with pytest.raises(gr.Error, match="Upload image B"):
        interpolate(pipe, pil_a, None, t=30)
    with pytest.raises(gr.Error, match="t must be a whole number from 0 to 49"):
        interpolate(pipe, pil_a, pil_b, t=50)
    with pytest.raises(gr.Error, match="Number of points"):
        interpolate(pipe, pil_a, pil_b, t=3, num_points=1.5)
