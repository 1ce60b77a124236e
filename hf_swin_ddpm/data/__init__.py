"""Datasets and transforms for training: the embedded ``digits``, ``mnist``, ``digit_scenes`` and ``shapes`` sets, Hub datasets, local folders."""

from .digit_scenes import DIGIT_SCENES_ID2LABEL, SceneLayout
from .embedded import DIGITS_ID2LABEL, EMBEDDED_DATASETS, dataset_id2label, embedded_dataset
from .loading import EVALUATION_SPLITS, load_evaluation_split, load_image_dataset, normalize_columns
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
    "DIGIT_SCENES_ID2LABEL",
    "SceneLayout",
    "DIGITS_ID2LABEL",
    "EMBEDDED_DATASETS",
    "EVALUATION_SPLITS",
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
    "load_evaluation_split",
    "load_image_dataset",
    "normalize_columns",
]
