"""Semantic segmentation evaluated as mmsegmentation (and so the Swin paper) does.

The protocol: each image resized keeping its aspect ratio to a scale (``(2048, 512)`` for ADE20K), inference in
``whole`` or ``slide`` mode, optionally with multi-scale + flip test-time augmentation
(:meth:`SwinFPNForSegmentation.inference`), the prediction resized (bilinear, on the logits) to the label map's own
size, and the metrics of mmseg's ``IoUMetric`` on the original labels: aAcc, mIoU, mAcc, mDice, mFscore (with
mPrecision and mRecall), per class too. Classes are counted with torchmetrics' ``multiclass_stat_scores``; per-image
counts add up, so they are gathered from several processes (:func:`~.loop.evaluation_loop`) and summed. Training
(``train_segmentation``) and ``evaluate-seg`` count with :func:`segmentation_counts`.

Metric definitions (mmseg ``IoUMetric.total_area_to_metrics``), for class c with I = |pred = c and label = c|,
P = |pred = c|, L = |label = c| over the pixels whose label is not the ignore index:

    IoU = I / (P + L - I),  Acc = Recall = I / L,  Precision = I / P,  Dice = 2 I / (P + L),
    Fscore = 2 Precision Recall / (Precision + Recall),  aAcc = sum_c I / sum_c L,

and the m-metrics are means over the classes where the value is defined (0/0 is NaN and left out, as mmseg's
``nanmean``): a class absent from the labels but predicted has IoU 0 and no accuracy. Values are fractions in [0, 1]
(mmseg prints percentages).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_stat_scores

from ..data.transforms import DEFAULT_IGNORE_INDEX, SegmentationKeepRatioEvalTransform, keep_ratio_size
from .loop import evaluation_loop

ADE20K_SCALE: tuple[int, int] = (2048, 512)
MMSEG_TTA_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
ADE20K_SLIDE_CROP, ADE20K_SLIDE_STRIDE = 512, 341
SUMMARY_METRICS: tuple[str, ...] = ("aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall")
PER_CLASS_METRICS: tuple[str, ...] = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")

__all__ = [
    "ADE20K_SCALE",
    "MMSEG_TTA_SCALES",
    "InferenceProtocol",
    "class_counts",
    "evaluate_segmentation",
    "format_results_table",
    "keep_ratio_size",
    "predict_at_label_size",
    "scores_from_counts",
    "segmentation_counts",
]


@dataclasses.dataclass(frozen=True)
class InferenceProtocol:
    """How each image is predicted: the keyword arguments of `SwinFPNForSegmentation.inference`."""

    mode: str = "whole"
    crop_size: int | tuple[int, int] | None = None
    stride: int | tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def inference_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> dict[str, Any]:
        """The protocol as JSON-friendly values (for results files and model cards)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in self.inference_kwargs().items()
        }


def predict_at_label_size(
    model, pixel_values: torch.Tensor, label_size: Sequence[int], protocol: InferenceProtocol
) -> torch.Tensor:
    """Class map (height, width) at `label_size` for one normalised image (3, h, w) of any size: the logits (or TTA
    log-probabilities) are resized bilinearly to the label size before the argmax."""
    pixel_values = pixel_values.to(device=model.device, dtype=model.dtype)[None]
    logits = model.inference(
        pixel_values, output_size=tuple(int(s) for s in label_size), **protocol.inference_kwargs()
    )
    return logits[0].argmax(dim=0)


def class_counts(
    prediction: torch.Tensor, labels: torch.Tensor, num_labels: int, ignore_index: int = DEFAULT_IGNORE_INDEX
) -> torch.Tensor:
    """Per-class (intersection I, predicted area P, label area L), int64 (num_labels, 3), over the pixels whose label
    is not `ignore_index`, from torchmetrics' ``multiclass_stat_scores`` (tp, fp, tn, fn, support)."""
    if prediction.shape != labels.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and labels {tuple(labels.shape)} differ in shape")
    stats = multiclass_stat_scores(
        prediction.reshape(1, -1).long(),
        labels.reshape(1, -1).long(),
        num_classes=num_labels,
        average=None,
        multidim_average="global",
        ignore_index=ignore_index,
        validate_args=False,
    )
    true_positive, false_positive, false_negative = stats[:, 0], stats[:, 1], stats[:, 3]
    return torch.stack([true_positive, true_positive + false_positive, true_positive + false_negative], dim=1).long()


