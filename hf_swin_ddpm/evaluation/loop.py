"""The evaluation loop both models share, on one process or several (accelerate).

As accelerate's examples evaluate: every process measures its share of the held-out batches, and
``Accelerator.gather_for_metrics`` collects the per-example values of all processes, dropping the examples that the
last batch was padded with, so that each example counts exactly once. ``train_segmentation`` (mmseg's class counts),
``train_ddpm`` (bits/dim), ``evaluate-seg`` and ``evaluate-ddpm`` (one process, no accelerator) run this loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import datasets
import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import collate_segmentation_lists

Measure = Callable[[Any], dict[str, torch.Tensor]]


def prepare_evaluation_dataloader(accelerator, eval_dataloader: DataLoader) -> DataLoader:
    """``accelerator.prepare``, except for a stream of list batches (the keep-ratio protocol) on several processes:
    accelerate dispatches a stream's batches from the main process by slicing stacked tensors, which lists of images
    of different sizes are not; each process then reads its own shard of the stream
    (``datasets.distributed.split_dataset_by_node``), and :func:`evaluation_loop` gathers the shards at the end."""
    dataset = eval_dataloader.dataset
    lists = eval_dataloader.collate_fn is collate_segmentation_lists
    if not (lists and isinstance(dataset, datasets.IterableDataset) and accelerator.num_processes > 1):
        return accelerator.prepare(eval_dataloader)
    from datasets.distributed import split_dataset_by_node

    shard = split_dataset_by_node(dataset, rank=accelerator.process_index, world_size=accelerator.num_processes)
    return DataLoader(
        shard,
        batch_size=eval_dataloader.batch_size,
        collate_fn=eval_dataloader.collate_fn,
        num_workers=eval_dataloader.num_workers,
    )


@torch.no_grad()
def evaluation_loop(
    batches: Iterable[Any],
    measure: Measure,
    *,
    accelerator=None,
    desc: str | None = None,
    total: int | None = None,
    leave: bool = True,
) -> dict[str, torch.Tensor]:
    """Measure every batch and return the per-example values of the whole dataset, name by name, concatenated.

    `measure(batch)` returns tensors whose first dimension is the batch's examples. With an `accelerator`, `batches`
    is a prepared DataLoader (each process reads its part) or, not prepared, a process's own shard
    (:func:`prepare_evaluation_dataloader`). `desc` names a progress bar on the (local) main process; None shows none.
    The result is empty when there are no batches.
    """
    own_shard = accelerator is not None and type(batches) is DataLoader  # not prepared: see prepare_evaluation_...
    show = desc is not None and (accelerator is None or accelerator.is_local_main_process)
    collected: dict[str, list[torch.Tensor]] = {}
    for batch in tqdm(batches, desc=desc, total=total, disable=not show, leave=leave):
        # 1. measure the batch on this process
        values = measure(batch)
        # 2. gather the examples of every process, without the padding of the last batch
        if accelerator is not None and not own_shard:
            values = accelerator.gather_for_metrics(values)
        # 3. keep them in dataset order
        for name, value in values.items():
            collected.setdefault(name, []).append(value)
    results = {name: torch.cat(parts) for name, parts in collected.items()}
    return _gather_shards(results) if own_shard else results


def _gather_shards(results: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The values of every process's own shard, concatenated in process order (shards may differ in length)."""
    shards = gather_object([{name: value.cpu() for name, value in results.items()}])
    names = dict.fromkeys(name for shard in shards for name in shard)
    return {name: torch.cat([shard[name] for shard in shards if name in shard]) for name in names}
