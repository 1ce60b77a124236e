# Copyright 2025 The hf-swin-ddpm authors. Licensed under the Apache License, Version 2.0.
"""The DDPM sampler of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", arXiv 2006.11239) as a diffusers
scheduler.

Self-contained (diffusers, torch and numpy only) so that it can be shipped as remote code next to a checkpoint.

Equation numbers refer to the paper:

- Eq. 4: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), with alpha_t = 1 - beta_t and abar_t = prod_s alpha_s.
- Eq. 6-7: the forward-process posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde_t(x_t, x_0), beta_tilde_t I) with
  mu_tilde_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t and
  beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.
- Eq. 11 / Algorithm 2: x_{t-1} = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) + sigma_t z,
  z ~ N(0, I) for t > 1 and z = 0 at the last step, with sigma_t^2 = beta_t ("fixed_large") or beta_tilde_t
  ("fixed_small").

The schedule (betas, alphas and their cumulative products) is computed in float64 as in the official code; the
per-step coefficients are computed from it in float64 and only meet float32 where they multiply the sample.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import SchedulerMixin  # bound here on purpose: diffusers' loader looks the name up in this module
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

# sigma_t^2 choices of diffusers' DDPMScheduler; "learned"/"learned_range" read the variance from the model's extra channels
FIXED_LARGE_VARIANCES = ("fixed_large", "fixed_large_log")
FIXED_SMALL_VARIANCES = ("fixed_small", "fixed_small_log")
LEARNED_VARIANCES = ("learned", "learned_range")
VARIANCE_TYPES = (*FIXED_LARGE_VARIANCES, *FIXED_SMALL_VARIANCES, *LEARNED_VARIANCES)
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
# Settings whose paper default differs from DDPMScheduler's: they always count as set in `_use_default_values`, in both
# directions, so that `from_config` between the two never swaps the sampler silently (see `extract_init_dict`).
PAPER_DEFAULTS_THAT_DIFFER = ("variance_type", "clip_sample", "timestep_spacing")
# diffusers clamps the posterior variance before taking its log; kept so that log-variances stay finite
MIN_POSTERIOR_VARIANCE = 1e-20
# Largest T accepted: the schedule holds a few float64 tables and per-step coefficients of length T, so a config asking
# for billions of steps would exhaust memory. Published DDPMs use T <= 4000.
MAX_NUM_TRAIN_TIMESTEPS = 100_000


@dataclass
class DDPMPaperSchedulerOutput(BaseOutput):
    """
    Output of [`DDPMPaperScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample x_{t-1} of the previous timestep, to be fed to the model at the next step.
        pred_original_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The model's estimate of x_0 at this step (Eq. 15 for an epsilon model), clipped if `clip_sample=True`.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


@dataclass(frozen=True)
class _StepCoefficients:
    """Python-float (float64) coefficients of one reverse step from `timestep` to `prev_timestep`."""

    timestep: int
    prev_timestep: int  # -1 at the last step
    x0_from_sample: float  # 1 / sqrt(abar_t)                                   (inverse of Eq. 4)
    x0_from_epsilon: float  # sqrt(1 / abar_t - 1)
    mean_from_sample: float  # 1 / sqrt(alpha_t)                                  (Algorithm 2)
    mean_from_epsilon: float  # beta_t / (sqrt(alpha_t) sqrt(1 - abar_t))
    posterior_from_x0: float  # sqrt(abar_{t-1}) beta_t / (1 - abar_t)           (Eq. 7)
    posterior_from_sample: float  # sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)
    sqrt_alpha_prod: float  # sqrt(abar_t), for v-prediction
    sqrt_one_minus_alpha_prod: float  # sqrt(1 - abar_t)
    beta: float  # effective beta_t = 1 - abar_t / abar_{t-1} of the step
    posterior_variance: float  # beta_tilde_t (Eq. 7), at least MIN_POSTERIOR_VARIANCE
    adds_noise: bool  # Algorithm 2: False at the last step (or, with `last_step_noise`, where t = 0)
    noise_std: float  # sigma_t of the fixed variance types (learned ones read it from the model)


def _linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> np.ndarray:
    """The paper's schedule: betas linear from `beta_start` to `beta_end`, in float64 as in the official code."""
    return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)


def _scaled_linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> np.ndarray:
    """Betas whose square roots are linear (the official code's "quad", latent diffusion's "scaled_linear")."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2


def _sigmoid_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> np.ndarray:
    """GeoDiff's sigmoid schedule (diffusers' "sigmoid"): beta_start + (beta_end - beta_start) sigmoid(linspace(-6, 6))."""
    logits = np.linspace(-6.0, 6.0, num_train_timesteps, dtype=np.float64)
    return beta_start + (beta_end - beta_start) / (1.0 + np.exp(-logits))


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Algorithm 1 of Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), in float64.

    Shifts and scales sqrt(abar_t) so that sqrt(abar_{T-1}) = 0 (zero terminal SNR, beta_T = 1) and sqrt(abar_0) keeps
    its value, as diffusers' `rescale_zero_terminal_snr` does.
    """
    sqrt_alphas_cumprod = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_alphas_cumprod[0], sqrt_alphas_cumprod[-1]
    sqrt_alphas_cumprod = (sqrt_alphas_cumprod - last) * first / (first - last)
    alphas_cumprod = sqrt_alphas_cumprod**2
    alphas = np.concatenate([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """The cosine schedule of Nichol & Dhariwal 2021 (diffusers' "squaredcos_cap_v2"), in float64."""
    fractions = np.arange(num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps
    alpha_bar = np.cos((fractions + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_real(name: str, value: Any) -> float:
    """`value` as a finite float, or a `ValueError` naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a real number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    return float(value)


def _check_sample(name: str, value: Any) -> None:
    """A tensor the scheduler computes with: floating point (float16, bfloat16, float32, float64), at least 1-d.

    Values are not inspected (NaN or infinity propagate elementwise): checking them would synchronise an accelerator
    on every step.
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")
    if not value.is_floating_point():
        raise ValueError(
            f"`{name}` must be a floating-point tensor (float16, bfloat16, float32 or float64), got {value.dtype}."
        )
    if value.ndim < 1:
        raise ValueError(f"`{name}` must have a batch dimension, (batch_size, ...), got a 0-d tensor.")


def _timestep_value(timestep: Any) -> int:
    """A single timestep (int, numpy integer, or a one-element tensor; integral floats accepted) as an int."""
    value = timestep
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(
                f"`timestep` must be one timestep (an int or a one-element integer tensor), got a {value.dtype} tensor "
                f"of shape {tuple(value.shape)}."
            )
        value = value.item()
    if _is_integer(value):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise ValueError(f"`timestep` must be an integer timestep of the current chain, got {timestep!r}.")


def _check_betas(betas: np.ndarray, argument: str) -> None:
    """The betas of a diffusion must lie in (0, 1) and must not decrease."""
    if not np.all(np.isfinite(betas)) or np.any(betas <= 0.0) or np.any(betas >= 1.0):
        raise ValueError(
            f"`{argument}` must give betas in the open interval (0, 1), got values in [{betas.min()}, {betas.max()}]."
        )
    if np.any(np.diff(betas) < 0.0):
        first = int(np.argmax(np.diff(betas) < 0.0))
        raise ValueError(
            f"`{argument}` must give non-decreasing betas, got beta[{first}]={betas[first]} > "
            f"beta[{first + 1}]={betas[first + 1]}."
        )


class DDPMPaperScheduler(SchedulerMixin, ConfigMixin):
    """
    The sampler of "Denoising Diffusion Probabilistic Models" (Ho et al. 2020), Algorithm 2, as a diffusers scheduler.

    A superset of diffusers' [`DDPMScheduler`] (0.42): it takes every argument of `DDPMScheduler.__init__` with
    diffusers' meaning, and `DDPMPaperScheduler(**ddpm_scheduler.config)` builds the same sampler. It differs in:

    - the defaults, which are the paper's: sigma_t^2 = beta_t (`variance_type="fixed_large"`), no clipping of the x_0
      estimate (`clip_sample=False`), `timestep_spacing="linspace"` (DDPMScheduler: `"fixed_small"`, `True`,
      `"leading"`);
    - the schedule, which lives in float64 (as in the official code; DDPMScheduler's is float32);
    - the last step, which never adds noise (Algorithm 2: z = 0 at the last step) whatever the timestep it lands on.
      DDPMScheduler adds noise at every step with t > 0, so at the last step of a chain that ends above t = 0:
      `"trailing"` spacing (it ends at T / n - 1), `"leading"` spacing with `steps_offset > 0`, or custom
      `timesteps` whose last value is above 0. `last_step_noise=True` gives DDPMScheduler's rule;
    - `fixed_large_log`, which is sigma_t^2 = beta_t computed through its log (GLIDE's "max_log"); DDPMScheduler takes
      the square root of the log-variance there and returns NaN (diffusers issue 14569).

    With the same configuration and generator the draws are DDPMScheduler's, so the samples agree within float32
    rounding, for every chain that ends at t = 0 (`"linspace"`, `"leading"` with `steps_offset=0`, custom timesteps
    ending at 0), and for every chain with `last_step_noise=True`.

    Deliberately stricter than DDPMScheduler, which accepts these silently and then samples from a broken chain, the
    constructor raises a `ValueError` for betas outside the open interval (0, 1) (e.g. `beta_end=2`), for betas that
    decrease, for `trained_betas` whose length is not `num_train_timesteps`, and for an unknown `variance_type`,
    `beta_schedule`, `prediction_type` or `timestep_spacing`.

    The config keeps diffusers' `_use_default_values` bookkeeping (which settings were left at their defaults, so that
    `OtherScheduler.from_config(config)` uses its own defaults for them), except for the three settings whose defaults
    differ from DDPMScheduler's (`variance_type`, `clip_sample`, `timestep_spacing`): those always count as set, in
    both directions, so `DDPMScheduler.from_config(DDPMPaperScheduler().config)` keeps the paper's sampler and
    `DDPMPaperScheduler.from_config(DDPMScheduler().config)` keeps diffusers'.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            T, the number of diffusion steps the model was trained with.
        beta_start (`float`, defaults to 1e-4):
            beta_1 of the schedule.
        beta_end (`float`, defaults to 0.02):
            beta_T of the schedule.
        beta_schedule (`str`, defaults to `"linear"`):
            `"linear"` (the paper's), `"scaled_linear"` (linear in sqrt(beta)), `"squaredcos_cap_v2"` (cosine) or
            `"sigmoid"` (GeoDiff's: beta_start + (beta_end - beta_start) sigmoid(linspace(-6, 6, T))).
        trained_betas (`list[float]`, *optional*):
            Explicit betas (length `num_train_timesteps`), overriding `beta_schedule`.
        variance_type (`str`, defaults to `"fixed_large"`):
            sigma_t^2 of Algorithm 2: `"fixed_large"` is beta_t, `"fixed_small"` is the posterior variance beta_tilde_t
            of Eq. 7 (the paper reports similar results for both); `"fixed_large_log"` / `"fixed_small_log"` are the
            same variances computed through their logs. `"learned"` and `"learned_range"` read the variance from the
            model, whose output then has twice the sample's channels (the prediction, then the variance channels):
            `"learned"` takes those channels as sigma_t^2 (diffusers' meaning), `"learned_range"` as v in [-1, 1]
            with log sigma_t^2 = (v + 1) / 2 log beta_t + (1 - v) / 2 log beta_tilde_t (Nichol & Dhariwal 2021,
            Eq. 15).
        clip_sample (`bool`, defaults to `False`):
            Clip the x_0 estimate to `[-clip_sample_range, clip_sample_range]` and take the posterior mean of Eq. 7
            from it (what the official sampling code does). Algorithm 2 has no clipping.
        clip_sample_range (`float`, defaults to 1.0):
            The bound used when `clip_sample=True`.
        prediction_type (`str`, defaults to `"epsilon"`):
            What the model predicts: `"epsilon"` (the paper's), `"sample"` (x_0) or `"v_prediction"`.
        timestep_spacing (`str`, defaults to `"linspace"`):
            How `set_timesteps(n)` picks n < T timesteps: `"linspace"` (evenly spaced from T - 1 down to 0, both
            included), `"leading"` or `"trailing"` (diffusers' definitions). All give T - 1, ..., 0 for n = T.
        thresholding (`bool`, defaults to `False`):
            Dynamic thresholding of the x_0 estimate (Saharia et al. 2022, Imagen): per sample, s is the
            `dynamic_thresholding_ratio` quantile of |x_0|, clamped to [1, `sample_max_value`], and x_0 becomes
            clamp(x_0, -s, s) / s. Replaces `clip_sample` when on (as in diffusers).
        dynamic_thresholding_ratio (`float`, defaults to 0.995):
            The quantile of dynamic thresholding, in (0, 1].
        sample_max_value (`float`, defaults to 1.0):
            The largest threshold s of dynamic thresholding.
        steps_offset (`int`, defaults to 0):
            Added to every timestep of a `"leading"` chain (diffusers' meaning; ignored by the other spacings).
        rescale_betas_zero_snr (`bool`, defaults to `False`):
            Rescale the betas to zero terminal SNR (Lin et al. 2023, Algorithm 1): abar_{T-1} = 0. x_0 then cannot be
            recovered from an epsilon prediction at t = T - 1, so `step` raises there for `prediction_type="epsilon"`
            (DDPMScheduler returns inf/NaN); use `"v_prediction"` as the paper recommends.
        last_step_noise (`bool`, defaults to `False`):
            Add sigma_t z at the last step of the chain when its timestep is above 0, as DDPMScheduler does. Off, the
            last step is noiseless as in Algorithm 2.
    """

    _compatibles = [
        "DDPMScheduler",
        "DDIMScheduler",
        "DDPMParallelScheduler",
        "DDIMParallelScheduler",
        "PNDMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "UniPCMultistepScheduler",
    ]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_large",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        last_step_noise: bool = False,
    ):
        if not _is_integer(num_train_timesteps):
            raise ValueError(f"`num_train_timesteps` must be an integer, got {num_train_timesteps!r}.")
        if num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be at least 1, got {num_train_timesteps}.")
        if num_train_timesteps > MAX_NUM_TRAIN_TIMESTEPS:
            raise ValueError(
                f"`num_train_timesteps` must be at most {MAX_NUM_TRAIN_TIMESTEPS} (the schedule's tables grow with it), "
                f"got {num_train_timesteps}."
            )
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        for name, flag in (
            ("clip_sample", clip_sample),
            ("thresholding", thresholding),
            ("rescale_betas_zero_snr", rescale_betas_zero_snr),
            ("last_step_noise", last_step_noise),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"`{name}` must be True or False, got {flag!r}.")
        if not _check_real("clip_sample_range", clip_sample_range) > 0:
            raise ValueError(f"`clip_sample_range` must be positive, got {clip_sample_range}.")
        if not 0 < _check_real("dynamic_thresholding_ratio", dynamic_thresholding_ratio) <= 1:
            raise ValueError(f"`dynamic_thresholding_ratio` must lie in (0, 1], got {dynamic_thresholding_ratio}.")
        if not _check_real("sample_max_value", sample_max_value) > 0:
            raise ValueError(f"`sample_max_value` must be positive, got {sample_max_value}.")
        if not _is_integer(steps_offset) or steps_offset < 0:
            raise ValueError(f"`steps_offset` must be a non-negative integer, got {steps_offset!r}.")

        betas = self._make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
        if rescale_betas_zero_snr:
            if num_train_timesteps < 2:
                raise ValueError("`rescale_betas_zero_snr=True` needs `num_train_timesteps` of at least 2.")
            betas = _rescale_zero_terminal_snr(betas)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)

        # float64 schedule, Eq. 4
        self.betas = torch.from_numpy(betas)
        self.alphas = torch.from_numpy(alphas)
        self.alphas_cumprod = torch.from_numpy(alphas_cumprod)
        self.one = torch.tensor(1.0, dtype=torch.float64)

        # standard deviation of the initial noise distribution, x_T ~ N(0, I)
        self.init_noise_sigma = 1.0

        self.custom_timesteps = False
        self.num_inference_steps: int | None = None
        self._set_schedule(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64))

        # The paper's defaults that differ from DDPMScheduler's count as set (see the class docstring).
        defaults = self._internal_dict.get("_use_default_values")
        if defaults is not None:
            kept = [key for key in defaults if key not in PAPER_DEFAULTS_THAT_DIFFER]
            self._internal_dict = FrozenDict({**self._internal_dict, "_use_default_values": kept})

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> tuple:
        """diffusers' `extract_init_dict`, except that `PAPER_DEFAULTS_THAT_DIFFER` are taken even when the source
        config left them at its defaults.

        diffusers otherwise drops the values another scheduler instance did not set explicitly, so
        `DDPMPaperScheduler.from_config(DDPMScheduler().config)` would silently trade diffusers' defaults
        (`fixed_small`, `clip_sample=True`, `leading`) for the paper's. Every other default is handled as diffusers
        does.
        """
        defaults = config_dict.get("_use_default_values")
        if defaults is not None:
            kept = [key for key in defaults if key not in PAPER_DEFAULTS_THAT_DIFFER]
            config_dict = {**config_dict, "_use_default_values": kept}
        return super().extract_init_dict(config_dict, **kwargs)

    @staticmethod
    def _make_betas(
        num_train_timesteps: int,
        beta_start: float,
        beta_end: float,
        beta_schedule: str,
        trained_betas: np.ndarray | list[float] | None,
    ) -> np.ndarray:
        """Builds the float64 betas, checking that they lie in (0, 1) and do not decrease."""
        if trained_betas is not None:
            try:
                betas = np.asarray(trained_betas, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"`trained_betas` must be a list of numbers, got {trained_betas!r:.80} ({error})."
                ) from None
            if betas.shape != (num_train_timesteps,):
                raise ValueError(
                    f"`trained_betas` must have shape ({num_train_timesteps},) to match `num_train_timesteps`, "
                    f"got {betas.shape}."
                )
            _check_betas(betas, "trained_betas")
            return betas
        _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        if beta_schedule == "squaredcos_cap_v2":
            betas = _cosine_betas(num_train_timesteps)
            _check_betas(betas, "beta_schedule")
            return betas
        beta_start, beta_end = _check_real("beta_start", beta_start), _check_real("beta_end", beta_end)
        if not 0.0 < beta_start < 1.0:
            raise ValueError(f"`beta_start` must lie in (0, 1), got {beta_start}.")
        if not 0.0 < beta_end < 1.0:
            raise ValueError(f"`beta_end` must lie in (0, 1), got {beta_end}.")
        if beta_end < beta_start:
            raise ValueError(
                f"`beta_end` must be at least `beta_start` (betas may not decrease), got beta_start={beta_start}, "
                f"beta_end={beta_end}."
            )
        if beta_schedule == "linear":
            return _linear_betas(beta_start, beta_end, num_train_timesteps)
        if beta_schedule == "sigmoid":
            return _sigmoid_betas(beta_start, beta_end, num_train_timesteps)
        return _scaled_linear_betas(beta_start, beta_end, num_train_timesteps)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """The DDPM model takes x_t unscaled; present for interchangeability with other schedulers."""
        return sample

    # ------------------------------------------------------------------------------------------------ timesteps

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """
        Sets the timesteps of the reverse chain; call before sampling.

        With n = T steps this is the paper's chain T - 1, ..., 0 (0-based). With n < T the chain is a strided
        subsequence tau_1 > ... > tau_n of the training timesteps (respacing), and each step uses the effective
        beta = 1 - abar_{tau_i} / abar_{tau_{i+1}} computed from the cumulative products, which makes the respaced
        chain a DDPM in its own right (so sigma^2 = beta keeps its meaning).

        Args:
            num_inference_steps (`int`, *optional*):
                The number of steps n, 1 <= n <= `num_train_timesteps`. Exclusive with `timesteps`.
            device (`str` or `torch.device`, *optional*):
                Where to put `self.timesteps`.
            timesteps (`list[int]`, *optional*):
                Explicit strictly decreasing timesteps in [0, T - 1]. Exclusive with `num_inference_steps`.
        """
        num_train_timesteps = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Pass only one of `num_inference_steps` and `timesteps`.")
        if timesteps is not None:
            chain = self._timesteps_array(timesteps)
            if np.any(np.diff(chain) >= 0):
                raise ValueError(f"`timesteps` must be strictly decreasing, got {chain.tolist()}.")
            if chain[0] >= num_train_timesteps or chain[-1] < 0:
                raise ValueError(
                    f"`timesteps` must lie in [0, {num_train_timesteps - 1}], got {chain[0]} ... {chain[-1]}."
                )
            self.custom_timesteps = True
            self.num_inference_steps = len(chain)
        else:
            if num_inference_steps is None:
                raise ValueError("Pass one of `num_inference_steps` or `timesteps`.")
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise ValueError(f"`num_inference_steps` must be an integer, got {num_inference_steps!r}.")
            if not 1 <= num_inference_steps <= num_train_timesteps:
                raise ValueError(
                    f"`num_inference_steps` must lie in [1, {num_train_timesteps}] (`num_train_timesteps`), "
                    f"got {num_inference_steps}."
                )
            chain = self._spaced_timesteps(int(num_inference_steps))
            self.custom_timesteps = False
            self.num_inference_steps = int(num_inference_steps)
        self._set_schedule(chain, device=device)

    @staticmethod
    def _timesteps_array(timesteps: Any) -> np.ndarray:
        """Explicit timesteps as a 1-d int64 array, or a `ValueError` naming the argument."""
        expected = f"`timesteps` must be a non-empty list of integers, got {timesteps!r:.80}"
        if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__len__"):
            raise ValueError(f"{expected}.")
        try:
            values = [_timestep_value(t) for t in timesteps]
        except ValueError:
            raise ValueError(f"{expected}.") from None
        if not values:
            raise ValueError(f"{expected}.")
        return np.asarray(values, dtype=np.int64)

    def _spaced_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """Strictly decreasing timesteps for `num_inference_steps` steps, following `timestep_spacing`."""
        num_train_timesteps = self.config.num_train_timesteps
        spacing = self.config.timestep_spacing
        if num_inference_steps == num_train_timesteps:
            chain = np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64)
            return self._offset_leading(chain) if spacing == "leading" else chain
        if spacing == "linspace":
            if num_inference_steps == 1:  # np.linspace would give [0]; one step from pure noise starts at T - 1
                return np.array([num_train_timesteps - 1], dtype=np.int64)
            chain = np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1]
        elif spacing == "leading":
            step_ratio = num_train_timesteps // num_inference_steps
            chain = self._offset_leading((np.arange(0, num_inference_steps) * step_ratio).round()[::-1])
        else:  # trailing
            step_ratio = num_train_timesteps / num_inference_steps
            # T - k * T / n for k < n: diffusers' np.arange(T, 0, -T / n) gives n + 1 values (the last -1) when the
            # float step rounds down, e.g. T = 183, n = 21
            chain = np.round(num_train_timesteps - np.arange(num_inference_steps) * step_ratio) - 1
        chain = chain.astype(np.int64)
        if np.any(np.diff(chain) >= 0):  # rounding collisions; cannot happen for n <= T, kept as a guard
            raise ValueError(f"`num_inference_steps`={num_inference_steps} gives repeated timesteps with {spacing}.")
        return chain

    def _offset_leading(self, chain: np.ndarray) -> np.ndarray:
        """A `"leading"` chain shifted by `steps_offset` (diffusers' meaning), which must stay below T."""
        offset = self.config.steps_offset
        num_train_timesteps = self.config.num_train_timesteps
        if offset and chain[0] + offset >= num_train_timesteps:
            raise ValueError(
                f"`steps_offset`={offset} shifts the leading chain's first timestep {int(chain[0])} to "
                f"{int(chain[0]) + offset}, past T - 1 = {num_train_timesteps - 1}; use fewer `num_inference_steps` or "
                "a smaller `steps_offset`."
            )
        return chain + offset

    def _set_schedule(self, chain: np.ndarray, device: str | torch.device | None = None) -> None:
        """Precomputes, in float64, the coefficients of every step of the chain `chain` (decreasing timesteps)."""
        alphas_cumprod = self.alphas_cumprod.numpy()
        prev_chain = np.append(chain[1:], -1)
        alpha_prod = alphas_cumprod[chain]
        alpha_prod_prev = np.where(prev_chain >= 0, alphas_cumprod[np.maximum(prev_chain, 0)], 1.0)
        beta = 1.0 - alpha_prod / alpha_prod_prev  # effective beta of the (respaced) step
        alpha = 1.0 - beta
        posterior_variance = (1.0 - alpha_prod_prev) / (1.0 - alpha_prod) * beta  # beta_tilde, Eq. 7
        posterior_variance = np.maximum(posterior_variance, MIN_POSTERIOR_VARIANCE)
        variance = beta if self.config.variance_type in FIXED_LARGE_VARIANCES else posterior_variance
        # Algorithm 2: z = 0 at the last step; DDPMScheduler's rule (`last_step_noise`): z = 0 where t = 0
        adds_noise = chain > 0 if self.config.last_step_noise else prev_chain >= 0
        with np.errstate(divide="ignore"):  # abar_{T-1} = 0 under `rescale_betas_zero_snr`: inf where never used
            x0_from_sample = 1.0 / np.sqrt(alpha_prod)
            x0_from_epsilon = np.sqrt(1.0 / alpha_prod - 1.0)
            mean_from_sample = 1.0 / np.sqrt(alpha)
            mean_from_epsilon = beta / (np.sqrt(alpha) * np.sqrt(1.0 - alpha_prod))

        self._steps = [
            _StepCoefficients(
                timestep=int(chain[i]),
                prev_timestep=int(prev_chain[i]),
                x0_from_sample=float(x0_from_sample[i]),
                x0_from_epsilon=float(x0_from_epsilon[i]),
                mean_from_sample=float(mean_from_sample[i]),
                mean_from_epsilon=float(mean_from_epsilon[i]),
                posterior_from_x0=float(np.sqrt(alpha_prod_prev[i]) * beta[i] / (1.0 - alpha_prod[i])),
                posterior_from_sample=float(np.sqrt(alpha[i]) * (1.0 - alpha_prod_prev[i]) / (1.0 - alpha_prod[i])),
                sqrt_alpha_prod=float(np.sqrt(alpha_prod[i])),
                sqrt_one_minus_alpha_prod=float(np.sqrt(1.0 - alpha_prod[i])),
                beta=float(beta[i]),
                posterior_variance=float(posterior_variance[i]),
                adds_noise=bool(adds_noise[i]),
                noise_std=float(np.sqrt(variance[i])),
            )
            for i in range(len(chain))
        ]
        self._step_index_of = {step.timestep: i for i, step in enumerate(self._steps)}
        self.timesteps = torch.from_numpy(chain.copy()).to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> torch.Tensor:
        """The timestep that follows `timestep` in the current chain, -1 after the last step.

        A 0-d int64 tensor on the device of `self.timesteps`, as DDPMScheduler returns after `set_timesteps`.
        """
        previous = self._steps[self._index_of(timestep)].prev_timestep
        return torch.tensor(previous, dtype=torch.int64, device=self.timesteps.device)

    def _get_variance(
        self,
        t: int | torch.Tensor,
        predicted_variance: torch.Tensor | None = None,
        variance_type: str | None = None,
    ) -> torch.Tensor:
        """The variance term of the step at `t`, with DDPMScheduler's `_get_variance` return conventions.

        `"fixed_small"`: beta_tilde_t; `"fixed_large"`: beta_t; `"fixed_small_log"`: sqrt(beta_tilde_t) (a standard
        deviation, as diffusers returns it); `"fixed_large_log"`: log beta_t; `"learned"`: `predicted_variance`;
        `"learned_range"`: the interpolated log-variance. beta_tilde_t is clamped to at least 1e-20 as in diffusers.
        """
        variance_type = self.config.variance_type if variance_type is None else variance_type
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        coefficients = self._steps[self._index_of(t)]
        if variance_type in LEARNED_VARIANCES:
            if predicted_variance is None:
                raise ValueError(f"`variance_type={variance_type!r}` needs `predicted_variance`.")
            if variance_type == "learned":
                return predicted_variance
            return self._learned_range_log_variance(predicted_variance, coefficients)
        value = {
            "fixed_small": coefficients.posterior_variance,
            "fixed_small_log": math.sqrt(coefficients.posterior_variance),
            "fixed_large": coefficients.beta,
            "fixed_large_log": math.log(coefficients.beta),
        }[variance_type]
        return torch.tensor(value, dtype=torch.float64)

    @staticmethod
    def _learned_range_log_variance(fraction: torch.Tensor, coefficients: _StepCoefficients) -> torch.Tensor:
        """log sigma_t^2 = (v + 1) / 2 log beta_t + (1 - v) / 2 log beta_tilde_t (Nichol & Dhariwal 2021, Eq. 15)."""
        weight = (fraction + 1) / 2
        log_beta, log_beta_tilde = math.log(coefficients.beta), math.log(coefficients.posterior_variance)
        return weight * log_beta + (1 - weight) * log_beta_tilde

    def _index_of(self, timestep: int | torch.Tensor) -> int:
        value = _timestep_value(timestep)
        try:
            return self._step_index_of[value]
        except KeyError:
            raise ValueError(
                f"`timestep` {value} is not in the current chain ({len(self._steps)} steps from "
                f"{self._steps[0].timestep} to {self._steps[-1].timestep}); call `set_timesteps` first."
            ) from None

    # ------------------------------------------------------------------------------------------------ sampling

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMPaperSchedulerOutput | tuple:
        """
        One step x_t -> x_{t-1} of Algorithm 2 (Eq. 11):
        x_{t-1} = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta) + sigma_t z, with z = 0 at the
        last step (with `last_step_noise=True`: z = 0 where t = 0, DDPMScheduler's rule).

        For an epsilon model without clipping this is Algorithm 2 verbatim. With `clip_sample=True` or
        `thresholding=True`, or for `"sample"`/`"v_prediction"` models, the mean is the posterior mean of Eq. 7 at the
        (clipped or thresholded) x_0 estimate, which equals Algorithm 2's mean when nothing is clipped. The noise z is drawn like diffusers'
        `DDPMScheduler.step` draws it (`randn_tensor(model_output.shape, generator=...)`, after the mean), so the
        same generator gives the same chain.

        Args:
            model_output (`torch.Tensor`):
                The model's prediction at x_t (eps_theta(x_t, t) for an epsilon model), shaped like `sample`; for
                `variance_type="learned"`/`"learned_range"` followed by as many variance channels (dim 1).
            timestep (`int` or `torch.Tensor`):
                The current timestep t, one of `self.timesteps`.
            sample (`torch.Tensor`):
                x_t.
            generator (`torch.Generator` or list of them, *optional*):
                Source of z; a list gives one generator per sample.
            return_dict (`bool`, defaults to `True`):
                Return a [`DDPMPaperSchedulerOutput`] rather than a tuple.

        Returns:
            [`DDPMPaperSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)`.
        """
        _check_sample("model_output", model_output)
        _check_sample("sample", sample)
        if isinstance(generator, list) and len(generator) != sample.shape[0]:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators for a batch of {sample.shape[0]}; "
                "pass one per sample."
            )
        model_output, predicted_variance = self._split_variance(model_output, sample)
        coefficients = self._steps[self._index_of(timestep)]

        pred_original_sample = self._predict_original_sample(model_output, sample, coefficients)
        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            clip_range = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-clip_range, clip_range)

        if self.config.prediction_type == "epsilon" and not (self.config.clip_sample or self.config.thresholding):
            # Algorithm 2, line 4
            pred_prev_sample = torch.sub(
                sample * coefficients.mean_from_sample, model_output, alpha=coefficients.mean_from_epsilon
            )
        else:
            # the posterior mean mu_tilde_t(x_t, x_0) of Eq. 7
            pred_prev_sample = torch.add(
                pred_original_sample * coefficients.posterior_from_x0,
                sample,
                alpha=coefficients.posterior_from_sample,
            )

        if coefficients.adds_noise:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            pred_prev_sample = pred_prev_sample + self._noise_std(coefficients, predicted_variance) * noise

        if not return_dict:
            return (pred_prev_sample, pred_original_sample)
        return DDPMPaperSchedulerOutput(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)

    def _split_variance(
        self, model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prediction and, for the learned variance types, the variance channels that follow it."""
        learned = self.config.variance_type in LEARNED_VARIANCES
        if learned and sample.ndim < 2:
            raise ValueError(
                f"`variance_type={self.config.variance_type!r}` needs samples with a channel dimension "
                f"(batch_size, channels, ...), got shape {tuple(sample.shape)}."
            )
        if learned and model_output.ndim == sample.ndim and model_output.shape[1] == 2 * sample.shape[1]:
            prediction, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
            if prediction.shape == sample.shape:
                return prediction, predicted_variance
        if learned:
            expected = (sample.shape[0], 2 * sample.shape[1], *sample.shape[2:])
            raise ValueError(
                f"`model_output` must have shape {expected} for `variance_type={self.config.variance_type!r}` (the "
                f"prediction, then as many variance channels), got {tuple(model_output.shape)}."
            )
        if model_output.shape != sample.shape:
            raise ValueError(
                f"`model_output` must have the shape of `sample` {tuple(sample.shape)}, got "
                f"{tuple(model_output.shape)} (for a model with learned variances use `variance_type='learned'` or "
                "`'learned_range'`)."
            )
        return model_output, None

    def _noise_std(self, coefficients: _StepCoefficients, predicted_variance: torch.Tensor | None) -> Any:
        """sigma_t: a float for the fixed variance types, a tensor from the model's variance channels otherwise."""
        if self.config.variance_type == "learned":
            return predicted_variance**0.5  # diffusers' meaning: the channels are sigma_t^2
        if self.config.variance_type == "learned_range":
            return torch.exp(0.5 * self._learned_range_log_variance(predicted_variance, coefficients))
        return coefficients.noise_std

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Saharia et al. 2022, Sec. 2.3), per sample, as diffusers computes it.

        s = the `dynamic_thresholding_ratio` quantile of |x_0| over each sample, clamped to [1, `sample_max_value`];
        x_0 -> clamp(x_0, -s, s) / s. With s = 1 this is plain clipping to [-1, 1].
        """
        dtype = sample.dtype
        flat = sample.reshape(sample.shape[0], -1)
        if dtype not in (torch.float32, torch.float64):
            flat = flat.float()  # quantile and clamp need float32 on the CPU
        threshold = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        threshold = torch.clamp(threshold, min=1, max=self.config.sample_max_value).unsqueeze(1)
        flat = torch.clamp(flat, -threshold, threshold) / threshold
        return flat.reshape(sample.shape).to(dtype)

    def _predict_original_sample(
        self, model_output: torch.Tensor, sample: torch.Tensor, coefficients: _StepCoefficients
    ) -> torch.Tensor:
        """The x_0 estimate: Eq. 4 solved for x_0 (Eq. 15) for an epsilon model."""
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            if coefficients.sqrt_alpha_prod == 0.0:
                raise ValueError(
                    f"x_0 cannot be recovered from an epsilon prediction at t = {coefficients.timestep}, where "
                    "abar_t = 0 (`rescale_betas_zero_snr=True`); use `prediction_type='v_prediction'` (as Lin et al. "
                    "2023 recommend) or start the chain below that timestep."
                )
            return torch.sub(sample * coefficients.x0_from_sample, model_output, alpha=coefficients.x0_from_epsilon)
        if prediction_type == "sample":
            return model_output
        # v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0  =>  x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v
        return torch.sub(
            sample * coefficients.sqrt_alpha_prod, model_output, alpha=coefficients.sqrt_one_minus_alpha_prod
        )

    # ------------------------------------------------------------------------------------------------ training

    def _gather(self, table: torch.Tensor, timesteps: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """`table[timesteps]` (float64 on the CPU), cast to `like`'s dtype and device, shaped to broadcast."""
        if isinstance(timesteps, (bool, np.bool_)) or not isinstance(timesteps, (int, np.integer, torch.Tensor)):
            raise ValueError(
                f"`timesteps` must be an int or an integer tensor, got {timesteps!r:.80} ({type(timesteps).__name__})."
            )
        timesteps = torch.as_tensor(timesteps)
        if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dtype == torch.bool:
            raise ValueError(f"`timesteps` must be integers, got dtype {timesteps.dtype}.")
        timesteps = timesteps.to("cpu", torch.long).flatten()
        num_train_timesteps = self.config.num_train_timesteps
        if timesteps.numel() and (timesteps.min() < 0 or timesteps.max() >= num_train_timesteps):
            raise ValueError(
                f"`timesteps` must lie in [0, {num_train_timesteps - 1}], got values in "
                f"[{int(timesteps.min())}, {int(timesteps.max())}]."
            )
        if timesteps.numel() not in (1, like.shape[0]):
            raise ValueError(
                f"`timesteps` must hold one timestep or one per sample ({like.shape[0]}), got {timesteps.numel()}."
            )
        values = table[timesteps].to(device=like.device, dtype=like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int
    ) -> torch.Tensor:
        """
        Samples q(x_t | x_0) in closed form (Eq. 4): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise.

        Args:
            original_samples (`torch.Tensor`): x_0, shape `(batch_size, ...)`.
            noise (`torch.Tensor`): eps ~ N(0, I), shaped like `original_samples`.
            timesteps (`torch.Tensor` or `int`): t, one per sample or one for all, in [0, T - 1].
        """
        _check_sample("original_samples", original_samples)
        _check_sample("noise", noise)
        if noise.shape != original_samples.shape:
            raise ValueError(
                f"`noise` must have the shape of `original_samples` {tuple(original_samples.shape)}, got "
                f"{tuple(noise.shape)}."
            )
        sqrt_alpha_prod = self._gather(self.alphas_cumprod.sqrt(), timesteps, original_samples)
        sqrt_one_minus_alpha_prod = self._gather((1.0 - self.alphas_cumprod).sqrt(), timesteps, original_samples)
        return sqrt_alpha_prod * original_samples + sqrt_one_minus_alpha_prod * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """The v-prediction target v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (for `prediction_type="v_prediction"`)."""
        _check_sample("sample", sample)
        _check_sample("noise", noise)
        if noise.shape != sample.shape:
            raise ValueError(
                f"`noise` must have the shape of `sample` {tuple(sample.shape)}, got {tuple(noise.shape)}."
            )
        sqrt_alpha_prod = self._gather(self.alphas_cumprod.sqrt(), timesteps, sample)
        sqrt_one_minus_alpha_prod = self._gather((1.0 - self.alphas_cumprod).sqrt(), timesteps, sample)
        return sqrt_alpha_prod * noise - sqrt_one_minus_alpha_prod * sample
