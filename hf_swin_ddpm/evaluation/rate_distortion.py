"""Progressive coding (Ho et al. 2020, Sec. 4.3): the rate-distortion curve of Fig. 5 from the bound's terms.

Sending x_T, then x_{T-1}, ..., costs the bound's terms in turn: after the step at t the receiver holds
rate(t) = L_T + sum_{s >= t} L_s bits/dim (the paper's L_{s-1}, 0-based here) and can estimate x_0 from x_t with
distortion RMSE(t) = sqrt(E ||x_0 - x0_hat(x_t)||^2 / D) on the [0, 255] scale. `calc_bpd_loop`'s `terms_bpd` and
`mse` give both (`variational_bound(..., return_terms=True)`, averaged by `mean_bits_per_dim`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..imaging import agg_pyplot, save_figure
from .bits_per_dim import mean_bits_per_dim

PIXEL_SCALE = 127.5  # [-1, 1] -> [0, 255]


def rate_distortion_curve(
    unet, scheduler, batches: Iterable[torch.Tensor], *, seed: int = 0, num_timesteps: int | None = None
) -> dict[str, Any]:
    """Rate (bits/dim) and distortion (RMSE, [0, 255]) at every evaluated t, averaged over the images of `batches`
    ((B, C, H, W) in [-1, 1]). All T terms unless `num_timesteps` (stratified, weighted as in the bound)."""
    generator = torch.Generator().manual_seed(seed)
    bound = mean_bits_per_dim(
        unet, scheduler, batches, generator=generator, num_timesteps=num_timesteps, return_terms=True
    )
    if not bound:
        raise ValueError("no images to measure; give at least one.")
    mean_terms = bound["terms_bpd"] * bound["term_weights"]  # (k,), each term as it counts in the sum
    rate = bound["prior_bpd"] + mean_terms.flip(0).cumsum(0).flip(0)  # rate(t) = L_T + sum_{s >= t}
    distortion = bound["mse"].sqrt() * PIXEL_SCALE
    return {
        "timesteps": bound["timesteps"].numpy(),
        "rate_bpd": rate.numpy(),
        "distortion_rmse": distortion.numpy(),
        "term_bpd": mean_terms.numpy(),
        "prior_bpd": float(bound["prior_bpd"]),
        "total_bpd": float(bound["total_bpd"]),
        "num_images": bound["num_images"],
    }


def write_rate_distortion_csv(curve: dict[str, Any], path: str | Path) -> Path:
    """One row per t: `timestep`, `rate_bpd`, `distortion_rmse`, `term_bpd`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestep", "rate_bpd", "distortion_rmse", "term_bpd"])
        for row in zip(curve["timesteps"], curve["rate_bpd"], curve["distortion_rmse"], curve["term_bpd"]):
            writer.writerow([int(row[0]), *(f"{float(value):.6g}" for value in row[1:])])
    return path


def plot_rate_distortion(curve: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Fig. 5's three panels: distortion against t, rate against t, distortion against rate (matplotlib)."""
    plt = agg_pyplot()

    steps = int(np.max(curve["timesteps"])) + 1 - np.asarray(curve["timesteps"])  # reverse steps taken, T - t + 1
    rate, distortion = np.asarray(curve["rate_bpd"]), np.asarray(curve["distortion_rmse"])
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    axes[0].plot(steps, distortion)
    axes[0].set(xlabel="reverse process steps (T - t)", ylabel="distortion (RMSE [0, 255])")
    axes[1].plot(steps, rate)
    axes[1].set(xlabel="reverse process steps (T - t)", ylabel="rate (bits/dim)")
    axes[2].plot(rate, distortion)
    axes[2].set(xlabel="rate (bits/dim)", ylabel="distortion (RMSE [0, 255])")
    return save_figure(figure, path, title)
