"""The Forward process tab (`/forward_diffusion`): a draw of q(x_t | x_0) (Eq. 4 of Ho et al. 2020), the
alpha-bar / SNR curve over t, and the numbers at t."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import PIL.Image
import torch
from image_inputs import MAX_SEED, figure_to_image, prepare_image, require_whole_number
from matplotlib.figure import Figure

from hf_swin_ddpm import DDPMPaperScheduler


def image_to_model_scale(image: PIL.Image.Image) -> torch.Tensor:
    """An RGB image as a (1, 3, H, W) float64 tensor in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float64) / 127.5 - 1.0)
    return pixels.permute(2, 0, 1)[None]


def model_scale_to_image(sample: torch.Tensor) -> PIL.Image.Image:
    """A (1, 3, H, W) tensor in [-1, 1] (clipped) as an RGB image."""
    pixels = ((sample[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(pixels)


def noise_schedule_plot(alphas_cumprod: np.ndarray, timestep: int) -> PIL.Image.Image:
    """alpha-bar_t (left axis) and SNR_t = abar_t / (1 - abar_t) (right axis, log) over t, marked at `timestep`."""
    steps = np.arange(len(alphas_cumprod))
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    figure = Figure(figsize=(6.4, 3.2))
    axis = figure.subplots()
    axis.plot(steps, alphas_cumprod, color="#4361ee", linewidth=2, label=r"$\bar\alpha_t$")
    axis.set_xlabel("timestep t (0-based)")
    axis.set_ylabel(r"$\bar\alpha_t$ (signal variance)", color="#4361ee")
    axis.set_ylim(-0.02, 1.02)
    snr_axis = axis.twinx()
    snr_axis.semilogy(steps, snr, color="#e63946", linewidth=2, label="SNR")
    snr_axis.set_ylabel(r"SNR = $\bar\alpha_t / (1-\bar\alpha_t)$", color="#e63946")
    axis.axvline(timestep, color="#333333", linestyle="--", linewidth=1)
    axis.plot([timestep], [alphas_cumprod[timestep]], "o", color="#4361ee", markersize=7)
    snr_axis.plot([timestep], [snr[timestep]], "o", color="#e63946", markersize=7)
    axis.set_title(
        rf"t = {timestep}:  $\bar\alpha_t$ = {alphas_cumprod[timestep]:.4g},  SNR = {snr[timestep]:.3g}", fontsize=10
    )
    axis.grid(alpha=0.3)
    return figure_to_image(figure)


def forward_summary(alphas_cumprod: np.ndarray, timestep: int) -> str:
    """The numbers of q(x_t | x_0) at `timestep`, as Markdown."""
    alpha_bar = float(alphas_cumprod[timestep])
    snr = alpha_bar / (1.0 - alpha_bar)
    return (
        f"**t = {timestep}** of {len(alphas_cumprod)} · ᾱₜ = {alpha_bar:.5g} · "
        f"x₀ scaled by √ᾱₜ = {math.sqrt(alpha_bar):.4f} · noise std √(1−ᾱₜ) = {math.sqrt(1.0 - alpha_bar):.4f} · "
        f"SNR = {snr:.4g} ({10.0 * math.log10(snr):+.1f} dB)"
    )


def forward_diffusion(
    scheduler: DDPMPaperScheduler, image: PIL.Image.Image | np.ndarray | None, timestep: Any, noise_seed: Any = 0
) -> tuple[PIL.Image.Image, PIL.Image.Image, str]:
    """The `/forward_diffusion` route: x_t ~ q(x_t | x_0) (Eq. 4) for the image, the schedule plot, the numbers."""
    num_train_timesteps = scheduler.config.num_train_timesteps
    timestep = require_whole_number(timestep, "t", 0, num_train_timesteps - 1)
    noise_seed = require_whole_number(noise_seed, "Noise seed", 0, MAX_SEED)
    x0 = image_to_model_scale(prepare_image(image))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(noise_seed), dtype=torch.float64)
    noisy = scheduler.add_noise(x0, noise, torch.tensor([timestep]))
    alphas_cumprod = scheduler.alphas_cumprod.numpy()
    return (
        model_scale_to_image(noisy),
        noise_schedule_plot(alphas_cumprod, timestep),
        forward_summary(alphas_cumprod, timestep),
    )


def forward_how_it_works(scheduler: DDPMPaperScheduler) -> str:
    alphas_cumprod = scheduler.alphas_cumprod.numpy()
    last_snr = alphas_cumprod[-1] / (1.0 - alphas_cumprod[-1])
    return f"""
### How it works
The forward process needs no network: q(xₜ | x₀) = N(√ᾱₜ x₀, (1−ᾱₜ) I) with ᾱₜ = ∏ₛ₌₁ᵗ (1−βₛ) (Eq. 4 of the
paper), so xₜ = √ᾱₜ x₀ + √(1−ᾱₜ) ε is drawn in one shot for any t; this is how training pairs are made.
With the linear β schedule, ᾱₜ falls slowly at first and then fast; at the last step the SNR is
{last_snr:.1e}, so x_T is all but pure N(0, I) noise, the starting point of sampling.
Pixels are scaled to [−1, 1] and the shown xₜ is clipped to that range; t counts from 0 (the paper's t − 1).
"""
