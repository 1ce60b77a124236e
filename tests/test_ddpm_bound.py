"""The variational bound (Ho et al. 2020, Eq. 5) against closed forms computed independently in numpy."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hf_swin_ddpm.diffusion import DDPMPaperScheduler, paper_unet, variational_bound
from hf_swin_ddpm.diffusion.likelihood import _kl_strata, _kl_timesteps

pytestmark = pytest.mark.usefixtures("one_thread")

T = 1000
LN2 = math.log(2.0)


class PointMassEpsilon(torch.nn.Module):
    """The exact noise predictor when the data distribution is the single point `x0` (one point per image).

    q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I), so eps*(x_t, t) = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t).
    The bound's batches stack the images once per evaluated timestep, so x0 is tiled to the batch.
    """

    def __init__(self, x0: torch.Tensor, betas: np.ndarray) -> None:
        super().__init__()
        self.x0 = x0.double()
        self.alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - betas))
        self.calls = 0

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        self.calls += 1
        abar = self.alphas_cumprod[timestep.long()].reshape(-1, 1, 1, 1)
        x0 = self.x0.repeat(sample.shape[0] // self.x0.shape[0], 1, 1, 1)
        eps = (sample.double() - abar.sqrt() * x0) / (1.0 - abar).sqrt()
        return SimpleNamespace(sample=eps.to(sample.dtype))


def _std_normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def analytic_bound(x0: np.ndarray, variance_type: str) -> dict[str, np.ndarray]:
    """The bound for the exact point-mass predictor, from the schedule alone (float64 numpy).

    The model mean then equals the posterior mean, so each KL term is the variance mismatch
    0.5 (log(sigma^2 / beta_tilde) + beta_tilde / sigma^2 - 1) per dimension, zero for sigma^2 = beta_tilde; the
    decoder's mean is x0 itself (the posterior mean at t = 0 is x0) with variance beta_tilde_1 (official code), and
    the prior term is KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)).
    """
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    beta_tilde = betas * (1.0 - abar_prev) / (1.0 - abar)
    sigma2 = betas if variance_type == "fixed_large" else beta_tilde
    kl_terms = 0.5 * (np.log(sigma2[1:] / beta_tilde[1:]) + beta_tilde[1:] / sigma2[1:] - 1.0) / LN2

    half_bin = (1.0 / 255.0) / math.sqrt(beta_tilde[1])
    interior = -np.log(_std_normal_cdf(np.array(half_bin)) - _std_normal_cdf(np.array(-half_bin)))
    edge = -np.log(_std_normal_cdf(np.array(half_bin)))
    per_pixel = np.where(np.abs(x0) > 0.999, edge, interior)
    batch = x0.shape[0]
    decoder = per_pixel.reshape(batch, -1).mean(axis=1) / LN2

    prior_per_pixel = 0.5 * (-1.0 - np.log(1.0 - abar[-1]) + (1.0 - abar[-1]) + abar[-1] * x0**2)
    prior = prior_per_pixel.reshape(batch, -1).mean(axis=1) / LN2
    diffusion = np.full(batch, kl_terms.sum())
    return {
        "prior_bpd": prior,
        "decoder_bpd": decoder,
        "diffusion_bpd": diffusion,
        "total_bpd": prior + decoder + diffusion,
        "kl_terms": kl_terms,
    }


def _eight_bit_images(batch: int = 2, channels: int = 1, size: int = 4, seed: int = 0) -> torch.Tensor:
    """Images on the 8-bit grid scaled to [-1, 1], including both edge values."""
    pixels = torch.randint(0, 256, (batch, channels, size, size), generator=torch.Generator().manual_seed(seed))
    pixels[0, 0, 0, 0], pixels[-1, 0, -1, -1] = 0, 255
    return pixels.float() / 127.5 - 1.0


@pytest.mark.parametrize("variance_type", ["fixed_large", "fixed_small"])
def test_bound_of_exact_predictor_equals_closed_form(variance_type):
    x0 = _eight_bit_images()
    scheduler = DDPMPaperScheduler(variance_type=variance_type)
    model = PointMassEpsilon(x0, scheduler.betas.numpy())
    bound = variational_bound(model, scheduler, x0, generator=torch.Generator().manual_seed(0), batch_timesteps=250)
    expected = analytic_bound(x0.double().numpy(), variance_type)

    assert model.calls == math.ceil(T / 250)  # all T terms (decoder + T - 1 KLs) in batches of 250 timesteps
    for key in ("prior_bpd", "decoder_bpd", "diffusion_bpd", "total_bpd"):
        assert bound[key].shape == (2,) and bound[key].dtype == torch.float64
        np.testing.assert_allclose(bound[key].numpy(), expected[key], rtol=1e-6, atol=1e-9, err_msg=key)
    if variance_type == "fixed_large":  # the variance mismatch beta_t vs beta_tilde_t is a visible, positive cost
        assert expected["diffusion_bpd"][0] > 0.05
    else:
        np.testing.assert_allclose(bound["diffusion_bpd"].numpy(), 0.0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_bound_of_images_in_any_floating_dtype_is_the_closed_form_of_their_values(dtype):
    """8-bit images given in `dtype` (bfloat16 cannot hold them exactly: it rounds by up to half a bin) have the
    bound of the values they hold, in float64, to the closed form's tolerance."""
    x0 = _eight_bit_images().to(dtype)
    scheduler = DDPMPaperScheduler()
    model = PointMassEpsilon(x0, scheduler.betas.numpy())
    model.dtype = torch.float64  # the exact predictor takes x_t in float64 (without a dtype it would get x0's)
    bound = variational_bound(model, scheduler, x0, generator=torch.Generator().manual_seed(0), batch_timesteps=500)
    expected = analytic_bound(x0.double().numpy(), "fixed_large")
    for key in ("prior_bpd", "decoder_bpd", "diffusion_bpd", "total_bpd"):
        assert bound[key].dtype == torch.float64
        np.testing.assert_allclose(bound[key].numpy(), expected[key], rtol=1e-6, atol=1e-9, err_msg=key)


