"""Sampling a DDPM for the metrics, on one process or sharded over several (`accelerate launch`).

Sample i is drawn with its own `torch.Generator`, seeded from (seed, i) (`sample_seed`): its initial noise and every
noise of its reverse chain come from that generator (diffusers' pipelines and schedulers take one generator per
batch element). So the set of samples, and with it FID, KID and IS, does not depend on the batch size or on the
number of processes; each process draws samples i = rank, rank + k, ... and the main process scores them all, in
index order, in feature batches of a fixed size. Samples are quantized to uint8 as PNG files are
(`round(255 x)`, diffusers' `numpy_to_pil`), whether they are kept in memory or written to a `SampleFolder`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import SampleMetrics
from .sample_folder import SampleFolder

# images per extractor call when scoring: fixed, so the features do not depend on --batch_size
FEATURE_BATCH_SIZE = 256


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


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a run seeded `seed`: numpy's `SeedSequence([seed, index])` (independent
    streams for distinct pairs), as a 63-bit integer for `torch.Generator.manual_seed`."""
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}.")
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]) >> 1


def sample_generators(seed: int, indices: Iterable[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample index, seeded `sample_seed(seed, i)`: the `generator=` list of one batch."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, index)) for index in indices]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as uint8, `round(255 x)` (what diffusers' `numpy_to_pil` writes to PNG)."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def draw_samples(
    pipeline, indices: Sequence[int], num_inference_steps: int, *, seed: int, autocast_dtype=None
) -> torch.Tensor:
    """Samples `indices` of the run seeded `seed` as uint8 (B, C, H, W) on the CPU, one generator each."""
    device = pipeline.unet.device
    images = pipeline(
        batch_size=len(indices),
        generator=sample_generators(seed, indices, device),
        num_inference_steps=num_inference_steps,
        output_type="pt",
        autocast_dtype=autocast_dtype,
    ).images
    return to_uint8(images).cpu()


def generate_samples(
    pipeline,
    num_samples: int,
    num_inference_steps: int,
    *,
    seed: int = 0,
    batch_size: int = 64,
    samples_dir: SampleFolder | None = None,
    state=None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """Samples 0 .. `num_samples` - 1 as uint8 (N, C, H, W) on the main process (None on the others), and counts.

    With a `state` of k processes (an `Accelerator`, or accelerate's `PartialState`), process r draws samples r, r + k, ...; with
    `samples_dir`, only those whose file is missing or unreadable (`repaired`) are drawn, each written as soon as
    its batch is done, and the main process reads all of them back. A SIGTERM loses at most the batch in flight.
    """
    check_sample_count(num_samples, num_inference_steps, pipeline.scheduler.config.num_train_timesteps)
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}.")
    rank, world = (0, 1) if state is None else (state.process_index, state.num_processes)
    own = range(rank, num_samples, world)
    todo, repaired = samples_dir.missing(own) if samples_dir is not None else (list(own), 0)
    pipeline.set_progress_bar_config(disable=True)
    kept: dict[int, torch.Tensor] = {}
    start = time.perf_counter()
    show = progress and rank == 0
    with tqdm(total=len(todo), desc=f"sampling ({num_inference_steps} steps)", disable=not show) as bar:
        for offset in range(0, len(todo), batch_size):
            indices = todo[offset : offset + batch_size]
            images = draw_samples(pipeline, indices, num_inference_steps, seed=seed, autocast_dtype=autocast_dtype)
            for index, image in zip(indices, images, strict=True):
                if samples_dir is not None:
                    samples_dir.write(index, image.numpy())
                else:
                    kept[index] = image
            bar.update(len(indices))
    report = {"made": len(todo), "repaired": repaired, "seconds": time.perf_counter() - start, "kept": kept}
    reports = [report]
    if world > 1:
        from accelerate.utils import gather_object

        reports = gather_object([report])
        state.wait_for_everyone()
    counts = {
        "sampling_seconds": round(max(r["seconds"] for r in reports), 2),
        "samples_made": sum(r["made"] for r in reports),
        "samples_repaired": sum(r["repaired"] for r in reports),
        "num_processes": world,
        "seed": seed,
        "autocast_dtype": None if autocast_dtype is None else str(autocast_dtype).removeprefix("torch."),
    }
    if rank != 0:
        return None, counts
    if samples_dir is not None:
        return samples_dir.load(num_samples), counts
    everything = {index: image for r in reports for index, image in r["kept"].items()}
    return torch.stack([everything[index] for index in range(num_samples)]), counts


def evaluate_samples(
    metrics: SampleMetrics,
    reference,
    samples: torch.Tensor,
    *,
    max_reference_images: int | None = None,
    cache_dir=None,
) -> dict[str, Any]:
    """FID, KID and IS of uint8 (N, C, H, W) `samples` against `reference` (`DATASET[:SPLIT]`, a folder or a
    statistics `.npz`; its statistics at the samples' size and channels, cached); the samples are forgotten after."""
    from .reference import reference_statistics

    if samples.dtype != torch.uint8 or samples.ndim != 4:
        raise ValueError(f"samples must be uint8 (N, C, H, W), got {samples.dtype} {tuple(samples.shape)}.")
    start = time.perf_counter()
    statistics = reference_statistics(
        reference,
        metrics.extractor,
        resolution=int(samples.shape[-1]),
        channels=int(samples.shape[1]),
        max_images=max_reference_images,
        cache_dir=cache_dir,
    )
    reference_seconds = time.perf_counter() - start
    metrics.set_reference(statistics)
    metrics.reset()
    start = time.perf_counter()
    for offset in range(0, len(samples), FEATURE_BATCH_SIZE):
        metrics.update(samples[offset : offset + FEATURE_BATCH_SIZE].float() / 255, real=False)
    results = metrics.compute()
    metrics.reset()
    results.update(
        {
            "reference_dataset": statistics.dataset,
            "reference_seconds": round(reference_seconds, 3),
            "metrics_seconds": round(time.perf_counter() - start, 3),
        }
    )
    return results


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
    """Draw `num_samples` images from `pipeline` (Algorithm 2, `num_inference_steps` steps, sample i with the generator
    seeded `sample_seed(seed, i)`; the UNet under `autocast_dtype` autocast when given, see `DDPMPaperPipeline.__call__`) into `metrics` as
    generated images; returns the sampling time."""
    check_sample_count(num_samples, num_inference_steps, pipeline.scheduler.config.num_train_timesteps)
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}.")
    device = pipeline.unet.device
    pipeline.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    with tqdm(total=num_samples, desc=f"sampling ({num_inference_steps} steps)", disable=not progress) as bar:
        for offset in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - offset)
            images = pipeline(
                batch_size=count,
                generator=sample_generators(seed, range(offset, offset + count), device),
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
) -> dict[str, Any] | None:
    """FID, KID and IS of `num_samples` samples of `pipeline` against `reference` (`evaluate_samples`).
    `sampling` are `generate_samples`' `batch_size`, `seed`, `samples_dir`, `state`, `progress` and
    `autocast_dtype`; on the processes other than the main one the result is None."""
    samples, counts = generate_samples(pipeline, num_samples, num_inference_steps, **sampling)
    if samples is None:
        return None
    results = evaluate_samples(
        metrics, reference, samples, max_reference_images=max_reference_images, cache_dir=cache_dir
    )
    results.update(counts)
    results["num_inference_steps"] = num_inference_steps
    return results
