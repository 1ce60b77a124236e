"""Evaluation of both models as their papers report it.

- ``segmentation``: mmsegmentation's protocol and metrics for SwinFPN (aAcc, mIoU, mAcc, mDice, mFscore);
- ``extractors``, ``statistics``, ``metrics``, ``reference``, ``sampling``, ``sample_folder``, ``sweep``: a DDPM's
  sample quality (FID, KID, Inception Score, cached reference statistics, samples drawn per index over processes and
  kept on disk, the sampler trade-off table); ``bits_per_dim`` and ``rate_distortion``: its variational bound;
- ``loop``: the distributed evaluation loop they share (accelerate's ``gather_for_metrics``).

    from hf_swin_ddpm.evaluation import evaluate_segmentation, feature_statistics, frechet_distance, SampleMetrics

Not part of the remote-code files. The names below are imported on first use, so that ``segmentation_inference``
(what `SwinFPNForSegmentation.inference` runs) needs torch only; the metrics need torchmetrics and scipy (the `train`
or `eval` extra), and the `inception` features torch-fidelity (the `eval` extra).
"""

import importlib
from typing import Any

# name -> the submodule that defines it
_SUBMODULE_OF = {
    "mean_bits_per_dim": "bits_per_dim",
    **dict.fromkeys(
        (
            "CLASSIFIER_DATASETS",
            "ClassifierFeatures",
            "DigitClassifier",
            "EvaluationError",
            "InceptionFeatures",
            "load_classifier",
            "load_extractor",
            "train_classifier",
        ),
        "extractors",
    ),
    "evaluation_loop": "loop",
    "prepare_evaluation_dataloader": "loop",
    "SampleMetrics": "metrics",
    **dict.fromkeys(("Reference", "parse_reference", "reference_batches", "reference_statistics"), "reference"),
    "segment_large": "segmentation_inference",
    **dict.fromkeys(("SampleFolder", "load_sample_images", "save_sample_batch"), "sample_folder"),
    **dict.fromkeys(
        (
            "add_pipeline_samples",
            "check_sample_count",
            "draw_samples",
            "evaluate_samples",
            "generate_samples",
            "sample_generators",
            "sample_seed",
        ),
        "sampling",
    ),
    **dict.fromkeys(("plot_sweep", "sweep_samplers", "write_sweep_csv"), "sweep"),
    **dict.fromkeys(
        ("InferenceProtocol", "evaluate_segmentation", "format_results_table", "segmentation_counts"), "segmentation"
    ),
    **dict.fromkeys(
        ("ReferenceStatistics", "StaleStatisticsError", "feature_statistics", "frechet_distance", "load_statistics"),
        "statistics",
    ),
}

__all__ = sorted(_SUBMODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SUBMODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