def test_stratified_estimate_weights_each_drawn_term_by_its_stratum():
    x0 = _eight_bit_images(batch=1)
    scheduler = DDPMPaperScheduler()
    model = PointMassEpsilon(x0, scheduler.betas.numpy())
    bound = variational_bound(model, scheduler, x0, generator=torch.Generator().manual_seed(3), num_timesteps=10)
    expected = analytic_bound(x0.double().numpy(), "fixed_large")

    boundaries = _kl_strata(10, T)
    timesteps, weights = _kl_timesteps(10, T, torch.Generator().manual_seed(3))  # the bound's first draws
    assert boundaries[0] == 1 and boundaries[-1] == T and len(boundaries) == 11  # a partition of t = 1..T-1
    assert np.all((boundaries[:-1] <= timesteps) & (timesteps < boundaries[1:]))
    np.testing.assert_array_equal(weights, np.diff(boundaries))
    estimate = (expected["kl_terms"][timesteps - 1] * weights).sum()
    np.testing.assert_allclose(bound["diffusion_bpd"].numpy(), [estimate], rtol=1e-6)
    assert model.calls == 1  # decoder + 10 KL terms fit one batch of 16 timesteps
    np.testing.assert_allclose(bound["decoder_bpd"].numpy(), expected["decoder_bpd"], rtol=1e-6)


@pytest.mark.parametrize("num_timesteps", [1, 2, 10, 100, 500, 999])
def test_strata_partition_the_kl_timesteps_finest_at_small_t(num_timesteps):
    sizes = np.diff(_kl_strata(num_timesteps, T))
    assert len(sizes) == num_timesteps and sizes.min() >= 1 and sizes.sum() == T - 1
    assert np.all(np.diff(sizes) >= -1)  # non-decreasing up to rounding: narrowest where the terms change fastest
    if num_timesteps >= 100:
        assert sizes[0] == 1


def test_stratified_estimate_is_unbiased_where_even_striding_is_not():
    """The KL terms of the exact predictor fall steeply with t (the beta / beta_tilde mismatch); the mean of the
    stratified estimate over draws matches the full sum, while an evenly strided choice including t = 1 does not."""
    x0 = _eight_bit_images(batch=1)
    scheduler = DDPMPaperScheduler()
    model = PointMassEpsilon(x0, scheduler.betas.numpy())
    kl_terms = analytic_bound(x0.double().numpy(), "fixed_large")["kl_terms"]
    full = kl_terms.sum()
    draws = [
        variational_bound(model, scheduler, x0, generator=torch.Generator().manual_seed(seed), num_timesteps=20)
        for seed in range(40)
    ]
    mean_estimate = np.mean([draw["diffusion_bpd"].item() for draw in draws])
    strided = np.unique(np.linspace(1, T - 1, 20).round().astype(int))
    strided_estimate = kl_terms[strided - 1].sum() * (T - 1) / len(strided)
    assert abs(strided_estimate - full) > 0.5 * full  # the bias this estimator avoids
    np.testing.assert_allclose(mean_estimate, full, rtol=0.02)


def test_bound_uses_the_full_training_schedule_after_respacing():
    x0 = _eight_bit_images(batch=1)
    scheduler = DDPMPaperScheduler()
    scheduler.set_timesteps(50)
    model = PointMassEpsilon(x0, scheduler.betas.numpy())
    bound = variational_bound(model, scheduler, x0, generator=torch.Generator().manual_seed(0), num_timesteps=20)
    fresh = variational_bound(
        model, DDPMPaperScheduler(), x0, generator=torch.Generator().manual_seed(0), num_timesteps=20
    )
    torch.testing.assert_close(bound["total_bpd"], fresh["total_bpd"])


