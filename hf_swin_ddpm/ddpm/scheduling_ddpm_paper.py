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

VARIANCE_TYPES = ("fixed_large", "fixed_small")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
# options of diffusers' DDPMScheduler this scheduler does not implement, with the value that means "off"
_UNSUPPORTED_DIFFUSERS_OPTIONS = {"thresholding": False, "rescale_betas_zero_snr": False, "steps_offset": 0}
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
    noise_std: float  # sigma_t; 0 at the last step


def _linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> np.ndarray:
    """The paper's schedule: betas linear from `beta_start` to `beta_end`, in float64 as in the official code."""
    return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)


def _scaled_linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> np.ndarray:
    """Betas whose square roots are linear (the official code's "quad", latent diffusion's "scaled_linear")."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2


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

    Unlike diffusers' [`DDPMScheduler`], the schedule lives in float64 (as in the official code), the defaults are the
    paper's (sigma_t^2 = beta_t, no clipping of the x_0 estimate) and the last step never adds noise, whatever the
    timestep spacing. With the same configuration its draws are those of [`DDPMScheduler`]: the same generator gives
    the same samples within float32 rounding. The configuration keys are diffusers' names, so a config moves between
    the two schedulers with `from_config` unchanged.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            T, the number of diffusion steps the model was trained with.
        beta_start (`float`, defaults to 1e-4):
            beta_1 of the schedule.
        beta_end (`float`, defaults to 0.02):
            beta_T of the schedule.
        beta_schedule (`str`, defaults to `"linear"`):
            `"linear"` (the paper's), `"scaled_linear"` (linear in sqrt(beta)) or `"squaredcos_cap_v2"` (cosine).
        trained_betas (`list[float]`, *optional*):
            Explicit betas (length `num_train_timesteps`), overriding `beta_schedule`.
        variance_type (`str`, defaults to `"fixed_large"`):
            sigma_t^2 of Algorithm 2: `"fixed_large"` is beta_t, `"fixed_small"` is the posterior variance beta_tilde_t
            of Eq. 7. The paper reports similar results for both.
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
        if not isinstance(clip_sample, (bool, np.bool_)):
            raise ValueError(f"`clip_sample` must be True or False, got {clip_sample!r}.")
        if not _check_real("clip_sample_range", clip_sample_range) > 0:
            raise ValueError(f"`clip_sample_range` must be positive, got {clip_sample_range}.")

        betas = self._make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
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

        # Our defaults are the paper's, not diffusers': mark every value as explicit so that `from_config` carries
        # them to another scheduler instead of letting it fall back to its own defaults (fixed_small, clipping).
        self._internal_dict = FrozenDict({k: v for k, v in self._internal_dict.items() if k != "_use_default_values"})

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> tuple:
        """Takes every value of a compatible scheduler's config, including those it left at its defaults.

        diffusers otherwise drops the values another scheduler instance did not set explicitly, so
        `DDPMPaperScheduler.from_config(DDPMScheduler().config)` would silently trade diffusers' defaults
        (`fixed_small`, `clip_sample=True`, `leading`) for the paper's.
        """
        config_dict = {k: v for k, v in config_dict.items() if k != "_use_default_values"}
        for key, neutral in _UNSUPPORTED_DIFFUSERS_OPTIONS.items():
            value = kwargs.get(key, config_dict.get(key, neutral))
            if value != neutral:
                raise ValueError(f"`{key}`={value!r} is not supported by {cls.__name__} (only {neutral!r}).")
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
            return np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64)
        if spacing == "linspace":
            if num_inference_steps == 1:  # np.linspace would give [0]; one step from pure noise starts at T - 1
                return np.array([num_train_timesteps - 1], dtype=np.int64)
            chain = np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1]
        elif spacing == "leading":
            step_ratio = num_train_timesteps // num_inference_steps
            chain = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1]
        else:  # trailing
            step_ratio = num_train_timesteps / num_inference_steps
            # T - k * T / n for k < n: diffusers' np.arange(T, 0, -T / n) gives n + 1 values (the last -1) when the
            # float step rounds down, e.g. T = 183, n = 21
            chain = np.round(num_train_timesteps - np.arange(num_inference_steps) * step_ratio) - 1
        chain = chain.astype(np.int64)
        if np.any(np.diff(chain) >= 0):  # rounding collisions; cannot happen for n <= T, kept as a guard
            raise ValueError(f"`num_inference_steps`={num_inference_steps} gives repeated timesteps with {spacing}.")
        return chain

    def _set_schedule(self, chain: np.ndarray, device: str | torch.device | None = None) -> None:
        """Precomputes, in float64, the coefficients of every step of the chain `chain` (decreasing timesteps)."""
        alphas_cumprod = self.alphas_cumprod.numpy()
        prev_chain = np.append(chain[1:], -1)
        alpha_prod = alphas_cumprod[chain]
        alpha_prod_prev = np.where(prev_chain >= 0, alphas_cumprod[np.maximum(prev_chain, 0)], 1.0)
        beta = 1.0 - alpha_prod / alpha_prod_prev  # effective beta of the (respaced) step
        alpha = 1.0 - beta
        posterior_variance = (1.0 - alpha_prod_prev) / (1.0 - alpha_prod) * beta  # beta_tilde, Eq. 7
        variance = beta if self.config.variance_type == "fixed_large" else posterior_variance
        noise_std = np.where(prev_chain >= 0, np.sqrt(variance), 0.0)  # Algorithm 2: z = 0 at the last step

        self._steps = [
            _StepCoefficients(
                timestep=int(chain[i]),
                prev_timestep=int(prev_chain[i]),
                x0_from_sample=float(1.0 / np.sqrt(alpha_prod[i])),
                x0_from_epsilon=float(np.sqrt(1.0 / alpha_prod[i] - 1.0)),
                mean_from_sample=float(1.0 / np.sqrt(alpha[i])),
                mean_from_epsilon=float(beta[i] / (np.sqrt(alpha[i]) * np.sqrt(1.0 - alpha_prod[i]))),
                posterior_from_x0=float(np.sqrt(alpha_prod_prev[i]) * beta[i] / (1.0 - alpha_prod[i])),
                posterior_from_sample=float(np.sqrt(alpha[i]) * (1.0 - alpha_prod_prev[i]) / (1.0 - alpha_prod[i])),
                sqrt_alpha_prod=float(np.sqrt(alpha_prod[i])),
                sqrt_one_minus_alpha_prod=float(np.sqrt(1.0 - alpha_prod[i])),
                noise_std=float(noise_std[i]),
            )
            for i in range(len(chain))
        ]
        self._step_index_of = {step.timestep: i for i, step in enumerate(self._steps)}
        self.timesteps = torch.from_numpy(chain.copy()).to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep that follows `timestep` in the current chain, -1 after the last step."""
        return self._steps[self._index_of(timestep)].prev_timestep

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
        last step.

        For an epsilon model without clipping this is Algorithm 2 verbatim. With `clip_sample=True`, or for
        `"sample"`/`"v_prediction"` models, the mean is the posterior mean of Eq. 7 at the (clipped) x_0 estimate,
        which equals Algorithm 2's mean when nothing is clipped. The noise z is drawn like diffusers'
        `DDPMScheduler.step` draws it (`randn_tensor(model_output.shape, generator=...)`, after the mean), so the
        same generator gives the same chain.

        Args:
            model_output (`torch.Tensor`):
                The model's prediction at x_t (eps_theta(x_t, t) for an epsilon model), shaped like `sample`.
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
        if model_output.shape != sample.shape:
            raise ValueError(
                f"`model_output` must have the shape of `sample` {tuple(sample.shape)}, got "
                f"{tuple(model_output.shape)} (learned variances are not supported)."
            )
        coefficients = self._steps[self._index_of(timestep)]

        pred_original_sample = self._predict_original_sample(model_output, sample, coefficients)
        if self.config.clip_sample:
            clip_range = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-clip_range, clip_range)

        if self.config.prediction_type == "epsilon" and not self.config.clip_sample:
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

        if coefficients.prev_timestep >= 0:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            pred_prev_sample = pred_prev_sample + coefficients.noise_std * noise

        if not return_dict:
            return (pred_prev_sample, pred_original_sample)
        return DDPMPaperSchedulerOutput(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)

    def _predict_original_sample(
        self, model_output: torch.Tensor, sample: torch.Tensor, coefficients: _StepCoefficients
    ) -> torch.Tensor:
        """The x_0 estimate: Eq. 4 solved for x_0 (Eq. 15) for an epsilon model."""
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
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
