"""Property-based tests (hypothesis): the scheduler for any valid step count and timestep, the model for any input size."""

from __future__ import annotations

import numpy as np
import torch
from factories import TINY_SWIN_FPN
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_swin_ddpm import DDPMPaperScheduler, SwinFPNConfig, SwinFPNForSegmentation

SPACINGS = ("linspace", "leading", "trailing")
VARIANCES = ("fixed_large", "fixed_small")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
MAX_TRAIN_TIMESTEPS = 1000
MAX_SIDE = 70


@st.composite
def schedulers_and_step_counts(draw) -> tuple[DDPMPaperScheduler, int]:
    """A scheduler with T in [1, 1000] and any spacing/variance/prediction, and a step count n in [1, T]."""
    num_train_timesteps = draw(st.integers(1, MAX_TRAIN_TIMESTEPS))
    scheduler = DDPMPaperScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=draw(st.sampled_from(("linear", "scaled_linear", "squaredcos_cap_v2"))),
        timestep_spacing=draw(st.sampled_from(SPACINGS)),
        variance_type=draw(st.sampled_from(VARIANCES)),
        prediction_type=draw(st.sampled_from(PREDICTIONS)),
        clip_sample=draw(st.booleans()),
    )
    return scheduler, draw(st.integers(1, num_train_timesteps))


def sample_shapes() -> st.SearchStrategy[tuple[int, ...]]:
    return st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))


@settings(max_examples=150, deadline=None)
@given(schedulers_and_step_counts())
def test_respaced_chain_is_strictly_decreasing_within_range_and_ends_at_the_last_step(scheduler_and_steps):
    scheduler, num_steps = scheduler_and_steps
    num_train_timesteps = scheduler.config.num_train_timesteps
    scheduler.set_timesteps(num_steps)
    chain = scheduler.timesteps.numpy()
    assert len(chain) == num_steps
    assert np.all(np.diff(chain) < 0)
    assert 0 <= chain[-1] and chain[0] <= num_train_timesteps - 1
    spacing = scheduler.config.timestep_spacing
    if spacing == "leading" or (spacing == "linspace" and num_steps > 1):  # one linspace step starts at T - 1
        assert chain[-1] == 0  # trailing (diffusers' definition) ends at round(T / n) - 1
    if spacing != "leading":  # leading starts at (n - 1) * (T // n)
        assert chain[0] == num_train_timesteps - 1
    if num_steps == num_train_timesteps:
        assert chain.tolist() == list(range(num_train_timesteps - 1, -1, -1))
    assert scheduler.previous_timestep(int(chain[-1])) == -1


@settings(max_examples=150, deadline=None)
@given(schedulers_and_step_counts(), st.data(), sample_shapes(), st.sampled_from((torch.float32, torch.float64)))
def test_any_step_of_any_chain_is_finite_and_keeps_the_shape(scheduler_and_steps, data, shape, dtype):
    scheduler, num_steps = scheduler_and_steps
    scheduler.set_timesteps(num_steps)
    index = data.draw(st.integers(0, num_steps - 1), label="step index")
    timestep = scheduler.timesteps[index]
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    sample = torch.randn(shape, generator=generator, dtype=dtype)
    model_output = torch.randn(shape, generator=generator, dtype=dtype)

    output = scheduler.step(model_output, timestep, sample, generator=generator)

    for tensor in (output.prev_sample, output.pred_original_sample):
        assert tensor.shape == shape and tensor.dtype == dtype and torch.isfinite(tensor).all()
    if scheduler.config.clip_sample:
        assert output.pred_original_sample.abs().max() <= scheduler.config.clip_sample_range
    if index == num_steps - 1:  # Algorithm 2: no noise at the last step, whatever the generator
        again = scheduler.step(model_output, timestep, sample, generator=torch.Generator().manual_seed(1))
        assert torch.equal(again.prev_sample, output.prev_sample)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, MAX_TRAIN_TIMESTEPS), st.data(), sample_shapes())
def test_add_noise_at_any_timestep_is_eq_4(num_train_timesteps, data, shape):
    scheduler = DDPMPaperScheduler(num_train_timesteps=num_train_timesteps)
    timesteps = torch.tensor(
        data.draw(st.lists(st.integers(0, num_train_timesteps - 1), min_size=shape[0], max_size=shape[0]))
    )
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    x0 = torch.randn(shape, generator=generator, dtype=torch.float64)
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)

    noisy = scheduler.add_noise(x0, noise, timesteps)

    alpha_bar = scheduler.alphas_cumprod[timesteps].reshape(-1, 1, 1, 1)
    assert noisy.shape == shape and torch.isfinite(noisy).all()
    torch.testing.assert_close(noisy, alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise, rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2), st.integers(1, MAX_SIDE), st.integers(1, MAX_SIDE), st.integers(0, 2**31 - 1))
def test_logits_have_the_input_size_and_are_finite_for_any_size(tiny_swin_fpn, batch, height, width, seed):
    pixel_values = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = tiny_swin_fpn(pixel_values=pixel_values).logits
    assert logits.shape == (batch, 3, height, width)
    assert torch.isfinite(logits).all()


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from((1, 2, 4)),
    st.integers(1, 7),
    st.integers(1, 40),
    st.integers(1, 40),
)
def test_any_patch_and_window_size_gives_logits_at_the_input_size(one_thread, patch_size, window_size, height, width):
    torch.manual_seed(0)
    config = SwinFPNConfig(**{**TINY_SWIN_FPN, "patch_size": patch_size, "window_size": window_size})
    model = SwinFPNForSegmentation(config).eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(1, 3, height, width)).logits
    assert logits.shape == (1, 3, height, width) and torch.isfinite(logits).all()