def test_bound_with_a_unet_is_finite_and_reproducible():
    torch.manual_seed(0)
    unet = paper_unet("tiny", sample_size=8, block_out_channels=(8, 16, 16), norm_num_groups=4, dropout=0.5)
    scheduler = DDPMPaperScheduler()
    x0 = _eight_bit_images(batch=2, size=8)
    first = variational_bound(unet, scheduler, x0, generator=torch.Generator().manual_seed(1), num_timesteps=8)
    assert unet.training  # dropout was off during the evaluation (the results agree) and training mode is restored
    again = variational_bound(unet, scheduler, x0, generator=torch.Generator().manual_seed(1), num_timesteps=8)
    for key, value in first.items():
        assert value.shape == (2,) and torch.isfinite(value).all(), key
        torch.testing.assert_close(value, again[key])
    torch.testing.assert_close(first["total_bpd"], first["prior_bpd"] + first["decoder_bpd"] + first["diffusion_bpd"])
    assert (first["diffusion_bpd"] > 0).all() and (first["decoder_bpd"] > 0).all()


@pytest.mark.parametrize(
    ("x0", "match"),
    [
        (torch.full((1, 1, 4, 4), 1.5), r"`x0` must lie in \[-1, 1\]"),
        (torch.full((1, 1, 4, 4), float("nan")), r"`x0` must lie in \[-1, 1\]"),
        (torch.zeros(1, 4, 4), r"`x0` must be a \(batch, channels, height, width\) tensor"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), r"`x0` must be a floating-point tensor"),
    ],
)
def test_bad_images_raise(x0, match):
    scheduler = DDPMPaperScheduler()
    model = PointMassEpsilon(torch.zeros(1, 1, 4, 4), scheduler.betas.numpy())
    with pytest.raises(ValueError, match=match):
        variational_bound(model, scheduler, x0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_timesteps": 0}, "`num_timesteps` must lie in"),
        ({"num_timesteps": T}, "`num_timesteps` must lie in"),
        ({"batch_timesteps": 0}, "`batch_timesteps` must be a positive integer"),
    ],
)
def test_bad_options_raise(kwargs, match):
    scheduler = DDPMPaperScheduler()
    x0 = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=match):
        variational_bound(PointMassEpsilon(x0, scheduler.betas.numpy()), scheduler, x0, **kwargs)


def test_channel_mismatch_with_unet_raises():
    unet = paper_unet("tiny", sample_size=8)
    with pytest.raises(ValueError, match="`x0` has 3 channels but the unet expects 1"):
        variational_bound(unet, DDPMPaperScheduler(), torch.zeros(1, 3, 8, 8))


def test_returned_terms_sum_to_the_bound_and_are_the_closed_form_terms():
    x0 = _eight_bit_images()
    scheduler = DDPMPaperScheduler()
    model = PointMassEpsilon(x0, scheduler.betas.numpy())
    bound = variational_bound(
        model, scheduler, x0, generator=torch.Generator().manual_seed(0), batch_timesteps=250, return_terms=True
    )
    expected = analytic_bound(x0.double().numpy(), "fixed_large")
    assert bound["timesteps"].tolist() == list(range(T))
    assert bound["terms_bpd"].shape == bound["mse"].shape == (2, T)
    torch.testing.assert_close(bound["term_weights"], torch.ones(T, dtype=torch.float64))
    # the official calc_bpd_loop: total = prior + sum over t of terms_bpd
    torch.testing.assert_close(bound["prior_bpd"] + bound["terms_bpd"].sum(1), bound["total_bpd"])
    np.testing.assert_allclose(bound["terms_bpd"][:, 0].numpy(), expected["decoder_bpd"], rtol=1e-6)
    np.testing.assert_allclose(bound["terms_bpd"][0, 1:].numpy(), expected["kl_terms"], rtol=1e-6, atol=1e-12)
    # the exact predictor recovers x0 at every t (up to float rounding of x_t): zero distortion
    assert bound["mse"].max().item() < 1e-9


def test_returned_terms_of_a_unet_sum_to_the_stratified_bound_and_mse_is_the_x0_error():
    torch.manual_seed(0)
    unet = paper_unet("tiny", sample_size=8, block_out_channels=(8, 16, 16), norm_num_groups=4).eval()
    scheduler = DDPMPaperScheduler()
    x0 = _eight_bit_images(batch=3, size=8)
    bound = variational_bound(
        unet, scheduler, x0, generator=torch.Generator().manual_seed(2), num_timesteps=12, return_terms=True
    )
    timesteps = bound["timesteps"]
    assert timesteps[0] == 0 and len(timesteps) == 13 and bool((timesteps.diff() > 0).all())
    weighted = (bound["terms_bpd"] * bound["term_weights"]).sum(1)
    torch.testing.assert_close(bound["prior_bpd"] + weighted, bound["total_bpd"])
    torch.testing.assert_close(bound["terms_bpd"][:, 0], bound["decoder_bpd"])
    assert bound["term_weights"].sum().item() == T  # the strata cover t = 0..T-1
    # mse is the clipped x0 estimate's error: at most the largest possible squared error on [-1, 1], 4
    assert bool(((bound["mse"] > 0) & (bound["mse"] <= 4)).all())
    # the same seed without return_terms gives the same bound
    plain = variational_bound(unet, scheduler, x0, generator=torch.Generator().manual_seed(2), num_timesteps=12)
    torch.testing.assert_close(plain["total_bpd"], bound["total_bpd"])
