"""Sampling a DDPM for the metrics: the generated images go straight into a `SampleMetrics`, batch by batch."""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from .metrics import SampleMetrics


def check_sample_count(num_samples: int, num_inference_steps: int, num_train_timesteps: int) -> None:
    """N >= 2 (a covariance needs two samples) and 1 <= S <= T, else a `ValueError` naming the fix."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"--num_samples must be an integer >= 2 (FID needs a covariance), got {num_samples!r}.")
    if (
        isinstance(num_inference_steps, bool)
        or not isinstance(num_inference_steps, int)
        or not 1 <= num_inference_steps <= num_train_timesteps
    ):
        raise ValueError(
            f"--num_inference_steps must be an integer in [1, {num_train_timesteps}] (the model's T), got "
            f"{num_inference_steps!r}."
        )


@torch.no_grad()
def add_pipeline_samples(
    metrics: SampleMetrics,
    pipeline,
    num_samples: int,
    num_inference_steps: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Draw `num_samples` images from `pipeline` (Algorithm 2, `num_inference_steps` steps, one generator seeded by
    `seed`; the UNet under `autocast_dtype` autocast when given, see `DDPMPaperPipeline.__call__`) into `metrics` as
    generated images; returns the sampling time."""
    check_sample_count(num_samples, num_inference_steps, pipeline.scheduler.config.num_train_timesteps)
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}.")
    device = pipeline.unet.device
    generator = torch.Generator(device=device).manual_seed(seed)
    pipeline.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    with tqdm(total=num_samples, desc=f"sampling ({num_inference_steps} steps)", disable=not progress) as bar:
        for offset in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - offset)
            images = pipeline(
                batch_size=count,
                generator=generator,
                num_inference_steps=num_inference_steps,
                output_type="pt",
                autocast_dtype=autocast_dtype,
            ).images
            metrics.update(images, real=False)
            bar.update(count)
    dtype = None if autocast_dtype is None else str(autocast_dtype).removeprefix("torch.")
    return {"sampling_seconds": round(time.perf_counter() - start, 2), "seed": seed, "autocast_dtype": dtype}


def pipeline_resolution(pipeline) -> tuple[int, int]:
    """The side and the channels of the images `pipeline` generates."""
    size = pipeline.unet.config.sample_size
    return int(size if isinstance(size, int) else size[0]), int(pipeline.unet.config.in_channels)


def evaluate_pipeline(
    pipeline,
    metrics: SampleMetrics,
    reference,
    num_samples: int,
    num_inference_steps: int,
    *,
    max_reference_images: int | None = None,
    cache_dir=None,
    **sampling: Any,
) -> dict[str, Any]:
    """FID, KID and IS of `num_samples` samples of `pipeline` against `reference` (`DATASET[:SPLIT]`, a folder or a
    statistics `.npz`, its statistics cached); the generated images are forgotten afterwards (`metrics.reset()`).
    `sampling` are `add_pipeline_samples`' `batch_size`, `seed`, `progress` and `autocast_dtype`."""
    from .reference import reference_statistics

    check_sample_count(num_samples, num_inference_steps, pipeline.scheduler.config.num_train_timesteps)
    side, channels = pipeline_resolution(pipeline)
    start = time.perf_counter()
    statistics = reference_statistics(
        reference,
        metrics.extractor,
        resolution=side,
        channels=channels,
        max_images=max_reference_images,
        cache_dir=cache_dir,
    )
    reference_seconds = time.perf_counter() - start
    metrics.set_reference(statistics)
    metrics.reset()
    timing = add_pipeline_samples(metrics, pipeline, num_samples, num_inference_steps, **sampling)
    start = time.perf_counter()
    results = metrics.compute()
    metrics.reset()
    results.update(timing)
    results.update(
        {
            "reference_dataset": statistics.dataset,
            "num_inference_steps": num_inference_steps,
            "reference_seconds": round(reference_seconds, 3),
            "metrics_seconds": round(time.perf_counter() - start, 3),
        }
    )
    return results
