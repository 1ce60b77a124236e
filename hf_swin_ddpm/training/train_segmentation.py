"""Train a SwinFPN semantic segmentation model with accelerate and save it with its image processor.

    accelerate launch -m hf_swin_ddpm.training.train_segmentation --dataset_name shapes --model_config tiny \\
        --output_dir swin-fpn-shapes --max_train_steps 3000 --scale_range 1 1

The defaults follow the Swin paper's ADE20K recipe (UperNet there, the Semantic FPN head here), scaled to the data:
AdamW with weight decay 0.01 and none on the relative position bias tables, the norms and the biases; a linear warm-up
(by default 5% of the steps, at most the paper's 1,500) then polynomial decay with power 1.0 to zero; drop path 0.3
for the Swin presets; random scale (0.5-2.0), crop and flip, with the ignore index (255) on the padding. The learning
rate is the paper's 6e-5 when the backbone starts from a pretrained Swin (``--pretrained_backbone``); models trained
from scratch default to 2e-3 (the best of 1e-3, 2e-3 and 4e-3 for the tiny preset on ``shapes``). Evaluation: mean
IoU over the classes present, per-class IoU and pixel accuracy with torchmetrics, on predictions gathered from every
process with ``gather_for_metrics``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from ..data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MMSegTrainTransform,
    SegmentationEvalTransform,
    SegmentationKeepRatioEvalTransform,
    SegmentationTrainTransform,
    collate_segmentation,
    collate_segmentation_lists,
    dataset_id2label,
    short_side_scale,
)
from ..evaluation.loop import prepare_evaluation_dataloader
from ..evaluation.segmentation import (
    InferenceProtocol,
    predict_at_label_size,
    scores_from_counts,
    segmentation_counts,
)
from ..imaging import class_colours, colour_classes, image_grid
from ..safe_loading import ModelFileError, check_model_folder, named_loading_errors
from ..swin_fpn import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor
from ..swin_fpn.configuration_swin_fpn import SWIN_FPN_PRESETS
from ..swin_fpn.loss_swin_fpn import loss_types_from_flags, parse_class_weight, parse_loss
from . import arguments, checkpoints, loop, publishing, reporting, runtime
from .arguments import KEEP_RATIO_SCALE
from .dataloaders import (
    AnyDataset,
    TrainingData,
    dataset_description,
    evaluation_dataloader,
    load_train_and_eval_datasets,
    training_dataloader,
)
from .errors import TrainingError, first_line, run_with_clear_errors

PROGRAM = "train_segmentation"
logger = get_logger(__name__)

IGNORE_INDEX = 255
PRETRAINED_LEARNING_RATE = 6e-5  # the Swin paper's ADE20K recipe
SCRATCH_LEARNING_RATE = 2e-3  # from scratch: best of 1e-3, 2e-3, 4e-3 for the tiny preset on shapes
MAX_WARMUP_STEPS = 1500  # the Swin paper's warm-up
WARMUP_FRACTION = 0.05
DEFAULT_NUM_EPOCHS = 20
EVAL_PROTOCOLS = ("keep_ratio", "square")
TRAIN_PIPELINES = ("default", "mmseg")
# The Swin paper's ADE20K run (mmseg's upernet_swin 160k configs). The total batch of 16 is split over the processes.
RECIPES: dict[str, dict[str, Any]] = {
    "swin-ade20k": {
        "decode_head_type": "upernet",
        "use_auxiliary_head": True,
        "learning_rate": 6e-5,
        "weight_decay": 0.01,
        "lr_scheduler": "polynomial",
        "lr_power": 1.0,
        "lr_warmup_steps": 1500,
        "max_train_steps": 160_000,
        "train_batch_size": 16,
        "drop_path_rate": 0.3,
        "resolution": 512,
        "train_pipeline": "mmseg",
        "train_scale": [2048, 512],
        "eval_scale": [2048, 512],
        "do_reduce_labels": True,
        "eval_steps": 16_000,
        "checkpointing_steps": 16_000,
    }
}
NO_WEIGHT_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)
NO_WEIGHT_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")

# Model presets: the Swin-T/S/B backbones at the paper's ADE20K crop size and drop path, and a tiny CPU model.
TINY_PRESET: dict[str, Any] = {
    "image_size": 64,
    "patch_embedding_type": "convolutional",  # the linear patch embedding learns shapes far slower from scratch
    "embed_dim": 32,
    "depths": [1, 1, 2, 1],
    "num_heads": [1, 2, 4, 8],
    "window_size": 4,
    "fpn_hidden_size": 64,
    "head_hidden_size": 32,
    "head_num_groups": 8,
    "drop_path_rate": 0.0,  # a small model trained briefly underfits: no stochastic depth
}
SEGMENTATION_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": TINY_PRESET,
    # the demo segmenter of digit scenes: tiny at width 48 with a third block in stage 3 (telling ten digit classes
    # apart needs more than tiny's capacity: 0.717 test mean IoU for tiny, same recipe)
    "tiny-48": TINY_PRESET | {"image_size": 96, "embed_dim": 48, "depths": [1, 1, 3, 1], "num_heads": [2, 4, 8, 16]},
    **{
        name: {**{k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()}, "image_size": 512}
        | {"drop_path_rate": 0.3}
        for name, preset in SWIN_FPN_PRESETS.items()
    },
}


def build_parser() -> argparse.ArgumentParser:
    """The flags: the common ones plus the segmentation-specific ones (names of transformers' examples)."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    arguments.add_common_arguments(parser)
    seg = parser.add_argument_group("segmentation")
    seg.add_argument(
        "--pretrained_backbone",
        help="A transformers Swin checkpoint (Hub id or folder) to start the backbone from, "
        "e.g. microsoft/swin-tiny-patch4-window7-224.",
    )
    seg.add_argument("--num_labels", type=int, help="Number of classes (default: from the dataset).")
    seg.add_argument("--id2label", help="JSON file mapping class ids to names (default: from the dataset).")
    seg.add_argument(
        "--do_reduce_labels",
        action="store_true",
        help="Map label 0 to the ignore index and c to c - 1 (ADE20K's 'other' class).",
    )
    seg.add_argument(
        "--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on norms/biases/tables)."
    )
    seg.add_argument("--drop_path_rate", type=float, help="Stochastic depth (default: the preset's).")
    loss_help = "The decode head's loss, a weighted sum of ce, dice, focal, lovasz (mmseg's): e.g. ce:1.0,dice:0.5."
    seg.add_argument("--loss", help=loss_help)
    class_weight_help = "One weight >= 0 per class (e.g. 1,1,8), or auto: median frequency balancing (train split)."
    seg.add_argument("--class_weight", help=class_weight_help)
    seg.add_argument("--scale_range", type=float, nargs=2, default=(0.5, 2.0), help="Random scale range.")
    seg.add_argument("--lr_power", type=float, default=1.0, help="Power of the polynomial decay.")
    seg.add_argument("--eval_steps", type=int, help="Evaluate every N steps (default: at the end only).")
    seg.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="Set the defaults of a published run: swin-ade20k is the Swin paper's ADE20K UperNet recipe (UperNet + "
        "auxiliary head, AdamW 6e-5, weight decay 0.01, poly power 1, 1,500 warm-up steps, 160k iterations, total "
        "batch 16, drop path 0.3, crop 512, mmseg's training pipeline, evaluation at scale 2048 512). Flags given "
        "explicitly still win.",
    )
    seg.add_argument(
        "--decode_head_type", choices=("semantic_fpn", "upernet"), help="Decode head (default: config's)."
    )
    seg.add_argument(
        "--use_auxiliary_head",
        action="store_true",
        default=None,
        help="Add the auxiliary FCN head on stage 3 (loss weight 0.4).",
    )
    seg.add_argument(
        "--train_pipeline",
        choices=TRAIN_PIPELINES,
        default="default",
        help="default: random scale of the short side, crop, flip; mmseg: mmseg's ADE20K pipeline (RandomResize of "
        "--train_scale by 0.5-2.0, RandomCrop with cat_max_ratio 0.75, flip, PhotoMetricDistortion).",
    )
    seg.add_argument("--train_scale", **KEEP_RATIO_SCALE, default=(2048, 512), help="mmseg pipeline scale.")
    seg.add_argument(
        "--eval_protocol",
        choices=EVAL_PROTOCOLS,
        default="keep_ratio",
        help="keep_ratio: mmseg's protocol (keep-ratio resize to --eval_scale, whole inference, scored at each label "
        "map's own size); square: images and labels resized to resolution x resolution and scored there (older runs).",
    )
    seg.add_argument(
        "--eval_scale",
        **KEEP_RATIO_SCALE,
        help="Keep-ratio resize scale of the evaluation, e.g. 2048 512 for ADE20K, recorded in the image processor as "
        "evaluate-seg's default (default: --train_scale with --train_pipeline mmseg, else 4*resolution resolution).",
    )
    parser.set_defaults(
        model_config="swin-tiny",
        train_batch_size=16,
        learning_rate=None,
        lr_scheduler="polynomial",
        lr_warmup_steps=None,
        max_grad_norm=0.0,
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; a ``--recipe`` sets defaults that explicit flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.recipe:
        recipe = dict(RECIPES[args.recipe])
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        recipe["train_batch_size"] = max(1, recipe["train_batch_size"] // processes)
        parser.set_defaults(**recipe)
        args = parser.parse_args(argv)
    arguments.check_common_arguments(args)
    args.command_line = arguments.command_line(PROGRAM, sys.argv[1:] if argv is None else argv, [args.hub_token])
    arguments.check_positive(args.num_labels, "--num_labels")
    arguments.check_positive(args.eval_steps, "--eval_steps")
    try:  # the spellings now; the class count is checked once the classes are known
        if args.loss is not None:
            parse_loss(args.loss)
        if args.class_weight is not None:
            parse_class_weight(args.class_weight)
    except ValueError as error:
        raise TrainingError(first_line(error)) from None
    arguments.check_positive(args.weight_decay, "--weight_decay", allow_zero=True)
    if args.drop_path_rate is not None and not 0.0 <= args.drop_path_rate < 1.0:
        raise TrainingError(f"--drop_path_rate must lie in [0, 1), got {args.drop_path_rate}")
    if not 0.0 < args.scale_range[0] <= args.scale_range[1]:
        raise TrainingError(f"--scale_range must be two increasing positive numbers, got {list(args.scale_range)}")
    if args.eval_scale is not None and min(args.eval_scale) < 1:
        raise TrainingError(f"--eval_scale must be two positive sizes such as 2048 512, got {args.eval_scale}")
    if args.id2label is not None and not Path(args.id2label).is_file():
        raise TrainingError(f"--id2label: file {args.id2label} does not exist")
    if args.learning_rate is None:
        args.learning_rate = PRETRAINED_LEARNING_RATE if args.pretrained_backbone else SCRATCH_LEARNING_RATE
    args.random_flip = arguments.default_random_flip(args)
    return args


# --- labels ---------------------------------------------------------------------------------------------------------


def _read_id2label(path: str) -> dict[int, str]:
    """A JSON object class id -> name."""
    try:
        mapping = json.loads(Path(path).read_text())
        return {int(k): str(v) for k, v in mapping.items()}
    except (ValueError, AttributeError, OSError) as error:
        raise TrainingError(f"--id2label: {path} is not a JSON object of class id -> name ({error})") from None


def _label_maps(dataset: datasets.Dataset, reduce_labels: bool):
    """The training annotations as int64 arrays, after label reduction (0 -> ignore, c -> c - 1)."""
    for annotation in dataset.select_columns(["annotation"]):
        labels = np.asarray(annotation["annotation"]).astype(np.int64)
        yield np.where(labels == 0, IGNORE_INDEX, labels - 1) if reduce_labels else labels


def _max_label(dataset: datasets.Dataset, reduce_labels: bool) -> int:
    """The largest class id in the dataset's annotations (after label reduction), ignoring the ignore index."""
    largest = -1
    for labels in _label_maps(dataset, reduce_labels):
        valid = labels[labels != IGNORE_INDEX]
        if valid.size:
            largest = max(largest, int(valid.max()))
    return largest


def resolve_loss_types(args: argparse.Namespace, train_dataset: AnyDataset, num_labels: int) -> list[dict] | None:
    """The decode head's `loss_types` from ``--loss`` and ``--class_weight`` (None: plain cross-entropy); ``auto``
    class weights are median frequency balancing over the training annotations, computed once here and logged."""
    auto = args.class_weight is not None and args.class_weight.strip().lower() == "auto"
    if auto and isinstance(train_dataset, datasets.IterableDataset):
        raise TrainingError("--class_weight auto counts the training labels: give an in-memory dataset or a list")
    label_maps = _label_maps(train_dataset, args.do_reduce_labels) if auto else None
    try:
        return loss_types_from_flags(
            args.loss, args.class_weight, num_labels, label_maps, IGNORE_INDEX, log=logger.info
        )
    except ValueError as error:
        raise TrainingError(first_line(error)) from None


def resolve_id2label(args: argparse.Namespace, train_dataset: AnyDataset) -> dict[int, str]:
    """The classes: ``--id2label``, else the dataset's label names (``--num_labels`` of them if given), else
    ``--num_labels`` numbered classes, else the largest class id found in the training annotations plus one."""
    if args.id2label:
        id2label = _read_id2label(args.id2label)
        if sorted(id2label) != list(range(len(id2label))):
            raise TrainingError(f"--id2label: class ids must be 0..N-1, got {sorted(id2label)[:10]}")
        return id2label
    from_dataset = None if args.do_reduce_labels else dataset_id2label(train_dataset)
    if from_dataset and (args.num_labels is None or args.num_labels == len(from_dataset)):
        return from_dataset
    if args.num_labels is not None:
        return {index: f"class_{index}" for index in range(args.num_labels)}
    if isinstance(train_dataset, datasets.IterableDataset):
        raise TrainingError("a streamed dataset without label names needs --num_labels or --id2label")
    largest = _max_label(train_dataset, args.do_reduce_labels)
    if largest < 0:
        raise TrainingError("the training annotations hold no class ids; give --num_labels or --id2label")
    logger.info(
        f"No label names in the dataset: {largest + 1} classes found in the annotations", main_process_only=True
    )
    return {index: f"class_{index}" for index in range(largest + 1)}


# --- model ----------------------------------------------------------------------------------------------------------


def build_model(
    args: argparse.Namespace, id2label: dict[int, str], loss_types: list[dict] | None = None
) -> SwinFPNForSegmentation:
    """A SwinFPN from ``--model_config`` (preset or JSON config) trained from scratch, or from a transformers Swin
    checkpoint with ``--pretrained_backbone``; `loss_types` (``--loss``, ``--class_weight``) go into its config."""
    labels = {
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {name: index for index, name in id2label.items()},
        "semantic_loss_ignore_index": IGNORE_INDEX,
        "loss_types": loss_types,
    }
    if args.drop_path_rate is not None:
        labels["drop_path_rate"] = args.drop_path_rate
    if args.decode_head_type is not None:
        labels["decode_head_type"] = args.decode_head_type
    if args.use_auxiliary_head is not None:
        labels["use_auxiliary_head"] = args.use_auxiliary_head
    if args.pretrained_backbone:
        kwargs = {**labels, "image_size": args.resolution or 512}
        kwargs.setdefault("drop_path_rate", 0.3)
        try:
            if Path(args.pretrained_backbone).is_dir():
                check_model_folder(args.pretrained_backbone)
            with named_loading_errors(args.pretrained_backbone, "Swin checkpoint"):
                return SwinFPNForSegmentation.from_pretrained_backbone(args.pretrained_backbone, **kwargs)
        except (OSError, ModelFileError) as error:
            raise TrainingError(f"--pretrained_backbone {args.pretrained_backbone!r}: {first_line(error)}") from None
    config = arguments.load_model_config(args.model_config, SEGMENTATION_PRESETS)
    for key in ("id2label", "label2id", "num_labels", "architectures", "transformers_version", "model_type"):
        config.pop(key, None)
    if args.resolution is not None:
        config["image_size"] = args.resolution
    try:
        model_config = SwinFPNConfig(**{**config, **labels})
    except (TypeError, ValueError) as error:
        raise TrainingError(f"--model_config {args.model_config}: {first_line(error)}") from None
    return SwinFPNForSegmentation(model_config)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on the weights of linear and conv layers; none on norms, biases and the relative
    position bias tables (the Swin recipe)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            exempt = (
                isinstance(module, NO_WEIGHT_DECAY_MODULES)
                or name == "bias"
                or any(key in name for key in NO_WEIGHT_DECAY_NAMES)
            )
            (no_decay if exempt else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# --- data -------------------------------------------------------------------------------------------------------------


def build_dataloaders(
    args: argparse.Namespace, data: TrainingData, resolution: int, num_labels: int
) -> tuple[DataLoader, DataLoader | None, SegmentationTrainTransform]:
    """The training and held-out DataLoaders (before ``accelerator.prepare``) and the training transform."""
    transform_options = {
        "num_labels": num_labels,
        "reduce_labels": args.do_reduce_labels,
        "ignore_index": IGNORE_INDEX,
    }
    if args.train_pipeline == "mmseg":
        train_transform = MMSegTrainTransform(
            resolution,
            scale=tuple(args.train_scale),
            ratio_range=tuple(args.scale_range),
            flip_probability=0.5 if args.random_flip else 0.0,
            seed=args.seed,
            **transform_options,
        )
    else:
        train_transform = SegmentationTrainTransform(
            resolution,
            scale_range=tuple(args.scale_range),
            flip_probability=0.5 if args.random_flip else 0.0,
            seed=args.seed,
            **transform_options,
        )
    train_dataloader = training_dataloader(args, data.train, train_transform, collate_segmentation)
    eval_dataloader = None
    if data.eval is not None:
        if args.eval_protocol == "square":
            eval_transform, collate = SegmentationEvalTransform(resolution, **transform_options), collate_segmentation
        else:
            scale = model_test_scale(args, resolution)
            eval_transform = SegmentationKeepRatioEvalTransform(scale, **transform_options)
            collate = collate_segmentation_lists
        eval_dataloader = evaluation_dataloader(args, data.eval, eval_transform, collate, data.eval_source)
    return train_dataloader, eval_dataloader, train_transform


def model_test_scale(args: argparse.Namespace, resolution: int) -> tuple[int, int]:
    """The keep-ratio scale the model is evaluated at, here and (recorded in the saved image processor's
    ``test_scale``) by ``evaluate-seg``: ``--eval_scale`` when given, else mmseg's convention, the training
    pipeline's base scale: ``--train_scale`` for the mmseg pipeline, the short side at the resolution
    (:func:`~hf_swin_ddpm.data.short_side_scale`) for the default one, whose random scale is of the short side."""
    if args.eval_scale:
        return int(args.eval_scale[0]), int(args.eval_scale[1])
    if args.train_pipeline == "mmseg":
        return int(args.train_scale[0]), int(args.train_scale[1])
    return short_side_scale(resolution)


def default_warmup_steps(max_train_steps: int) -> int:
    """5% of the steps, at most the Swin paper's 1,500."""
    return min(MAX_WARMUP_STEPS, math.ceil(WARMUP_FRACTION * max_train_steps))


# --- evaluation -------------------------------------------------------------------------------------------------------


# mmseg's summary metrics under the names of the training results (``eval_mean_iou``, ...)
RESULT_METRICS = {
    "mean_iou": "mIoU",
    "pixel_accuracy": "aAcc",
    "mean_accuracy": "mAcc",
    "mean_dice": "mDice",
    "mean_fscore": "mFscore",
}


def evaluate(accelerator, model, eval_dataloader, id2label: dict[int, str]) -> dict[str, Any]:
    """mmseg's metrics (``hf_swin_ddpm.evaluation.segmentation``) of the held-out images, as ``eval_*`` results:
    every process predicts its images and counts each class's intersection, predicted and labelled pixels, and the
    counts of all processes are gathered and summed (:func:`~hf_swin_ddpm.evaluation.segmentation_counts`).

    Batches of lists (the keep-ratio protocol) are predicted one image at a time, whole, at each label map's size;
    stacked batches (``--eval_protocol square``) in one forward at the batch's size. Per-class values that are
    undefined (a class in neither the labels nor the predictions) are None."""
    counts, num_images = segmentation_counts(
        model,
        eval_dataloader,
        len(id2label),
        ignore_index=IGNORE_INDEX,
        accelerator=accelerator,
        desc="eval",
        leave=False,
    )
    scores = scores_from_counts(counts, id2label)
    results: dict[str, Any] = {f"eval_{ours}": scores[theirs] for ours, theirs in RESULT_METRICS.items()}
    results["eval_samples"] = num_images
    for name, metric in (("iou", "IoU"), ("accuracy", "Acc")):
        results[f"eval_per_class_{name}"] = {
            label: None if math.isnan(row[metric]) else row[metric] for label, row in scores["per_class"].items()
        }
    return results


@torch.no_grad()
def example_prediction(model, eval_batch: dict[str, Any], id2label: dict[int, str], count: int = 4) -> Image.Image:
    """Rows of (image, ground truth, prediction) for the first ``count`` images of a held-out batch, each at its
    label map's size (tiles brought to the first one's size for the grid)."""
    model.eval()
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    colours = class_colours(id2label)
    tiles = []
    for pixel_values, labels in zip(eval_batch["pixel_values"][:count], eval_batch["labels"][:count], strict=True):
        prediction = predict_at_label_size(model, pixel_values, labels.shape, InferenceProtocol()).cpu().numpy()
        image = (pixel_values.cpu().numpy().transpose(1, 2, 0) * std + mean).clip(0, 1)
        image = Image.fromarray((image * 255).round().astype(np.uint8)).resize(prediction.shape[::-1])
        truth = colour_classes(labels.cpu().numpy(), colours, ignore_index=IGNORE_INDEX)
        tiles += [image, truth, colour_classes(prediction, colours)]
    size = tiles[0].size
    tiles = [tile if tile.size == size else tile.resize(size, Image.Resampling.NEAREST) for tile in tiles]
    model.train()
    return reporting.upscale_for_display(image_grid(tiles, columns=3), min_side=384)


# --- the run ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SegmentationTrainingResult:
    """What :func:`train` returns: the trained model, its image processor, the results written to
    ``all_results.json`` and the process index."""

    model: SwinFPNForSegmentation
    image_processor: SwinFPNImageProcessor
    results: dict[str, Any]
    process_index: int


def training_step(
    accelerator,
    model,
    optimizer,
    lr_scheduler,
    batch,
    max_grad_norm: float,
    guard: loop.NonFiniteGuard | None = None,
    forward_model: nn.Module | None = None,
) -> torch.Tensor:
    """One micro-batch of cross-entropy, ignore index 255 (see :func:`~.loop.accumulated_step`); the forward runs
    ``forward_model`` (the compiled model of ``--torch_compile``) when given, everything else ``model``."""

    def compute_loss() -> torch.Tensor:
        return (model if forward_model is None else forward_model)(
            pixel_values=batch["pixel_values"], labels=batch["labels"]
        ).loss

    return loop.accumulated_step(accelerator, model, optimizer, lr_scheduler, compute_loss, max_grad_norm, guard)


def build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over :func:`parameter_groups` (the Swin recipe's weight decay)."""
    return torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )


def build_lr_scheduler(args: argparse.Namespace, accelerator, optimizer, max_train_steps: int):
    """Linear warm-up (``--lr_warmup_steps``, by default :func:`default_warmup_steps`), then ``--lr_scheduler``
    (polynomial decay of power ``--lr_power``); stepped once per process by accelerate, so counted in process-steps."""
    if args.lr_warmup_steps is None:
        args.lr_warmup_steps = default_warmup_steps(max_train_steps)
    return runtime.learning_rate_schedule(args, accelerator, optimizer, max_train_steps, power=args.lr_power)


def train(args: argparse.Namespace) -> SegmentationTrainingResult:
    """Train as the flags say; returns the result on every process (used by the multi-process tests)."""
    # 1. the accelerator, the output folder, the same initial weights on every process
    accelerator, output_dir = runtime.start_run(args)

    # 2. the data, its classes and the model
    with accelerator.main_process_first():
        data = load_train_and_eval_datasets(args, "segmentation")
        id2label = resolve_id2label(args, data.train)
        loss_types = resolve_loss_types(args, data.train, len(id2label))
    model = build_model(args, id2label, loss_types)
    if args.gradient_checkpointing:
        runtime.enable_gradient_checkpointing(model)
    runtime.use_channels_last(model, args)
    resolution = args.resolution or model.config.image_size

    # 3. the dataloaders, the optimizer and the learning-rate schedule, prepared by accelerate
    train_dataloader, eval_dataloader, train_transform = build_dataloaders(args, data, resolution, len(id2label))
    optimizer = build_optimizer(args, model)
    streaming = isinstance(data.train, datasets.IterableDataset)
    train_dataloader = accelerator.prepare(train_dataloader)
    batches_per_epoch = None if streaming else len(train_dataloader)
    max_train_steps, _, _ = loop.resolve_training_length(args, batches_per_epoch, DEFAULT_NUM_EPOCHS)
    lr_scheduler = build_lr_scheduler(args, accelerator, optimizer, max_train_steps)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if eval_dataloader is not None:
        eval_dataloader = prepare_evaluation_dataloader(accelerator, eval_dataloader)

    # 4. resume from a checkpoint when asked, start the trackers
    progress = loop.TrainingProgress()  # saved in every checkpoint (checkpoints.save_checkpoint)
    set_seed(args.seed, device_specific=True)  # different drop-path draws on every process
    checkpoints.resume_if_requested(accelerator, args.resume_from_checkpoint, output_dir, progress)
    unwrapped = accelerator.unwrap_model(model)
    total_batch_size = _start_trackers(accelerator, args, unwrapped, max_train_steps, resolution)

    # 5. the optimizer steps, evaluating every --eval_steps
    optimizer_steps = loop.OptimizerSteps(accelerator, args, progress, max_train_steps, lr_scheduler)
    forward_model = runtime.training_forward_module(model, args)
    model.train()
    batches = loop.resumable_batches(
        accelerator, train_dataloader, train_transform, progress, max_train_steps, streaming
    )

    def train_step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = runtime.channels_last_images(batch["pixel_values"], args)
        return training_step(
            accelerator,
            model,
            optimizer,
            lr_scheduler,
            {**batch, "pixel_values": pixels},
            args.max_grad_norm,
            optimizer_steps.guard,
            forward_model,
        )

    for step in optimizer_steps.steps(batches, train_step):
        if args.eval_steps and step % args.eval_steps == 0 and step != max_train_steps and eval_dataloader:
            _log_evaluation(accelerator, model, eval_dataloader, id2label, optimizer_steps.progress_bar, step)
    loop_results = optimizer_steps.results(total_batch_size)

    # 6. the final evaluation; the model, its image processor, the results and the card saved (and pushed)
    accelerator.wait_for_everyone()
    results: dict[str, Any] = {**loop_results, "num_labels": len(id2label), "resolution": resolution}
    example = None
    if eval_dataloader is not None:
        results.update(evaluate(accelerator, model, eval_dataloader, id2label))
        results.update(eval_split=data.eval_split, eval_source=data.eval_source)
        if accelerator.is_main_process:  # rows of image, ground truth and prediction
            example = example_prediction(unwrapped, next(iter(eval_dataloader)), id2label)
    image_processor = SwinFPNImageProcessor(
        size={"height": resolution, "width": resolution},
        do_reduce_labels=args.do_reduce_labels,
        test_scale=list(model_test_scale(args, resolution)),
    )
    if accelerator.is_main_process:
        with publishing.final_outputs_written(output_dir):
            _save_outputs(args, accelerator, unwrapped, image_processor, results, example, output_dir)
    scalars = {k: v for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    accelerator.log(scalars, step=progress.global_step)
    model = forward_model = None  # the DDP wrapper freed before the process group is (runtime.end_run)
    runtime.end_run(accelerator)
    return SegmentationTrainingResult(unwrapped, image_processor, results, accelerator.process_index)


def _start_trackers(accelerator, args: argparse.Namespace, model, max_train_steps: int, resolution: int) -> int:
    """Start the trackers and log what is trained; returns the total batch size."""
    accelerator.init_trackers(args.tracker_project_name or PROGRAM, config=reporting.tracker_config(args))
    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"Training {sum(p.numel() for p in model.parameters()):,} parameters, {model.config.num_labels} classes, "
        f"for {max_train_steps} steps (batch {total_batch_size}), crops {resolution}x{resolution}",
        main_process_only=True,
    )
    return total_batch_size


def _log_evaluation(accelerator, model, eval_dataloader, id2label: dict[int, str], progress_bar, step: int) -> None:
    """The held-out mean IoU and pixel accuracy during training, to the trackers and the progress bar."""
    results = evaluate(accelerator, model, eval_dataloader, id2label)
    accelerator.log({name: results[name] for name in ("eval_mean_iou", "eval_pixel_accuracy")}, step=step)
    progress_bar.write(f"step {step}: mean IoU {results['eval_mean_iou']:.4f}")


def _save_outputs(
    args: argparse.Namespace,
    accelerator,
    model: SwinFPNForSegmentation,
    image_processor: SwinFPNImageProcessor,
    results: dict[str, Any],
    example: Image.Image | None,
    output_dir: Path,
) -> None:
    """Main process: model, image processor, example prediction, ``all_results.json``, model card, Hub push."""
    model.save_pretrained(output_dir)
    image_processor.save_pretrained(output_dir)
    if example is not None:
        example.save(output_dir / "example_prediction.png")
        reporting.log_image(accelerator, "example_prediction", example, results["global_step"])
    publishing.write_all_results(output_dir, results)
    card_fields = segmentation_card_fields(args, model, results, output_dir, has_example=example is not None)
    publishing.write_model_card(output_dir, "swin_fpn", card_fields)
    if args.push_to_hub:
        save_fields = {"image_processor": image_processor}
        if example is not None:
            save_fields["example_image"] = output_dir / "example_prediction.png"
        url = publishing.push_trained_model(model, args, card_fields, **save_fields)
        print(f"Pushed to {url}")


def segmentation_card_fields(
    args: argparse.Namespace,
    model: SwinFPNForSegmentation,
    results: dict[str, Any],
    output_dir: Path,
    has_example: bool,
) -> dict[str, Any]:
    """The model card fields of the run (``hf_swin_ddpm.hub.render_model_card`` names)."""
    config = model.config
    hyperparameters = {
        "crop size": f"{results['resolution']}x{results['resolution']}",
        "optimizer": f"AdamW betas ({args.adam_beta1}, {args.adam_beta2}), weight decay {args.weight_decay} "
        "(none on norms, biases, relative position tables)",
        "learning_rate": args.learning_rate,
        "lr_scheduler": runtime.learning_rate_schedule_description(args, power=args.lr_power),
        "drop_path_rate": config.drop_path_rate,
        "augmentation": _augmentation_description(args),
        "evaluation": _evaluation_description(args, results["resolution"]),
        "max_grad_norm": args.max_grad_norm or "none",
    }
    model_fields: dict[str, Any] = {
        "training_data": f"Trained on {dataset_description(args)}; evaluated on {results.get('eval_source', 'none')}.",
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "architecture": {
            "embed_dim": config.embed_dim,
            "depths": tuple(config.depths),
            "num_heads": tuple(config.num_heads),
            "window_size": config.window_size,
            "fpn_hidden_size": config.fpn_hidden_size,
            "head_hidden_size": config.head_hidden_size,
            "decode_head": config.decode_head_type + (" + auxiliary FCN head" if config.use_auxiliary_head else ""),
        },
        "labels": [config.id2label[index] for index in sorted(config.id2label)],
        "started_from_checkpoint": bool(args.pretrained_backbone),
    }
    if args.pretrained_backbone and not Path(args.pretrained_backbone).exists():
        model_fields["base_model"] = args.pretrained_backbone
    if has_example:
        model_fields["image_file"] = "example_prediction.png"
        model_fields["image_caption"] = "Held-out images, ground truth and prediction"
    return publishing.run_card_fields(
        args,
        results,
        output_dir,
        model_config=args.pretrained_backbone or args.model_config,
        hyperparameters=hyperparameters,
        metric=("mean_iou", results.get("eval_mean_iou")),
        **model_fields,
    )


def _augmentation_description(args: argparse.Namespace) -> str:
    if args.train_pipeline == "mmseg":
        return (
            f"mmseg: RandomResize {tuple(args.train_scale)} x {tuple(args.scale_range)}, RandomCrop "
            f"(cat_max_ratio 0.75), {'flip, ' if args.random_flip else ''}PhotoMetricDistortion"
        )
    return f"random scale {tuple(args.scale_range)}, crop" + (", horizontal flip" if args.random_flip else "")


def _evaluation_description(args: argparse.Namespace, resolution: int) -> str:
    if args.eval_protocol == "square":
        return f"images and labels resized to {resolution}x{resolution}, scored there"
    scale = model_test_scale(args, resolution)
    return f"keep-ratio resize to {scale}, whole inference, scored at each label map's size (mmseg's protocol)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hf_swin_ddpm.training.train_segmentation`` / ``hf-swin-ddpm train-seg``."""
    return run_with_clear_errors(PROGRAM, lambda: train(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
