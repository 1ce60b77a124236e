"""Reference statistics of real images: a dataset split, an image folder or a Hub dataset, computed once and cached.

A reference is named as on the command line: `DATASET[:SPLIT]` (an embedded dataset such as `mnist:test`, or a Hub
dataset id `namespace/name[:split]`), an image `FOLDER`, or a `STATS.npz` written earlier. Images are prepared as the
DDPM training transform prepares them (grayscale or RGB, bilinear resize and centre crop to the model's resolution),
so real and generated images reach the extractor the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch

from ..data import EMBEDDED_DATASETS, DDPMTransform, load_image_dataset
from .extractors import EvaluationError, default_cache_dir
from .statistics import ReferenceStatistics, StaleStatisticsError, load_statistics

STATISTICS_CACHE_FOLDER = "hf-swin-ddpm-fid-statistics"


@dataclasses.dataclass(frozen=True)
class Reference:
    """A parsed reference: `kind` is `"dataset"`, `"folder"` or `"statistics"`."""

    kind: str
    source: str
    split: str = "train"

    @property
    def is_dataset(self) -> bool:
        return self.kind == "dataset"


def parse_reference(reference: str, default_split: str = "train") -> Reference:
    """`STATS.npz`, an existing `FOLDER`, or `DATASET[:SPLIT]` (embedded name or `namespace/name` Hub id)."""
    text = str(reference)
    if text.endswith(".npz"):
        if not Path(text).is_file():
            raise EvaluationError(f"reference {text}: no such statistics file; give an existing .npz.")
        return Reference("statistics", text)
    if Path(text).is_dir():
        return Reference("folder", str(Path(text).resolve()))
    name, _, split = text.partition(":")
    if name not in EMBEDDED_DATASETS and "/" not in name:
        raise EvaluationError(
            f"unknown reference {text!r}: give an embedded dataset ({', '.join(EMBEDDED_DATASETS)})[:split], a Hub "
            "dataset id namespace/name[:split], an image folder or a statistics .npz."
        )
    return Reference("dataset", name, split or default_split)


def _load(reference: Reference):
    if reference.kind == "folder":
        return load_image_dataset(train_data_dir=reference.source, split=reference.split)
    return load_image_dataset(dataset_name=reference.source, split=reference.split)


def reference_batches(
    reference: Reference, resolution: int, channels: int, batch_size: int = 256, max_images: int | None = None
) -> Iterator[torch.Tensor]:
    """The reference's images as float (B, C, resolution, resolution) batches in [-1, 1] (the DDPM's scale)."""
    if reference.kind == "statistics":
        raise EvaluationError(f"reference {reference.source} is a statistics file; it holds no images.")
    dataset = _load(reference)
    transform = DDPMTransform(resolution, channels, random_flip=False)
    batch: list[torch.Tensor] = []
    for index, example in enumerate(dataset):
        if max_images is not None and index >= max_images:
            break
        batch.append(transform.transform_image(example["image"]))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def _folder_fingerprint(folder: str) -> str:
    """Number, names, sizes and modification times of the folder's files: a changed folder gets new statistics."""
    files = sorted(path for path in Path(folder).rglob("*") if path.is_file())
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"{len(files)} files, {digest.hexdigest()[:12]}"


def dataset_id(reference: Reference, resolution: int, channels: int, max_images: int | None = None) -> str:
    """What the statistics are of: source, split, image size and channels, and how many images at most."""
    source = reference.source
    if reference.kind == "folder":
        source = f"{source} ({_folder_fingerprint(source)})"
    limit = f", first {max_images}" if max_images is not None else ""
    return f"{source}:{reference.split} at {resolution}x{resolution}x{channels}{limit}"


def statistics_path(extractor_id: str, dataset: str, cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(f"{extractor_id}\n{dataset}".encode()).hexdigest()[:20]
    return root / STATISTICS_CACHE_FOLDER / f"{key}.npz"


def reference_statistics(
    reference: str | Reference,
    extractor,
    *,
    resolution: int,
    channels: int,
    max_images: int | None = None,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
) -> ReferenceStatistics:
    """The reference's statistics under `extractor` (a `SampleMetrics` extractor), from the cache when present.

    A `STATS.npz` reference is read and must have been made with `extractor` (else `StaleStatisticsError`); one
    without ids (pytorch-fid's `mu` and `sigma` only) is taken as made with it (no KID: it holds no features). Otherwise
    the statistics are cached under `cache_dir` (default: the hub cache) keyed by the extractor id and the dataset id
    (source, split, size, channels, count); a cached file whose recorded ids differ is recomputed.
    """
    parsed = reference if isinstance(reference, Reference) else parse_reference(reference)
    if parsed.kind == "statistics":
        stored = load_statistics(parsed.source)
        if stored.extractor == "unknown":  # pytorch-fid's file: mu and sigma only; the user names its features
            return dataclasses.replace(stored, extractor=extractor.extractor_id, dataset=parsed.source)
        return load_statistics(parsed.source, extractor=extractor.extractor_id)
    dataset = dataset_id(parsed, resolution, channels, max_images)
    path = statistics_path(extractor.extractor_id, dataset, cache_dir)
    if path.is_file():
        try:
            return load_statistics(path, extractor=extractor.extractor_id, dataset=dataset)
        except StaleStatisticsError:
            pass  # recomputed below
    features = [
        extractor.extract((batch + 1) / 2)[0].cpu()
        for batch in reference_batches(parsed, resolution, channels, batch_size, max_images)
    ]
    if not features or sum(len(chunk) for chunk in features) < 2:
        raise EvaluationError(f"reference {parsed.source}:{parsed.split} has fewer than 2 images.")
    statistics = ReferenceStatistics.from_features(torch.cat(features), extractor.extractor_id, dataset)
    statistics.save(path)
    return statistics
