"""Sample-quality metrics for DDPMs as the papers report them: FID, KID, Inception Score, cached reference statistics.

    from hf_swin_ddpm.evaluation import feature_statistics, frechet_distance, SampleMetrics

Not part of the remote-code files: it needs torchmetrics and scipy (the `train` or `eval` extra), and the
`inception` features torch-fidelity (the `eval` extra).
"""

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
from .metrics import SampleMetrics
from .reference import Reference, parse_reference, reference_batches, reference_statistics
from .sampling import add_pipeline_samples, check_sample_count
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
    "Reference",
    "ReferenceStatistics",
    "SampleMetrics",
    "StaleStatisticsError",
    "add_pipeline_samples",
    "check_sample_count",
    "feature_statistics",
    "frechet_distance",
    "load_classifier",
    "load_extractor",
    "load_statistics",
    "parse_reference",
    "reference_batches",
    "reference_statistics",
    "train_classifier",
]
