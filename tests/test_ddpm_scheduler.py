"""DDPMPaperScheduler: the paper's schedule, Eq. 4 and Algorithm 2 checked by hand in float64, diffusers interop."""

import inspect

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from hf_swin_ddpm import DDPMPaperScheduler

pytestmark = pytest.mark.usefixtures("one_thread")

T = 1000
SHAPE = (2, 3, 4, 4)


def paper_schedule() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    alphas = 1.0 - betas
    return betas, alphas, np.cumprod(alphas)


def float64_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    model_output = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    return sample, model_output


def test_schedule_is_the_papers_in_float64():
    scheduler = DDPMPaperScheduler()
    betas, alphas, alphas_cumprod = paper_schedule()
    assert scheduler.betas.dtype == scheduler.alphas_cumprod.dtype == torch.float64
    np.testing.assert_array_equal(scheduler.betas.numpy(), betas)
    np.testing.assert_array_equal(scheduler.alphas.numpy(), alphas)
    np.testing.assert_array_equal(scheduler.alphas_cumprod.numpy(), alphas_cumprod)
    assert len(scheduler) == T and scheduler.init_noise_sigma == 1.0
    assert scheduler.timesteps.tolist() == list(range(T - 1, -1, -1))
    config = scheduler.config
    assert (config.variance_type, config.clip_sample, config.prediction_type) == ("fixed_large", False, "epsilon")


@pytest.mark.parametrize("beta_schedule", ["scaled_linear", "squaredcos_cap_v2"])
def test_other_schedules_match_diffusers_in_float64(beta_schedule):
    ours = DDPMPaperScheduler(beta_schedule=beta_schedule).betas
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours.float(), DDPMScheduler(beta_schedule=beta_schedule).betas, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_add_noise_is_q_xt_given_x0_in_closed_form(dtype):
    scheduler = DDPMPaperScheduler()
    _, _, alphas_cumprod = paper_schedule()
    x0, noise = (tensor.to(dtype) for tensor in float64_inputs(1))
    timesteps = torch.tensor([0, 999])
    noisy = scheduler.add_noise(x0, noise, timesteps)

    abar = alphas_cumprod[timesteps.numpy()].reshape(-1, 1, 1, 1)
    expected = np.sqrt(abar) * x0.double().numpy() + np.sqrt(1.0 - abar) * noise.double().numpy()
    assert noisy.dtype == dtype
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(noisy.double().numpy(), expected, rtol=0, atol=tolerance)
    # one timestep for the whole batch, given as a plain int
    torch.testing.assert_close(
        scheduler.add_noise(x0, noise, 999), scheduler.add_noise(x0, noise, torch.tensor([999, 999]))
    )


