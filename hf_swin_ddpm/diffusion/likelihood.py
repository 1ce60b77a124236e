"""The variational bound of Ho et al. 2020 (Eq. 5) in bits per dimension, as the official code's `calc_bpd_loop`.

For images x_0 scaled to [-1, 1] from 8-bit data, the negative ELBO is

    L = L_T + sum_{t=2}^{T} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || N(0, I))                              (prior_bpd)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))      (diffusion_bpd, Eq. 6-7 against Eq. 11)
    L_0     = -log p_theta(x_0 | x_1), a discretized Gaussian decoder   (decoder_bpd, Eq. 13)

each averaged over the dimensions and divided by ln 2. The paper's t = 1..T is 0..T-1 here (and in diffusers).

Conventions follow the official `diffusion_tf/diffusion_utils_2.py` (`GaussianDiffusion2`):

- the schedule is the scheduler's full T-step training schedule, in float64;
- p_theta(x_{t-1} | x_t) has the mean of the posterior (Eq. 7) at the model's x_0 estimate, clipped to [-1, 1] when
  `clip_denoised=True` (the default of `calc_bpd_loop`);
- its log-variance is log(beta_t) for `"fixed_large"` and log(beta_tilde_t) for `"fixed_small"`, except at t = 0 (the
  decoder), where both use beta_tilde of the paper's t = 2 (`posterior_variance[1]`; beta_tilde at t = 0 is zero). For
  `"fixed_large"` that is the official `np.append(posterior_variance[1], betas[1:])`;
- the decoder integrates the Gaussian over bins of width 2/255 around each value, the outermost bins extending to
  +-infinity. The official code uses the tanh approximation of the normal CDF (from PixelCNN++); this uses the exact
  CDF (`torch.special.ndtr`). For the decoder's sigma = sqrt(beta_tilde_2) ~ 0.008 the two differ by ~3e-4 bits/dim
  for a mean at the bin centre and by under 1e-2 bits/dim for means up to 0.02 away from it.
"""

import math

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

LN2 = math.log(2.0)


def _normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per element for N(mean, exp(log_scale)^2) integrated over the bin of width 2/255 around x.

    The bins at -1 and 1 are open to -infinity and +infinity (official `discretized_gaussian_log_likelihood`).
    """
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centered + 1.0 / 255.0))
    cdf_min = torch.special.ndtr(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def _mean_flat_bits(values: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension, converted from nats to bits."""
    return values.flatten(1).mean(dim=1) / LN2


class _Schedule:
    """The float64 tables of `GaussianDiffusion2` for the scheduler's full training schedule."""

    def __init__(self, scheduler) -> None:
        betas = torch.as_tensor(scheduler.betas).detach().to("cpu", torch.float64).numpy()
        if betas.ndim != 1 or betas.size < 2:
            raise ValueError(f"`scheduler` must have at least 2 training timesteps, got betas of shape {betas.shape}.")
        variance_type = scheduler.config.variance_type
        if variance_type not in ("fixed_large", "fixed_small"):
            raise ValueError(
                f"`scheduler.config.variance_type` must be fixed_large or fixed_small, got {variance_type!r}."
            )
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"`scheduler.config.prediction_type` {self.prediction_type!r} is not supported.")

        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        posterior_log_variance = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
        if variance_type == "fixed_large":
            model_log_variance = np.log(np.append(posterior_variance[1], betas[1:]))
        else:
            model_log_variance = posterior_log_variance

        self.num_timesteps = betas.size
        self.alphas_cumprod = alphas_cumprod
        self.sqrt_alphas_cumprod = np.sqrt(alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - alphas_cumprod)
        self.posterior_mean_coef1 = betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)
        self.posterior_log_variance = posterior_log_variance
        self.model_log_variance = model_log_variance

    def column(self, name: str, timesteps: np.ndarray, device: torch.device) -> torch.Tensor:
        """`table[timesteps]` as a float64 (len(timesteps), 1, 1, 1, 1) tensor on `device`."""
        values = torch.from_numpy(getattr(self, name)[timesteps].copy())
        return values.to(device).reshape(-1, 1, 1, 1, 1)


