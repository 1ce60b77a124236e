"""Evaluation of both models as their papers report it.

- ``segmentation``: mmsegmentation's protocol and metrics for SwinFPN (aAcc, mIoU, mAcc, mDice, mFscore);
- ``extractors``, ``statistics``, ``metrics``, ``reference``, ``sampling``: a DDPM's sample quality (FID, KID,
  Inception Score, cached reference statistics); ``bits_per_dim`` and ``rate_distortion``: its variational bound;
- ``loop``: the distributed evaluation loop they share (accelerate's ``gather_for_metrics``).

    from hf_swin_ddpm.evaluation import evaluate_segmentation, feature_statistics, frechet_distance, SampleMetrics

Not part of the remote-code files: it needs torchmetrics and scipy (the `train` or `eval` extra), and the
`inception` features torch-fidelity (the `eval` extra).
"""

from .bits_per_dim import mean_bits_per_dim
from .extractors import (
    CLASSIFIER_DATASETS,
    ClassifierFeatures,
    DigitClassifier,
    EvaluationError,
    InceptionFeatures,
    load_classifier,
    load_extractor,
    train_classifier,
)
from .loop import evaluation_loop, prepare_evaluation_dataloader
from .metrics import SampleMetrics
from .reference import Reference, parse_reference, reference_batches, reference_statistics
from .sampling import add_pipeline_samples, check_sample_count
from .segmentation import InferenceProtocol, evaluate_segmentation, format_results_table, segmentation_counts
from .statistics import (
    ReferenceStatistics,
    StaleStatisticsError,
    feature_statistics,
    frechet_distance,
    load_statistics,
)

__all__ = [
    "CLASSIFIER_DATASETS",
    "ClassifierFeatures",
    "DigitClassifier",
    "EvaluationError",
    "InceptionFeatures",
    "InferenceProtocol",
    "Reference",
    "ReferenceStatistics",
    "SampleMetrics",
    "StaleStatisticsError",
    "add_pipeline_samples",
    "check_sample_count",
    "evaluate_segmentation",
    "evaluation_loop",
    "feature_statistics",
    "format_results_table",
    "frechet_distance",
    "load_classifier",
    "load_extractor",
    "load_statistics",
    "mean_bits_per_dim",
    "parse_reference",
    "prepare_evaluation_dataloader",
    "reference_batches",
    "reference_statistics",
    "segmentation_counts",
    "train_classifier",
]
