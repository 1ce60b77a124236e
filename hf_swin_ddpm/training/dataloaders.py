"""The training and held-out datasets of a run, as the common flags name them.

The held-out split is ``--eval_split``, else ``validation`` or ``test``, else a seeded fraction of the train split;
embedded datasets, Hub datasets, local files and folders all load through :func:`hf_swin_ddpm.data.load_image_dataset`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader

from ..data import EMBEDDED_DATASETS, attach_transform, load_image_dataset
from .errors import TrainingError

DEFAULT_EVAL_SPLITS = ("validation", "test")

AnyDataset = datasets.Dataset | datasets.IterableDataset


def _load_split(args: argparse.Namespace, split: str, task: str) -> AnyDataset:
    """One split of the dataset the flags name (see :func:`hf_swin_ddpm.data.load_image_dataset`)."""
    return load_image_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        split=split,
        streaming=args.streaming,
        task=task,
        cache_dir=args.cache_dir,
        seed=args.seed,
        resolution=args.resolution,
    )


def _first_examples(dataset: AnyDataset, count: int | None) -> AnyDataset:
    """The first ``count`` examples (all when ``count`` is None)."""
    if count is None:
        return dataset
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(count)
    return dataset.select(range(min(count, len(dataset))))


@dataclasses.dataclass
class TrainingData:
    """The training examples and the held-out ones: ``eval_split`` names the split (``"test"``, or ``"train"`` when
    part of the train split was held out) and ``eval_source`` says in words where the held-out examples come from."""

    train: AnyDataset
    eval: AnyDataset | None
    eval_split: str | None
    eval_source: str


def load_train_and_eval_datasets(args: argparse.Namespace, task: str) -> TrainingData:
    """The training data and the held-out data.

    The held-out data is ``--eval_split`` when given (it must exist), otherwise the first of ``validation`` and
    ``test`` that exists, otherwise a seeded ``--train_val_split`` fraction of the train split (not for streams, which
    then have no held-out data).
    """
    train = _load_split(args, "train", task)
    candidates = (args.eval_split,) if args.eval_split else DEFAULT_EVAL_SPLITS
    held_out, eval_split, source = None, None, "none"
    for split in candidates:
        try:
            held_out, eval_split, source = _load_split(args, split, task), split, f"the {split!r} split"
            break
        except ValueError:
            if args.eval_split:
                raise
    if held_out is None and isinstance(train, datasets.Dataset):
        if len(train) < 2:
            raise TrainingError(f"the training data has {len(train)} example(s); at least 2 are needed")
        parts = train.train_test_split(test_size=args.train_val_split, seed=args.seed)
        train, held_out, eval_split = parts["train"], parts["test"], "train"
        source = f"{args.train_val_split:.0%} of the train split, held out (seed {args.seed})"
    train = _first_examples(train, args.max_train_samples)
    if held_out is not None:
        held_out = _first_examples(held_out, args.max_eval_samples)
    if isinstance(train, datasets.Dataset) and len(train) == 0:
        raise TrainingError("the training data is empty")
    return TrainingData(train, held_out, eval_split, source)


def check_first_examples(dataset: AnyDataset, count: int) -> None:
    """Run the first ``count`` examples of a transformed map-style dataset through its transform, so that bad data
    (masks of the wrong size, labels out of range, unreadable images) stops the run before it starts."""
    if isinstance(dataset, datasets.Dataset):
        for index in range(min(count, len(dataset))):
            dataset[index]


def dataset_label(args: argparse.Namespace) -> str:
    """How the model card and logs name the data: the dataset name or the folder."""
    if args.dataset_name is not None:
        return args.dataset_name + (f" ({args.dataset_config_name})" if args.dataset_config_name else "")
    return f"local folder {Path(args.train_data_dir).name}"


def dataset_description(args: argparse.Namespace) -> str:
    """How the model card names the data: :func:`dataset_label`, with what an embedded dataset holds."""
    if args.dataset_name in EMBEDDED_DATASETS:
        return f"the embedded dataset {args.dataset_name} ({EMBEDDED_DATASETS[args.dataset_name]})"
    return dataset_label(args)


def hub_dataset_ids(args: argparse.Namespace) -> list[str]:
    """The ``datasets`` entry of the card metadata: the Hub dataset id (not an embedded dataset or a local path)."""
    if args.dataset_name is None or args.dataset_name in EMBEDDED_DATASETS or Path(args.dataset_name).exists():
        return []
    return [args.dataset_name]


def transformed(args: argparse.Namespace, dataset: AnyDataset, transform: Callable, split: str) -> AnyDataset:
    """``dataset`` with ``transform`` attached: an unreadable image stops the run with an error naming the dataset,
    ``split`` (how the held-out part is described), the example and its file, or is skipped with
    ``--skip_bad_examples``."""
    source = f"{dataset_label(args)} ({split})"
    return attach_transform(dataset, transform, source=source, skip_bad_examples=args.skip_bad_examples)


def training_dataloader(
    args: argparse.Namespace, dataset: AnyDataset, transform: Callable, collate_fn: Callable
) -> DataLoader:
    """The training DataLoader (before ``accelerator.prepare``): the seeded ``transform`` applied lazily, a shuffled
    order drawn from its own generator (a stream is shuffled in a 1,000-example buffer instead), and the first batch
    checked so that bad data stops the run before it starts."""
    streaming = isinstance(dataset, datasets.IterableDataset)
    if streaming:
        dataset = dataset.shuffle(seed=args.seed, buffer_size=1000)
    dataloader = DataLoader(
        transformed(args, dataset, transform, "the 'train' split"),
        batch_size=args.train_batch_size,
        shuffle=not streaming,
        collate_fn=collate_fn,
        num_workers=args.dataloader_num_workers,
        generator=seeded_data_generator(args.seed),
    )
    check_first_examples(dataloader.dataset, args.train_batch_size)
    return dataloader


def evaluation_dataloader(
    args: argparse.Namespace,
    dataset: AnyDataset,
    transform: Callable,
    collate_fn: Callable,
    source: str = "the held-out data",
) -> DataLoader:
    """The held-out DataLoader (before ``accelerator.prepare``), in dataset order; ``source`` says in words where the
    held-out examples come from (:attr:`TrainingData.eval_source`)."""
    return DataLoader(
        transformed(args, dataset, transform, source),
        batch_size=args.eval_batch_size,
        collate_fn=collate_fn,
        num_workers=args.dataloader_num_workers,
        generator=seeded_data_generator(args.seed),  # evaluating leaves the global RNG alone
    )


def seeded_data_generator(seed: int) -> torch.Generator:
    """The DataLoader's own generator: its base-seed draw then leaves the global torch RNG alone (exact resume)."""
    return torch.Generator().manual_seed(seed)