def _check_images(x0: torch.Tensor, unet) -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim != 4:
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"`x0` must be a (batch, channels, height, width) tensor, got {shape}.")
    if not x0.is_floating_point():
        raise ValueError(f"`x0` must be a floating-point tensor scaled to [-1, 1], got dtype {x0.dtype}.")
    if x0.shape[0] == 0:
        raise ValueError("`x0` must hold at least one image, got an empty batch.")
    if not torch.isfinite(x0).all() or x0.min() < -1.0 or x0.max() > 1.0:
        raise ValueError(
            f"`x0` must lie in [-1, 1] (8-bit images scaled by x / 127.5 - 1), got values in "
            f"[{x0.min().item()}, {x0.max().item()}]."
        )
    in_channels = getattr(getattr(unet, "config", None), "in_channels", None)
    if in_channels is not None and x0.shape[1] != in_channels:
        raise ValueError(f"`x0` has {x0.shape[1]} channels but the unet expects {in_channels}.")
    down_block_types = getattr(getattr(unet, "config", None), "down_block_types", None)
    if down_block_types:
        multiple = 2 ** (len(down_block_types) - 1)  # the last down block does not downsample
        if x0.shape[-2] % multiple or x0.shape[-1] % multiple:
            raise ValueError(
                f"`x0` height and width must be multiples of {multiple} (the unet halves them "
                f"{len(down_block_types) - 1} times), got {x0.shape[-2]}x{x0.shape[-1]}; the unet was trained at "
                f"{unet.config.sample_size}."
            )


def _check_arguments(unet, scheduler, generator) -> None:
    """The model must be callable, the scheduler must have betas and a config, the generator must be a generator."""
    if not callable(unet):
        raise ValueError(f"`unet` must be a model called as unet(x_t, t), got {type(unet).__name__}.")
    if not hasattr(scheduler, "betas") or not hasattr(scheduler, "config"):
        raise ValueError(
            f"`scheduler` must be a DDPMPaperScheduler (betas and a config), got {type(scheduler).__name__}."
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}; for a seed pass "
            "torch.Generator().manual_seed(seed)."
        )


def _kl_strata(num_timesteps: int | None, total: int) -> np.ndarray:
    """Boundaries of the strata of t in 1..T-1 whose KL terms are estimated: `num_timesteps` + 1 increasing values
    from 1 to T, the k-th stratum being [b_k, b_k+1). The boundaries grow quadratically (b_k ~ (T - 1) (k / n)^2),
    so the strata are single timesteps where the terms change fastest (small t) and widest where they are flat."""
    if num_timesteps is None:
        return np.arange(1, total + 1, dtype=np.int64)
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)):
        raise ValueError(f"`num_timesteps` must be an integer or None, got {num_timesteps!r}.")
    if not 1 <= num_timesteps <= total - 1:
        raise ValueError(f"`num_timesteps` must lie in [1, {total - 1}] (T - 1 KL terms), got {num_timesteps}.")
    count = int(num_timesteps)
    quadratic = 1 + np.round((total - 1) * (np.arange(count + 1) / count) ** 2).astype(np.int64)
    # at least one timestep per stratum, and room for the strata still to come
    lower = 1 + np.arange(count + 1)
    upper = total - count + np.arange(count + 1)
    return np.maximum.accumulate(np.clip(quadratic, lower, upper))


