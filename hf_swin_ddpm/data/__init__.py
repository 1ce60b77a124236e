"""Datasets and transforms for training: the embedded ``digits`` and ``shapes`` sets, Hub datasets, local folders."""

from .embedded import DIGITS_ID2LABEL, EMBEDDED_DATASETS, dataset_id2label, embedded_dataset
from .loading import load_image_dataset, normalize_columns
from .shapes import SHAPES_ID2LABEL
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INDEX_COLUMN,
    DDPMTransform,
    DecodingTransform,
    MMSegTrainTransform,
    SegmentationEvalTransform,
    SegmentationKeepRatioEvalTransform,
    SegmentationTrainTransform,
    UnreadableImageError,
    attach_transform,
    check_labels,
    collate_ddpm,
    collate_segmentation,
    collate_segmentation_lists,
    example_rng,
    keep_ratio_size,
    photo_metric_distortion,
)

__all__ = [
    "DIGITS_ID2LABEL",
    "EMBEDDED_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INDEX_COLUMN",
    "SHAPES_ID2LABEL",
    "DDPMTransform",
    "MMSegTrainTransform",
    "SegmentationEvalTransform",
    "SegmentationKeepRatioEvalTransform",
    "SegmentationTrainTransform",
    "DecodingTransform",
    "UnreadableImageError",
    "attach_transform",
    "check_labels",
    "collate_ddpm",
    "collate_segmentation",
    "collate_segmentation_lists",
    "dataset_id2label",
    "embedded_dataset",
    "example_rng",
    "keep_ratio_size",
    "photo_metric_distortion",
    "load_image_dataset",
    "normalize_columns",
]
