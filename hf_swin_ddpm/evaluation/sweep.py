"""The sampler trade-off table: FID, KID and IS of one model against sampling steps and seconds, sampler by sampler.

Every (sampler, steps) cell draws the same sample indices with the same per-sample generators (`generate_samples`)
and is scored against the same reference statistics (`evaluate_samples`), so the cells differ only by the sampler
and the number of steps. `hf-swin-ddpm sweep-ddpm` writes the rows as a CSV and the curves as a PNG.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..imaging import agg_pyplot, save_figure
from .sampling import evaluate_samples, generate_samples

SWEEP_COLUMNS = ("sampler", "steps", "seconds", "samples_per_second", "fid", "kid", "inception_score")


def sweep_samplers(
    load_pipeline: Callable[[str], Any],
    metrics,
    reference,
    samplers: Sequence[str],
    steps: Sequence[int],
    num_samples: int,
    *,
    seed: int = 0,
    batch_size: int = 64,
    cache_dir=None,
    progress: bool = True,
    autocast_dtype=None,
) -> list[dict[str, Any]]:
    """One row per (sampler, steps): the sampling seconds, samples per second, FID, KID (mean) and IS (mean).
    `load_pipeline(sampler)` returns the model's pipeline with that sampler's scheduler."""
    rows = []
    for sampler in samplers:
        pipeline = load_pipeline(sampler)
        for count in steps:
            samples, counts = generate_samples(
                pipeline,
                num_samples,
                count,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
                autocast_dtype=autocast_dtype,
            )
            scores = evaluate_samples(metrics, reference, samples, cache_dir=cache_dir)
            seconds = counts["sampling_seconds"]
            rows.append(
                {
                    "sampler": sampler,
                    "steps": count,
                    "seconds": seconds,
                    "samples_per_second": round(num_samples / seconds, 3) if seconds > 0 else None,
                    "fid": scores["fid"],
                    "kid": scores["kid_mean"],
                    "inception_score": scores["inception_score_mean"],
                }
            )
    return rows


def write_sweep_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SWEEP_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_sweep(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Four panels (matplotlib): FID and IS against steps and against sampling seconds, one line per sampler."""
    plt = agg_pyplot()

    figure, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    samplers = list(dict.fromkeys(row["sampler"] for row in rows))
    for sampler in samplers:
        mine = sorted((row for row in rows if row["sampler"] == sampler), key=lambda row: row["steps"])
        for column, metric in enumerate(("fid", "inception_score")):
            values = [row[metric] for row in mine]
            axes[column, 0].plot([row["steps"] for row in mine], values, marker="o", label=sampler)
            axes[column, 1].plot([row["seconds"] for row in mine], values, marker="o", label=sampler)
    for column, name in enumerate(("FID (lower is better)", "Inception Score")):
        axes[column, 0].set(xlabel="sampling steps", ylabel=name, xscale="log")
        axes[column, 1].set(xlabel="sampling seconds", ylabel=name, xscale="log")
    axes[0, 0].legend()
    return save_figure(figure, path, title)