@pytest.mark.parametrize("variance_type", ["fixed_large", "fixed_small"])
@pytest.mark.parametrize("t", [999, 500, 1])
def test_step_is_algorithm_2_by_hand(variance_type, t):
    scheduler = DDPMPaperScheduler(variance_type=variance_type)
    betas, alphas, alphas_cumprod = paper_schedule()
    sample, eps = float64_inputs(2)

    output = scheduler.step(eps, t, sample, generator=torch.Generator().manual_seed(7))
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    beta_tilde = (1.0 - alphas_cumprod[t - 1]) / (1.0 - alphas_cumprod[t]) * betas[t]
    sigma = np.sqrt(betas[t] if variance_type == "fixed_large" else beta_tilde)
    x, e = sample.numpy(), eps.numpy()
    expected = (x - betas[t] / np.sqrt(1.0 - alphas_cumprod[t]) * e) / np.sqrt(alphas[t]) + sigma * z
    expected_x0 = (x - np.sqrt(1.0 - alphas_cumprod[t]) * e) / np.sqrt(alphas_cumprod[t])  # Eq. 15

    assert output.prev_sample.dtype == torch.float64
    np.testing.assert_allclose(output.prev_sample.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(output.pred_original_sample.numpy(), expected_x0, rtol=1e-12, atol=1e-12)


def test_last_step_adds_no_noise_and_draws_nothing():
    scheduler = DDPMPaperScheduler()
    betas, alphas, alphas_cumprod = paper_schedule()
    sample, eps = float64_inputs(3)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    prev_sample, _ = scheduler.step(eps, 0, sample, generator=generator, return_dict=False)
    expected = (sample.numpy() - betas[0] / np.sqrt(1.0 - alphas_cumprod[0]) * eps.numpy()) / np.sqrt(alphas[0])
    np.testing.assert_allclose(prev_sample.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(generator.get_state(), state)


def test_trailing_spacing_still_ends_without_noise():
    """Unlike diffusers (which adds noise whenever t > 0), the last step of any chain is noiseless."""
    scheduler = DDPMPaperScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(50)
    last = int(scheduler.timesteps[-1])
    assert last == 19
    sample, eps = float64_inputs(4)
    first = scheduler.step(eps, last, sample, generator=torch.Generator().manual_seed(0)).prev_sample
    second = scheduler.step(eps, last, sample, generator=torch.Generator().manual_seed(1)).prev_sample
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_respacing_uses_effective_betas_from_cumulative_products():
    scheduler = DDPMPaperScheduler()
    scheduler.set_timesteps(50)
    expected_timesteps = np.linspace(0, T - 1, 50).round()[::-1].astype(np.int64)
    assert scheduler.timesteps.tolist() == expected_timesteps.tolist()
    assert scheduler.timesteps[0] == T - 1 and scheduler.timesteps[-1] == 0

    _, _, alphas_cumprod = paper_schedule()
    t, prev_t = int(scheduler.timesteps[10]), int(scheduler.timesteps[11])
    assert scheduler.previous_timestep(t) == prev_t
    beta = 1.0 - alphas_cumprod[t] / alphas_cumprod[prev_t]
    sample, eps = float64_inputs(5)
    output = scheduler.step(eps, t, sample, generator=torch.Generator().manual_seed(3))
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    expected = (sample.numpy() - beta / np.sqrt(1.0 - alphas_cumprod[t]) * eps.numpy()) / np.sqrt(1.0 - beta)
    np.testing.assert_allclose(output.prev_sample.numpy(), expected + np.sqrt(beta) * z, rtol=1e-12, atol=1e-12)


def test_custom_timesteps_and_single_step():
    scheduler = DDPMPaperScheduler()
    scheduler.set_timesteps(timesteps=[900, 400, 0])
    assert scheduler.timesteps.tolist() == [900, 400, 0] and scheduler.custom_timesteps
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [T - 1]
    # one step from t = T - 1 straight to x_0: the mean is the x_0 estimate itself (Eq. 7 with abar_prev = 1)
    sample, eps = float64_inputs(6)
    output = scheduler.step(eps, T - 1, sample)
    torch.testing.assert_close(output.prev_sample, output.pred_original_sample, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [999, 321, 0])
def test_step_draws_like_diffusers(t):
    ours = DDPMPaperScheduler()
    theirs = DDPMScheduler(variance_type="fixed_large", clip_sample=False)
    sample, eps = (tensor.float() for tensor in float64_inputs(8))
    expected = theirs.step(eps, t, sample, generator=torch.Generator().manual_seed(11))
    output = ours.step(eps, t, sample, generator=torch.Generator().manual_seed(11))
    # diffusers' effective beta 1 - abar_t / abar_{t-1} is computed in float32 (relative error up to 5e-4 at small t)
    torch.testing.assert_close(output.prev_sample, expected.prev_sample, rtol=0, atol=2e-5)
    torch.testing.assert_close(output.pred_original_sample, expected.pred_original_sample, rtol=1e-5, atol=1e-5)


def _eps_model_pair(t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x0, eps and the x_t they make at t (Eq. 4), in float64."""
    x0, eps = float64_inputs(9)
    x0 = x0.clamp(-1, 1)
    return x0, eps, DDPMPaperScheduler().add_noise(x0, eps, t)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_other_parameterisations_give_the_same_step(prediction_type):
    t = 400
    x0, eps, x_t = _eps_model_pair(t)
    reference = DDPMPaperScheduler().step(eps, t, x_t, generator=torch.Generator().manual_seed(0))
    scheduler = DDPMPaperScheduler(prediction_type=prediction_type)
    model_output = x0 if prediction_type == "sample" else scheduler.get_velocity(x0, eps, t)
    output = scheduler.step(model_output, t, x_t, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(output.prev_sample, reference.prev_sample, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(output.pred_original_sample, x0, rtol=1e-10, atol=1e-10)


def test_clip_sample_clips_the_x0_estimate_and_uses_the_posterior_mean():
    t = 999
    betas, _, alphas_cumprod = paper_schedule()
    sample, eps = float64_inputs(10)
    scheduler = DDPMPaperScheduler(clip_sample=True)
    output = scheduler.step(eps, t, sample, generator=torch.Generator().manual_seed(0))
    unclipped = (sample - np.sqrt(1.0 - alphas_cumprod[t]) * eps) / np.sqrt(alphas_cumprod[t])
    assert unclipped.abs().max() > 1  # the case is not vacuous
    x0 = unclipped.clamp(-1, 1)
    torch.testing.assert_close(output.pred_original_sample, x0)
    mean = (
        np.sqrt(alphas_cumprod[t - 1]) * betas[t] / (1.0 - alphas_cumprod[t]) * x0
        + np.sqrt(1.0 - betas[t]) * (1.0 - alphas_cumprod[t - 1]) / (1.0 - alphas_cumprod[t]) * sample
    )
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(output.prev_sample, mean + np.sqrt(betas[t]) * z, rtol=1e-12, atol=1e-12)


def test_from_config_both_ways_with_diffusers():
    ours = DDPMPaperScheduler(beta_end=0.03)
    theirs = DDPMScheduler.from_config(ours.config)
    assert isinstance(theirs, DDPMScheduler)
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "variance_type", "clip_sample"):
        assert theirs.config[key] == ours.config[key], key
    assert (theirs.config.variance_type, theirs.config.clip_sample) == (
        "fixed_large",
        False,
    )  # not diffusers' defaults

    back = DDPMPaperScheduler.from_config(DDPMScheduler().config)
    assert (back.config.variance_type, back.config.clip_sample, back.config.timestep_spacing) == (
        "fixed_small",
        True,
        "leading",
    )
    round_trip = DDPMPaperScheduler.from_config(theirs.config)
    assert {k: round_trip.config[k] for k in ours.config if k != "_use_default_values"} == without_bookkeeping(ours)
    assert DDPMScheduler in ours.compatibles and isinstance(DDIMScheduler.from_config(ours.config), DDIMScheduler)


def without_bookkeeping(scheduler) -> dict:
    return {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}


def test_save_load_round_trip(tmp_path):
    scheduler = DDPMPaperScheduler(variance_type="fixed_small", timestep_spacing="trailing")
    scheduler.save_pretrained(tmp_path)
    loaded = DDPMPaperScheduler.from_pretrained(tmp_path)
    assert dict(loaded.config) == without_bookkeeping(scheduler)  # the file holds every value: nothing defaulted
    np.testing.assert_array_equal(loaded.betas.numpy(), scheduler.betas.numpy())
    sample, eps = float64_inputs(12)
    for s in (scheduler, loaded):
        s.set_timesteps(10)
    outputs = [
        s.step(eps, int(s.timesteps[3]), sample, generator=torch.Generator().manual_seed(0)).prev_sample
        for s in (scheduler, loaded)
    ]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variance_type": "other"}, "`variance_type` must be one of"),
        ({"prediction_type": "x0"}, "`prediction_type` must be one of"),
        ({"beta_schedule": "cubic"}, "`beta_schedule` must be one of"),
        ({"timestep_spacing": "random"}, "`timestep_spacing` must be one of"),
        ({"beta_start": 0.0}, r"`beta_start` must lie in \(0, 1\)"),
        ({"beta_end": 1.0}, r"`beta_end` must lie in \(0, 1\)"),
        ({"beta_start": 0.02, "beta_end": 1e-4}, "`beta_end` must be at least `beta_start`"),
        ({"num_train_timesteps": 0}, "`num_train_timesteps` must be at least 1"),
        ({"num_train_timesteps": 10.5}, "`num_train_timesteps` must be an integer"),
        ({"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}, r"`trained_betas` must have shape \(3,\)"),
        ({"num_train_timesteps": 3, "trained_betas": [0.1, 0.3, 0.2]}, "`trained_betas` must give non-decreasing"),
        ({"num_train_timesteps": 2, "trained_betas": [0.1, 1.0]}, r"`trained_betas` must give betas in the open"),
        ({"clip_sample_range": 0.0}, "`clip_sample_range` must be positive"),
        ({"dynamic_thresholding_ratio": 0.0}, r"`dynamic_thresholding_ratio` must lie in \(0, 1\]"),
        ({"sample_max_value": -1.0}, "`sample_max_value` must be positive"),
        ({"steps_offset": -1}, "`steps_offset` must be a non-negative integer"),
        ({"thresholding": "yes"}, "`thresholding` must be True or False"),
        ({"rescale_betas_zero_snr": 1}, "`rescale_betas_zero_snr` must be True or False"),
        ({"beta_end": 2.0, "beta_start": 0.1}, r"`beta_end` must lie in \(0, 1\)"),
        ({"trained_betas": [0.1, 0.3]}, r"`trained_betas` must have shape \(1000,\)"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDPMPaperScheduler(**kwargs)


@pytest.mark.parametrize("steps", [0, T + 1, 2.5, True])
def test_bad_num_inference_steps_raise(steps):
    with pytest.raises(ValueError, match="`num_inference_steps` must"):
        DDPMPaperScheduler().set_timesteps(steps)


@pytest.mark.parametrize(
    ("timesteps", "match"),
    [([5, 5, 0], "strictly decreasing"), ([T, 0], r"must lie in \[0, 999\]"), ([], "non-empty")],
)
def test_bad_custom_timesteps_raise(timesteps, match):
    with pytest.raises(ValueError, match=f"`timesteps` must.*{match}|{match}"):
        DDPMPaperScheduler().set_timesteps(timesteps=timesteps)


def test_bad_step_and_add_noise_arguments_raise():
    scheduler = DDPMPaperScheduler()
    scheduler.set_timesteps(10)
    sample, eps = float64_inputs(13)
    with pytest.raises(ValueError, match="`timestep` 998 is not in the current chain"):
        scheduler.step(eps, 998, sample)
    with pytest.raises(ValueError, match="`model_output` must have the shape of `sample`"):
        scheduler.step(torch.cat([eps, eps], dim=1), 999, sample)
    with pytest.raises(ValueError, match=r"`timesteps` must lie in \[0, 999\]"):
        scheduler.add_noise(sample, eps, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="`timesteps` must be integers"):
        scheduler.add_noise(sample, eps, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="`noise` must have the shape of `original_samples`"):
        scheduler.add_noise(sample, eps[:1], 3)


# ---------------------------------------------------------------------------------------- superset of DDPMScheduler


def test_takes_every_ddpm_scheduler_argument_and_its_config():
    theirs = set(inspect.signature(DDPMScheduler.__init__).parameters) - {"self"}
    assert theirs <= set(inspect.signature(DDPMPaperScheduler.__init__).parameters)
    config = DDPMScheduler(thresholding=False, rescale_betas_zero_snr=False, steps_offset=0).config
    ours = DDPMPaperScheduler(**{k: v for k, v in config.items() if not k.startswith("_")})
    assert {k: ours.config[k] for k in theirs} == {k: config[k] for k in theirs}


def diffusers_on_our_schedule(ours: DDPMPaperScheduler, **config) -> DDPMScheduler:
    """DDPMScheduler with `config`, computing on our float64 cumulative products.

    With float64 inputs it then evaluates its own formulas in float64, so any difference from ours is a difference of
    formula, not of schedule precision (that is checked separately against its float32 betas).
    """
    theirs = DDPMScheduler(**config)
    theirs.alphas_cumprod = ours.alphas_cumprod.clone()
    theirs.one = torch.tensor(1.0, dtype=torch.float64)
    return theirs


def smooth_model(sample: torch.Tensor, t: torch.Tensor, variance_type: str) -> torch.Tensor:
    """A deterministic stand-in for eps_theta(x_t, t), with variance channels for the learned variance types:
    sigma^2 in (0, 0.02) for `"learned"`, v in (-1, 1) for `"learned_range"`."""
    prediction = 0.7 * sample * torch.cos(t / 97.0) + 0.2 * torch.sin(3.0 * sample)
    if variance_type == "learned":
        return torch.cat([prediction, 0.02 * torch.sigmoid(sample + t / 500.0)], dim=1)
    if variance_type == "learned_range":
        return torch.cat([prediction, torch.tanh(sample + t / 500.0)], dim=1)
    return prediction


def run_chains(config: dict, num_inference_steps=None, timesteps=None, seed: int = 0) -> list[tuple]:
    """Both schedulers along the same chain with the same generator: (ours, theirs) outputs at every step."""
    config = {"variance_type": "fixed_large", "timestep_spacing": "linspace", "clip_sample": False, **config}
    ours = DDPMPaperScheduler(**config)
    theirs = diffusers_on_our_schedule(ours, **{k: v for k, v in config.items() if k != "last_step_noise"})
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(num_inference_steps=num_inference_steps, timesteps=timesteps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    sample = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5
    samples = {"ours": sample, "theirs": sample.clone()}
    generators = {name: torch.Generator().manual_seed(seed + 1) for name in samples}
    outputs = []
    for t in ours.timesteps:
        step = {}
        for name, scheduler in (("ours", ours), ("theirs", theirs)):
            model_output = smooth_model(samples[name], t.double(), config.get("variance_type"))
            step[name] = scheduler.step(model_output, t, samples[name], generator=generators[name])
            samples[name] = step[name].prev_sample
        outputs.append((int(t), step["ours"], step["theirs"]))
    return outputs


def assert_same_chain(outputs: list[tuple]) -> None:
    for t, ours, theirs in outputs:
        assert torch.isfinite(ours.prev_sample).all(), t
        torch.testing.assert_close(ours.prev_sample, theirs.prev_sample, rtol=1e-9, atol=1e-9, msg=f"t={t}")
        torch.testing.assert_close(
            ours.pred_original_sample, theirs.pred_original_sample, rtol=1e-9, atol=1e-9, msg=f"t={t}"
        )


DIFFUSERS_OPTIONS = [
    pytest.param({"variance_type": "fixed_small", "clip_sample": True}, {}, id="diffusers-defaults"),
    pytest.param({"variance_type": "fixed_small_log", "clip_sample": False}, {}, id="fixed_small_log"),
    pytest.param({"variance_type": "learned"}, {}, id="learned"),
    pytest.param({"variance_type": "learned_range"}, {}, id="learned_range"),
    pytest.param({"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}, {}, id="thresh"),
    pytest.param({"thresholding": True, "prediction_type": "v_prediction"}, {}, id="thresh-v"),
    pytest.param({"thresholding": True, "prediction_type": "sample", "sample_max_value": 2.0}, {}, id="thresh-x0"),
    pytest.param({"beta_schedule": "sigmoid", "clip_sample": False}, {}, id="sigmoid"),
    pytest.param({"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}, {}, id="zero-snr"),
    pytest.param({"timestep_spacing": "leading", "steps_offset": 1, "last_step_noise": True}, {}, id="steps_offset"),
    pytest.param({"timestep_spacing": "trailing", "last_step_noise": True}, {}, id="trailing"),
    pytest.param({"last_step_noise": True}, {"timesteps": [900, 511, 37, 20]}, id="custom-ending-above-0"),
    pytest.param({"variance_type": "fixed_small"}, {"timesteps": [999, 400, 63, 0]}, id="custom-ending-at-0"),
]


@pytest.mark.parametrize(("config", "chain"), DIFFUSERS_OPTIONS)
def test_every_option_steps_like_ddpm_scheduler(config, chain):
    """Same draws, same outputs as DDPMScheduler at every step of a 20-step (or custom) chain."""
    chain = chain or {"num_inference_steps": 20}
    outputs = run_chains(config, **chain)
    assert_same_chain(outputs)
    if config.get("last_step_noise") and outputs[-1][0] > 0:  # where Algorithm 2 and DDPMScheduler part
        paper_last_step = run_chains({**config, "last_step_noise": False}, **chain)[-1][1]
        assert not torch.allclose(outputs[-1][1].prev_sample, paper_last_step.prev_sample)


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "sigmoid"},
        {"rescale_betas_zero_snr": True},
        {"rescale_betas_zero_snr": True, "beta_schedule": "scaled_linear", "beta_end": 0.012},
    ],
)
def test_new_schedules_are_diffusers_betas_in_float64(config):
    ours, theirs = DDPMPaperScheduler(**config), DDPMScheduler(**config)
    assert ours.betas.dtype == torch.float64
    torch.testing.assert_close(ours.betas.float(), theirs.betas, rtol=1e-5, atol=1e-6)
    if config.get("rescale_betas_zero_snr"):
        assert ours.alphas_cumprod[-1] == 0.0 and ours.betas[-1] == 1.0  # zero terminal SNR, exactly


def test_sigmoid_schedule_by_hand():
    betas = DDPMPaperScheduler(beta_schedule="sigmoid", beta_start=1e-4, beta_end=0.02).betas.numpy()
    expected = 1e-4 + (0.02 - 1e-4) / (1.0 + np.exp(-np.linspace(-6, 6, T)))
    np.testing.assert_allclose(betas, expected, rtol=1e-15, atol=0)


def test_thresholding_by_hand():
    """Saharia et al. 2022: s = quantile(|x0|), clamped to [1, max]; x0 -> clamp(x0, -s, s) / s, per sample."""
    scheduler = DDPMPaperScheduler(thresholding=True, dynamic_thresholding_ratio=0.8, sample_max_value=3.0)
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4
    x0[1] *= 0.1  # the second sample's quantile is below 1: plain clipping to [-1, 1]
    t = 500
    sample = scheduler.add_noise(x0, torch.zeros_like(x0), t)  # x_t with eps = 0, so the x0 estimate is x0 itself
    output = scheduler.step(torch.zeros_like(x0), t, sample, generator=torch.Generator().manual_seed(0))
    for i in range(SHAPE[0]):
        s = np.clip(np.quantile(np.abs(x0[i].numpy()), 0.8), 1.0, 3.0)
        expected = np.clip(x0[i].numpy(), -s, s) / s
        np.testing.assert_allclose(output.pred_original_sample[i].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_fixed_large_log_is_fixed_large_and_finite():
    """diffusers' fixed_large_log takes the square root of log(beta) and returns NaN (issue 14569); ours is beta."""
    outputs = {}
    for variance_type in ("fixed_large", "fixed_large_log"):
        scheduler = DDPMPaperScheduler(variance_type=variance_type)
        scheduler.set_timesteps(10)
        sample, eps = float64_inputs(14)
        outputs[variance_type] = scheduler.step(eps, 555, sample, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(outputs["fixed_large_log"].prev_sample).all()
    torch.testing.assert_close(outputs["fixed_large_log"].prev_sample, outputs["fixed_large"].prev_sample)
    assert DDPMPaperScheduler(variance_type="fixed_large_log")._get_variance(999) == pytest.approx(np.log(0.02))


def test_learned_range_interpolates_log_beta_and_log_beta_tilde():
    """Nichol & Dhariwal 2021 Eq. 15: v = 1 gives sigma^2 = beta_t, v = -1 gives beta_tilde_t."""
    betas, _, alphas_cumprod = paper_schedule()
    t = 400
    beta_tilde = (1.0 - alphas_cumprod[t - 1]) / (1.0 - alphas_cumprod[t]) * betas[t]
    sample, eps = float64_inputs(15)
    for v, variance in ((1.0, betas[t]), (-1.0, beta_tilde), (0.0, np.sqrt(betas[t] * beta_tilde))):
        scheduler = DDPMPaperScheduler(variance_type="learned_range")
        model_output = torch.cat([eps, torch.full_like(eps, v)], dim=1)
        noisy = scheduler.step(model_output, t, sample, generator=torch.Generator().manual_seed(4)).prev_sample
        mean = DDPMPaperScheduler().step(eps, t, sample, generator=torch.Generator().manual_seed(4))
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        expected = mean.prev_sample - np.sqrt(betas[t]) * z + np.sqrt(variance) * z
        torch.testing.assert_close(noisy, expected, rtol=1e-10, atol=1e-10)


def test_learned_variance_needs_the_variance_channels():
    sample, eps = float64_inputs(16)
    with pytest.raises(ValueError, match=r"must have shape \(2, 6, 4, 4\) for `variance_type='learned'`"):
        DDPMPaperScheduler(variance_type="learned").step(eps, 999, sample)


def test_zero_snr_epsilon_at_the_last_timestep_raises_instead_of_nan():
    scheduler = DDPMPaperScheduler(rescale_betas_zero_snr=True)
    sample, eps = float64_inputs(17)
    with pytest.raises(ValueError, match="use `prediction_type='v_prediction'`"):
        scheduler.step(eps, T - 1, sample)
    assert torch.isfinite(scheduler.step(eps, T - 2, sample).prev_sample).all()


def test_steps_offset_shifts_only_leading_chains():
    leading = DDPMPaperScheduler(timestep_spacing="leading", steps_offset=1)
    leading.set_timesteps(10)
    assert leading.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    linspace = DDPMPaperScheduler(steps_offset=1)
    linspace.set_timesteps(10)
    assert linspace.timesteps[-1] == 0
    with pytest.raises(ValueError, match="`steps_offset`=1 shifts the leading chain's first timestep 999 to 1000"):
        leading.set_timesteps(T)


def test_previous_timestep_is_a_tensor_like_ddpm_scheduler():
    ours, theirs = DDPMPaperScheduler(), DDPMScheduler()
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(timesteps=[100, 87, 50, 1, 0])
    for t in ours.timesteps:
        previous = ours.previous_timestep(t)
        assert isinstance(previous, torch.Tensor) and previous.dtype == torch.int64
        assert previous.item() == theirs.previous_timestep(t).item()
    assert ours.previous_timestep(0).item() == -1


def test_get_variance_follows_ddpm_scheduler():
    for variance_type in ("fixed_small", "fixed_small_log", "fixed_large"):
        ours = DDPMPaperScheduler(variance_type=variance_type)
        theirs = diffusers_on_our_schedule(ours, variance_type=variance_type)
        for t in (0, 487, 999):
            assert ours._get_variance(t).item() == pytest.approx(theirs._get_variance(t).item(), rel=1e-12, abs=0)


def test_default_values_bookkeeping_follows_diffusers():
    ours = DDPMPaperScheduler(beta_end=0.03)
    defaults = set(ours.config["_use_default_values"])
    assert {"thresholding", "steps_offset", "prediction_type"} <= defaults and "beta_end" not in defaults
    assert defaults.isdisjoint({"variance_type", "clip_sample", "timestep_spacing"})  # the paper's always travel
    # a value the source config only defaulted is not taken, one it set is (diffusers' `extract_init_dict`)
    defaulted = {**DDPMScheduler(sample_max_value=2.0).config, "_use_default_values": ["sample_max_value"]}
    assert DDPMPaperScheduler.from_config(defaulted).config.sample_max_value == 1.0
    assert DDPMPaperScheduler.from_config(DDPMScheduler(sample_max_value=2.0).config).config.sample_max_value == 2.0


@pytest.mark.parametrize("config", [{}, {"variance_type": "fixed_small", "clip_sample": True, "beta_end": 0.03}])
def test_every_compatible_scheduler_round_trips_the_config(config):
    ours = DDPMPaperScheduler(**config)
    for compatible in ours.compatibles:
        back = DDPMPaperScheduler.from_config(compatible.from_config(ours.config).config)
        assert without_bookkeeping(back) == without_bookkeeping(ours), compatible.__name__