def _nan_mean(values: torch.Tensor) -> float:
    return float(values.nanmean()) if not values.isnan().all() else float("nan")


def scores_from_counts(counts: torch.Tensor, id2label: dict[int, str] | None = None) -> dict[str, Any]:
    """mmseg's IoUMetric from summed :func:`class_counts` (see the module docstring): the summary metrics and
    ``per_class`` {class name: {IoU, Acc, Dice, Fscore, Precision, Recall}}, NaN where undefined."""
    counts = counts.double()
    intersection, predicted, labelled = counts.unbind(dim=1)
    precision = intersection / predicted
    recall = intersection / labelled
    per_class = {
        "IoU": intersection / (predicted + labelled - intersection),
        "Acc": recall,
        "Dice": 2 * intersection / (predicted + labelled),
        "Fscore": 2 * precision * recall / (precision + recall),
        "Precision": precision,
        "Recall": recall,
    }
    total_labelled = float(labelled.sum())
    results: dict[str, Any] = {
        "aAcc": float(intersection.sum()) / total_labelled if total_labelled else float("nan"),
        **{f"m{name}": _nan_mean(per_class[name]) for name in PER_CLASS_METRICS},
    }
    names = id2label or {}
    results["per_class"] = {
        names.get(index, str(index)): {name: float(per_class[name][index]) for name in PER_CLASS_METRICS}
        for index in range(counts.shape[0])
    }
    return results


def _json_value(value: Any) -> Any:
    """NaN -> None, recursively, so the results are strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    return value


def _batch_counts(
    model, forward, batch: dict[str, Any], num_labels: int, ignore_index: int, protocol: InferenceProtocol
) -> dict[str, torch.Tensor]:
    """``counts`` (batch, num_labels, 3) of one batch: lists (keep-ratio) predicted one image at a time with
    `protocol` at each label map's size, stacked tensors (a square resize) in one forward of `forward`."""
    if isinstance(batch["pixel_values"], torch.Tensor):
        predictions = list(forward(pixel_values=batch["pixel_values"]).logits.argmax(dim=1))
    else:
        predictions = [
            predict_at_label_size(model, pixels, labels.shape, protocol)
            for pixels, labels in zip(batch["pixel_values"], batch["labels"], strict=True)
        ]
    counts = [
        class_counts(prediction.to(labels.device), labels, num_labels, ignore_index)
        for prediction, labels in zip(predictions, batch["labels"], strict=True)
    ]
    return {"counts": torch.stack(counts)}


def segmentation_counts(
    model,
    batches: Iterable[dict[str, Any]],
    num_labels: int,
    *,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    protocol: InferenceProtocol = InferenceProtocol(),
    accelerator=None,
    desc: str | None = None,
    total: int | None = None,
    leave: bool = True,
) -> tuple[torch.Tensor, int]:
    """The summed :func:`class_counts` (num_labels, 3) of every image of `batches` (``pixel_values`` + ``labels``
    batches of the segmentation transforms) and the number of images, with the model in eval mode, gathered over the
    processes of `accelerator` when given (`model` may then be the prepared model); see
    :func:`~.loop.evaluation_loop`."""
    unwrapped = model if accelerator is None else accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    try:
        counts = evaluation_loop(
            batches,
            lambda batch: _batch_counts(unwrapped, model, batch, num_labels, ignore_index, protocol),
            accelerator=accelerator,
            desc=desc,
            total=total,
            leave=leave,
        ).get("counts", torch.zeros(0, num_labels, 3, dtype=torch.long))
    finally:
        model.train(was_training)
    return counts.cpu().sum(dim=0), counts.shape[0]