def _kl_timesteps(
    num_timesteps: int | None, total: int, generator: torch.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """The t in 1..T-1 whose KL terms are evaluated and the weight of each in the sum over t (stratified sampling).

    All T - 1 terms with weight 1, or one t drawn uniformly from each stratum of `_kl_strata` and weighted by the
    stratum's size: an unbiased estimate of the sum whatever the terms' shape (an evenly strided choice that includes
    t = 1 weighs the largest term about (T - 1) / n times and overestimates the bound).
    """
    boundaries = _kl_strata(num_timesteps, total)
    sizes = np.diff(boundaries)
    if num_timesteps is None:
        return boundaries[:-1], sizes.astype(np.float64)
    device = generator.device if generator is not None else "cpu"
    offsets = torch.rand(len(sizes), generator=generator, dtype=torch.float64, device=device).cpu().numpy()
    timesteps = boundaries[:-1] + np.minimum(np.floor(offsets * sizes).astype(np.int64), sizes - 1)
    return timesteps, sizes.astype(np.float64)


def _predict_x0(
    schedule: _Schedule, model_output: torch.Tensor, x_t: torch.Tensor, timesteps: np.ndarray
) -> torch.Tensor:
    """The model's x_0 estimate (Eq. 4 solved for x_0 for an epsilon model), float64, shape (k, B, C, H, W)."""
    device = x_t.device
    sqrt_ab = schedule.column("sqrt_alphas_cumprod", timesteps, device)
    sqrt_1m_ab = schedule.column("sqrt_one_minus_alphas_cumprod", timesteps, device)
    if schedule.prediction_type == "epsilon":
        return (x_t - sqrt_1m_ab * model_output) / sqrt_ab
    if schedule.prediction_type == "sample":
        return model_output
    return sqrt_ab * x_t - sqrt_1m_ab * model_output


def _terms_bpd(
    unet,
    schedule: _Schedule,
    x0: torch.Tensor,
    timesteps: np.ndarray,
    generator: torch.Generator | None,
    clip_denoised: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bound's terms at `timesteps` for every image: the decoder NLL at t = 0, the KL otherwise; (k, B) bits/dim,
    and the mean squared error of the model's x_0 estimate (clipped as the terms use it), (k, B).

    One batched model call on k * B noisy images x_t ~ q(x_t | x_0) (Eq. 4).
    """
    num_steps, (batch, *image_shape) = len(timesteps), x0.shape
    device = x0.device
    model_dtype = getattr(unet, "dtype", x0.dtype)
    noise = randn_tensor((num_steps * batch, *image_shape), generator=generator, device=device, dtype=torch.float64)
    noise = noise.reshape(num_steps, batch, *image_shape)
    x_start = x0.to(torch.float64).unsqueeze(0)
    x_t = schedule.column("sqrt_alphas_cumprod", timesteps, device) * x_start
    x_t = x_t + schedule.column("sqrt_one_minus_alphas_cumprod", timesteps, device) * noise
    x_t = x_t.to(model_dtype).to(torch.float64)  # what the model sees is what the bound is about

    model_timesteps = torch.from_numpy(np.repeat(timesteps, batch)).to(device)
    model_output = unet(x_t.flatten(0, 1).to(model_dtype), model_timesteps).sample
    if model_output.shape != x_t.flatten(0, 1).shape:
        raise ValueError(
            f"`unet` must predict one value per input value (fixed variances), got output {tuple(model_output.shape)} "
            f"for input {tuple(x_t.flatten(0, 1).shape)}."
        )
    model_output = model_output.to(torch.float64).reshape(x_t.shape)

    pred_x0 = _predict_x0(schedule, model_output, x_t, timesteps)
    if clip_denoised:
        pred_x0 = pred_x0.clamp(-1.0, 1.0)
    coef1 = schedule.column("posterior_mean_coef1", timesteps, device)
    coef2 = schedule.column("posterior_mean_coef2", timesteps, device)
    model_mean = coef1 * pred_x0 + coef2 * x_t  # Eq. 7 at the estimate
    true_mean = coef1 * x_start + coef2 * x_t  # Eq. 7 at the data
    model_log_variance = schedule.column("model_log_variance", timesteps, device).expand_as(x_t)
    true_log_variance = schedule.column("posterior_log_variance", timesteps, device).expand_as(x_t)

    kl = _normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)
    kl_bits = kl.flatten(2).mean(dim=2) / LN2
    decoder_nll = -_discretized_gaussian_log_likelihood(x_start.expand_as(x_t), model_mean, 0.5 * model_log_variance)
    decoder_bits = decoder_nll.flatten(2).mean(dim=2) / LN2
    is_decoder = torch.from_numpy(timesteps == 0).to(device).unsqueeze(1)
    mse = (pred_x0 - x_start).square().flatten(2).mean(dim=2)
    return torch.where(is_decoder, decoder_bits, kl_bits), mse


def _prior_bpd(schedule: _Schedule, x0: torch.Tensor) -> torch.Tensor:
    """KL(q(x_T | x_0) || N(0, I)) per image (L_T), bits/dim."""
    last = schedule.num_timesteps - 1
    x_start = x0.to(torch.float64)
    mean = math.sqrt(schedule.alphas_cumprod[last]) * x_start
    log_variance = torch.full_like(x_start, math.log(1.0 - schedule.alphas_cumprod[last]))
    zeros = torch.zeros_like(x_start)
    return _mean_flat_bits(_normal_kl(mean, log_variance, zeros, zeros))


@torch.no_grad()
def variational_bound(
    unet,
    scheduler,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    num_timesteps: int | None = None,
    batch_timesteps: int = 16,
    clip_denoised: bool = True,
    return_terms: bool = False,
) -> dict[str, torch.Tensor]:
    """
    The negative ELBO of images under a DDPM (Ho et al. 2020, Eq. 5), in bits per dimension.

    A Monte Carlo estimate with one x_t ~ q(x_t | x_0) per term, like the official `calc_bpd_loop` (whose
    conventions, listed in this module's docstring, it follows).

    Args:
        unet:
            The noise predictor: `unet(x_t, t).sample` for a batch `x_t` and a tensor of per-sample timesteps, e.g. a
            diffusers `UNet2DModel`. It runs in eval mode (no dropout); a module in training mode is put back after.
        scheduler:
            A [`DDPMPaperScheduler`] (or anything with float `betas` and a config with `variance_type` and
            `prediction_type`); its full training schedule is used, whatever `set_timesteps` was called with.
        x0 (`torch.Tensor`):
            Images `(batch, channels, height, width)` in [-1, 1], from 8-bit data (x / 127.5 - 1).
        generator (`torch.Generator`, *optional*):
            Source of the noise of the x_t.
        num_timesteps (`int`, *optional*):
            Estimate the sum of the T - 1 KL terms from this many of them, by stratified sampling: t = 1..T-1 is cut
            into this many strata, single timesteps at small t where the terms are large and change fast, widening
            quadratically towards t = T-1; one t is drawn uniformly (from `generator`) in each, its term weighted by
            the stratum's size. The estimate is unbiased. `None` (default) evaluates all T terms. The prior and
            decoder terms are always exact.
        batch_timesteps (`int`, defaults to 16):
            Timesteps evaluated per model call (the model sees `batch_timesteps * batch` images at once).
        clip_denoised (`bool`, defaults to `True`):
            Clip the x_0 estimate to [-1, 1] before taking the model mean, as `calc_bpd_loop` does.
        return_terms (`bool`, defaults to `False`):
            Also return the per-timestep terms, as `calc_bpd_loop`'s `terms_bpd` and `mse` (Sec. 4.3, Fig. 5).

    Returns:
        `dict[str, torch.Tensor]`: per-image float64 tensors of shape `(batch,)`: `prior_bpd` (L_T), `decoder_bpd`
        (L_0), `diffusion_bpd` (the sum of the L_{t-1}, t = 2..T in the paper's numbering) and `total_bpd`. With
        `return_terms=True` also `timesteps` (k,), the evaluated t in increasing order (0 = the decoder; all T of
        them unless `num_timesteps`), `terms_bpd` (batch, k), the bound's term at each (L_0 at t = 0, L_{t-1} in
        the paper's numbering otherwise), `term_weights` (k,), each term's weight in the sum (1 without
        `num_timesteps`, so that `prior_bpd + (terms_bpd * term_weights).sum(1) == total_bpd`), and `mse`
        (batch, k), the mean squared error of the x_0 estimate (clipped when `clip_denoised`) in the [-1, 1] scale.
    """
    _check_arguments(unet, scheduler, generator)
    _check_images(x0, unet)
    if isinstance(batch_timesteps, bool) or not isinstance(batch_timesteps, (int, np.integer)) or batch_timesteps < 1:
        raise ValueError(f"`batch_timesteps` must be a positive integer, got {batch_timesteps!r}.")
    schedule = _Schedule(scheduler)
    kl_timesteps, kl_weights = _kl_timesteps(num_timesteps, schedule.num_timesteps, generator)

    timesteps = np.concatenate([[0], kl_timesteps[::-1]])  # the decoder first, then t = T-1 .. 1 as the official loop
    was_training = bool(getattr(unet, "training", False))
    if was_training:  # the official code evaluates with dropout off
        unet.eval()
    try:
        chunks = [
            _terms_bpd(unet, schedule, x0, timesteps[i : i + batch_timesteps], generator, clip_denoised)
            for i in range(0, len(timesteps), batch_timesteps)
        ]
    finally:
        if was_training:
            unet.train()
    terms = torch.cat([chunk[0] for chunk in chunks])
    decoder_bpd = terms[0]
    weights = torch.from_numpy(kl_weights[::-1].copy()).to(terms.device).unsqueeze(1)  # same order as `timesteps`
    diffusion_bpd = (terms[1:] * weights).sum(dim=0)
    prior_bpd = _prior_bpd(schedule, x0).to(decoder_bpd.device)
    results = {
        "prior_bpd": prior_bpd,
        "decoder_bpd": decoder_bpd,
        "diffusion_bpd": diffusion_bpd,
        "total_bpd": prior_bpd + decoder_bpd + diffusion_bpd,
    }
    if return_terms:
        order = np.argsort(timesteps, kind="stable")  # t = 0, 1, ..., T-1
        index = torch.from_numpy(order).to(terms.device)
        all_weights = torch.cat([torch.ones(1, 1, dtype=weights.dtype, device=weights.device), weights])
        results["timesteps"] = torch.from_numpy(timesteps[order].copy())
        results["terms_bpd"] = terms[index].T
        results["term_weights"] = all_weights[index, 0]
        results["mse"] = torch.cat([chunk[1] for chunk in chunks])[index].T
    return results
