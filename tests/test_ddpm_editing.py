"""Editing with the unconditional DDPM: RePaint inpainting and SDEdit image-to-image (`DDPMPaperPipeline.inpaint`,
`.img2img`), checked against diffusers' RePaint schedule, a hand-run diffusers `DDPMScheduler` chain, and the closed
form of q(x_t | x_0)."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler, RePaintScheduler

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet
from hf_swin_ddpm.diffusion.pipeline_ddpm_paper import repaint_schedule

SIZE = 16


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    pipe = DDPMPaperPipeline(unet=paper_unet("tiny", sample_size=SIZE), scheduler=DDPMPaperScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def top_half_mask() -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[: SIZE // 2] = 1
    return mask


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(50, 5, 3), (250, 10, 10), (20, 10, 1), (7, 3, 2)])
def test_repaint_schedule_is_diffusers_repaint_schedule(steps, jump_length, jump_n_sample):
    reference = RePaintScheduler(num_train_timesteps=1000)
    reference.set_timesteps(steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
    stride = 1000 // steps
    ours = repaint_schedule(steps, jump_length, jump_n_sample)
    assert ours[-1] == -1 and ours[0] == steps - 1
    assert [index * stride for index in ours[:-1]] == reference.timesteps.tolist()


def test_inpaint_with_everything_kept_returns_the_input(pipe):
    x = images()
    pil = pipe.numpy_to_pil(x.permute(0, 2, 3, 1).numpy())
    out = pipe.inpaint(pil, torch.ones(SIZE, SIZE), num_inference_steps=10, jump_length=3, jump_n_sample=2)
    for original, result in zip(pil, out.images):
        assert np.array_equal(np.asarray(original), np.asarray(result))


def test_inpaint_known_region_of_every_step_is_a_draw_of_q_xt_given_x0(pipe):
    """(x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t) over the kept pixels must be standard normal at every step (Eq. 4);
    the regenerated pixels are not tied to x_0."""
    x = images(batch=4)
    out = pipe.inpaint(
        x,
        top_half_mask(),
        num_inference_steps=20,
        jump_length=5,
        jump_n_sample=2,
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
        return_trajectory=True,
    )
    x0 = x * 2 - 1
    abar = pipe.scheduler.alphas_cumprod.double()
    assert len(out.trajectory_timesteps) == len(repaint_schedule(20, 5, 2)) - 1 - 5 * 3  # reverse steps only
    for t, x_t in zip(out.trajectory_timesteps[1:], out.trajectory_samples[1:]):  # the first frame is x_T ~ N(0, I)
        eps = (x_t.double() - abar[t].sqrt() * x0) / (1 - abar[t]).sqrt()
        known = eps[:, :, : SIZE // 2]
        # 512 values per frame: the mean of N(0, 1) draws has standard error 0.044, their std 0.031
        assert abs(known.mean()) < 0.2 and 0.85 < known.std() < 1.15, t
    # the kept pixels of the result are the input's; the chain ends with the known region at x_0 exactly
    torch.testing.assert_close(out.images[:, :, : SIZE // 2], x[:, :, : SIZE // 2], rtol=0, atol=1e-6)


def test_inpaint_with_nothing_kept_is_a_valid_sample(pipe):
    x = images()
    out = pipe.inpaint(
        x,
        np.zeros((SIZE, SIZE), dtype=bool),
        num_inference_steps=10,
        jump_length=3,
        jump_n_sample=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    assert out.images.shape == (2, SIZE, SIZE, 1) and np.isfinite(out.images).all()
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert np.abs(out.images - x.permute(0, 2, 3, 1).numpy()).mean() > 0.1


def test_img2img_strength_zero_returns_the_input(pipe):
    x = images()
    out = pipe.img2img(x, strength=0.0, num_inference_steps=20, output_type="pt")
    assert pipe.num_timesteps == 0
    torch.testing.assert_close(out.images, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("strength, steps", [(0.3, 20), (0.55, 50), (1.0, 10)])
def test_img2img_is_algorithm_2_from_t0_after_q_xt0_given_x0(pipe, strength, steps):
    """SDEdit: x_{t0} = sqrt(abar) x_0 + sqrt(1 - abar) eps (Eq. 4) at t0 = strength * T, then diffusers' DDPMScheduler
    (sigma^2 = beta, no clipping) by hand down a chain of round(strength * steps) steps."""
    x = images()
    out = pipe.img2img(
        x, strength=strength, num_inference_steps=steps, generator=torch.Generator().manual_seed(5), output_type="pt"
    )
    num_steps = round(strength * steps)
    first = round(strength * 1000) - 1
    assert pipe.num_timesteps == num_steps and int(pipe.scheduler.timesteps[0]) == first

    reference = DDPMScheduler(variance_type="fixed_large", clip_sample=False)
    chain = np.linspace(first, 0, num_steps).round().astype(int).tolist()
    reference.set_timesteps(timesteps=chain)
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(x.shape, generator=generator)
    abar = reference.alphas_cumprod[first]
    sample = abar.sqrt() * (x * 2 - 1) + (1 - abar).sqrt() * noise
    with torch.no_grad():
        for t in reference.timesteps:
            sample = reference.step(pipe.unet(sample, t).sample, t, sample, generator=generator).prev_sample
    # measured: at most 1.5e-5 apart (the paper's float64 betas against diffusers' float32 ones, as in the 1000-step
    # parity test of the pipeline); starting one timestep off (t0 = strength * T, 0-based) fails it
    torch.testing.assert_close(out.images, (sample / 2 + 0.5).clamp(0, 1), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "method, kwargs, match",
    [
        ("inpaint", dict(mask=torch.ones(SIZE - 1, SIZE)), "`mask` has shape"),
        ("inpaint", dict(mask=torch.full((SIZE, SIZE), 0.5)), "`mask` must be boolean-like"),
        ("inpaint", dict(mask=torch.ones(3, SIZE, SIZE)), "`mask` must be single-channel"),
        ("inpaint", dict(mask=PIL.Image.new("L", (SIZE + 2, SIZE))), "`mask` is 18x16 but the image is 16x16"),
        ("inpaint", dict(mask=torch.ones(SIZE, SIZE), jump_length=0), "`jump_length` must be a positive integer"),
        ("img2img", dict(strength=1.5), r"`strength` must be a number in \[0, 1\]"),
        ("img2img", dict(strength=-0.1), r"`strength` must be a number in \[0, 1\]"),
    ],
)
def test_bad_editing_arguments_name_the_argument(pipe, method, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(pipe, method)(images(), num_inference_steps=5, **kwargs)


def test_image_of_another_channel_count_names_the_image(pipe):
    rgb = torch.rand(3, SIZE, SIZE)
    with pytest.raises(ValueError, match="`image`: image tensors must be"):
        pipe.img2img(rgb, strength=0.5, num_inference_steps=5)
    with pytest.raises(ValueError, match="`image`: image tensors must be"):
        pipe.inpaint(rgb, torch.ones(SIZE, SIZE), num_inference_steps=5)