def evaluate_segmentation(
    model,
    dataset: Iterable[dict[str, Any]],
    *,
    scale: Sequence[int],
    protocol: InferenceProtocol = InferenceProtocol(),
    mean: Sequence[float],
    std: Sequence[float],
    reduce_labels: bool = False,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    progress: bool = True,
    accelerator=None,
) -> dict[str, Any]:
    """Evaluate `model` on a dataset of ``image`` + ``annotation`` examples with mmseg's protocol: keep-ratio resize to
    `scale`, `protocol` inference, predictions at each label map's own size, :func:`scores_from_counts`.

    On several processes (`accelerator`: an ``Accelerator`` or accelerate's ``PartialState``, as ``accelerate
    launch`` starts them) each process evaluates its own shard of the dataset
    (``datasets.distributed.split_dataset_by_node``; for other iterables every num_processes-th example) and the
    shards' class counts and image counts are summed over the processes: integer sums, so the metrics are exactly the
    one-process metrics. Every process returns them.

    Returns the summary metrics, ``per_class``, ``num_images``, ``scale`` and ``protocol`` (NaN as None).
    """
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    transform = SegmentationKeepRatioEvalTransform(
        scale, mean=mean, std=std, num_labels=len(id2label), reduce_labels=reduce_labels, ignore_index=ignore_index
    )
    distributed = accelerator is not None and accelerator.num_processes > 1
    if distributed:
        dataset = _process_shard(dataset, accelerator.process_index, accelerator.num_processes)
    batches = (
        transform({"image": [example["image"]], "annotation": [example["annotation"]]}, indices=[index])
        for index, example in enumerate(dataset)
    )
    total, num_images = segmentation_counts(
        model,
        batches,
        len(id2label),
        ignore_index=ignore_index,
        protocol=protocol,
        desc="evaluate" if progress and (not distributed or accelerator.is_local_main_process) else None,
        total=len(dataset) if hasattr(dataset, "__len__") else None,
    )
    if distributed:
        from accelerate.utils import gather_object

        shards = gather_object([(total, num_images)])
        total = torch.stack([counts for counts, _ in shards]).sum(dim=0)
        num_images = sum(images for _, images in shards)
    if num_images == 0:
        raise ValueError("the evaluation dataset is empty; give a split that holds images")
    results = scores_from_counts(total, id2label)
    results.update(num_images=num_images, scale=list(scale), protocol=protocol.describe())
    return _json_value(results)


def _process_shard(dataset: Iterable[dict[str, Any]], rank: int, world_size: int) -> Iterable[dict[str, Any]]:
    """Process `rank`'s part of `dataset`: a contiguous shard of a ``datasets`` dataset, else every
    `world_size`-th example from `rank`."""
    import datasets

    if isinstance(dataset, datasets.Dataset | datasets.IterableDataset):
        from datasets.distributed import split_dataset_by_node

        return split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return (example for index, example in enumerate(dataset) if index % world_size == rank)


def _percent(value: float | None) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def format_results_table(results: dict[str, Any]) -> str:
    """mmseg's printed tables: per-class IoU / Acc / Dice / Fscore, then the summary metrics, in percent."""
    names = list(results["per_class"])
    width = max([len("Class"), *(len(name) for name in names)])
    columns = ("IoU", "Acc", "Dice", "Fscore")
    lines = [f"{'Class':<{width}}  " + "  ".join(f"{c:>7}" for c in columns)]
    for name in names:
        row = results["per_class"][name]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{_percent(row[c]):>7}" for c in columns))
    lines.append("")
    lines.append("  ".join(f"{m:>10}" for m in SUMMARY_METRICS))
    lines.append("  ".join(f"{_percent(results[m]):>10}" for m in SUMMARY_METRICS))
    return "\n".join(lines)
