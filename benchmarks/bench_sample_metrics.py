"""Sample metrics with classifier features: the classifiers, the real-data floor, the cost, and a DDPM's samples.

For each dataset: the digit classifier's training time and held-out accuracy (fresh cache; must be >= 97%), the FID
of the real held-out split against the real training split at the held-out size N (the floor any model is judged
against), the IS of the real held-out digits, the cost of the metrics per 1,000 images (features + update, then
compute) and of a statistics cache hit. With `--model`: FID / KID / IS of N samples at each `--steps` against the
training and the held-out split. Writes `benchmarks/results/sample_metrics.json`.

    python benchmarks/bench_sample_metrics.py [--datasets digits mnist] [--model FOLDER --steps 250 20 --seeds 0 1 2
        --variance_types fixed_large fixed_small --precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hf_swin_ddpm import DDPMPaperPipeline
from hf_swin_ddpm.evaluation import SampleMetrics, reference_statistics
from hf_swin_ddpm.evaluation.extractors import CLASSIFIER_MIN_ACCURACY
from hf_swin_ddpm.evaluation.sampling import add_pipeline_samples

RESULTS = Path(__file__).parent / "results"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # --precisions: the UNet's autocast dtype while sampling


class ConfidenceRecorder:
    """Passes generated images on to `metrics` and keeps the classifier's confidence in each (its top softmax
    probability): bf16 sampling must keep the digits as recognisable as float32's."""

    def __init__(self, metrics: SampleMetrics) -> None:
        self.metrics, self.confidences = metrics, []

    def update(self, images: torch.Tensor, real: bool) -> None:
        features, logits = self.metrics.extract(images)
        self.metrics.update_features(features, logits, real)
        self.confidences.extend(logits.softmax(dim=-1).amax(dim=-1).tolist())


def real_floor(metrics: SampleMetrics, dataset: str, side: int, cache: Path) -> dict:
    """FID / KID of the real held-out split against the real training split, and the IS of the held-out split."""
    train = reference_statistics(f"{dataset}:train", metrics.extractor, resolution=side, channels=1, cache_dir=cache)
    start = time.perf_counter()
    again = reference_statistics(f"{dataset}:train", metrics.extractor, resolution=side, channels=1, cache_dir=cache)
    cache_hit = time.perf_counter() - start
    assert again.count == train.count
    test = reference_statistics(f"{dataset}:test", metrics.extractor, resolution=side, channels=1, cache_dir=cache)
    metrics.set_reference(train)
    with torch.no_grad():  # the stored features are scaled; the head takes the classifier's own
        unscaled = torch.from_numpy(test.features).float() / metrics.extractor.feature_scale
        logits = metrics.extractor.classifier.head(unscaled).double()
    metrics.update_features(torch.from_numpy(test.features).double(), logits, real=False)
    floor = metrics.compute()
    metrics.reset()
    return {
        "side": side,
        "num_train": train.count,
        "num_test": test.count,
        "fid_test_vs_train": floor["fid"],
        "kid_test_vs_train": floor["kid_mean"],
        "inception_score_real_test": floor["inception_score_mean"],
        "statistics_cache_hit_seconds": round(cache_hit, 4),
    }


def metric_cost(metrics: SampleMetrics, side: int) -> dict:
    """Seconds for 1,000 images: the features and the torchmetrics updates, then compute (FID, KID, IS)."""
    images = torch.rand(1000, 1, side, side, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for batch in images.split(250):
        metrics.update(batch, real=False)
    update = time.perf_counter() - start
    start = time.perf_counter()
    metrics.compute()
    compute = time.perf_counter() - start
    metrics.reset()
    return {"update_seconds_per_1000": round(update, 3), "compute_seconds_1000": round(compute, 3)}


def model_samples(
    metrics: SampleMetrics,
    folder: Path,
    dataset: str,
    steps: list[int],
    count: int,
    cache: Path,
    seeds: list[int],
    variance_types: list[str],
    floor: float | None,
    on_row=None,
    precisions: tuple[str, ...] = ("fp32",),
) -> dict:
    """FID / KID / IS of `count` samples per seed, for each step count and variance type (sigma_t^2 = beta_t is
    "fixed_large", the posterior variance "fixed_small"), against the training and the held-out split; with the real
    data's floor, the quality bar's ratio (mean FID against train / floor), and the classifier's mean confidence;
    for each of `precisions` (fp32, bf16 autocast). `on_row(rows)` after every row (the report is written as it
    grows, so a run cut short keeps what it measured)."""
    pipeline = DDPMPaperPipeline.from_pretrained(folder)
    side = pipeline.unet.config.sample_size
    rows = {}
    references = {
        split: reference_statistics(
            f"{dataset}:{split}", metrics.extractor, resolution=side, channels=1, cache_dir=cache
        )
        for split in ("train", "test")
    }
    default_variance = pipeline.scheduler.config.variance_type
    rows_to_run = [(v, n, p) for v in variance_types for n in steps for p in precisions]
    for variance_type, num_steps, precision in rows_to_run:
        pipeline.scheduler.register_to_config(variance_type=variance_type)
        runs = []
        for seed in seeds:
            metrics.set_reference(references["train"])
            metrics.reset()
            recorder = ConfidenceRecorder(metrics)
            timing = add_pipeline_samples(
                recorder,
                pipeline,
                count,
                num_steps,
                batch_size=count,
                seed=seed,
                progress=False,
                autocast_dtype=PRECISIONS[precision],
            )
            against_train = metrics.compute()
            metrics.set_reference(references["test"])  # the generated features stay
            against_test = metrics.compute()
            metrics.reset()
            runs.append(
                {
                    "seed": seed,
                    "fid_vs_train": against_train["fid"],
                    "fid_vs_test": against_test["fid"],
                    "kid_vs_train": against_train["kid_mean"],
                    "inception_score": against_train["inception_score_mean"],
                    "classifier_confidence": statistics.fmean(recorder.confidences),
                    "sampling_seconds": timing["sampling_seconds"],
                }
            )
        fids = [run["fid_vs_train"] for run in runs]
        summary = {
            "fid_vs_train_mean": statistics.fmean(fids),
            "fid_vs_train_spread": [min(fids), max(fids)],
            "inception_score_mean": statistics.fmean(run["inception_score"] for run in runs),
            "classifier_confidence_mean": statistics.fmean(run["classifier_confidence"] for run in runs),
            "ratio_to_floor": statistics.fmean(fids) / floor if floor else None,
            "runs": runs,
        }
        name = f"{variance_type}/{num_steps}" + ("" if precision == "fp32" else f"/{precision}")
        rows[name] = summary
        print(json.dumps({name: summary}), flush=True)
        if on_row is not None:
            on_row(rows)
    pipeline.scheduler.register_to_config(variance_type=default_variance)
    results_file = folder / "all_results.json"
    bits = json.loads(results_file.read_text()).get("eval_total_bpd") if results_file.is_file() else None
    return {
        "model": str(folder),
        "side": side,
        "num_samples": count,
        "floor_fid_test_vs_train": floor,
        "bits_per_dim": bits,
        "by_variance_and_steps": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    parser.add_argument(
        "--model", type=Path, default=None, help="a DDPMPaperPipeline folder trained on --model_dataset"
    )
    parser.add_argument("--model_dataset", default="digits")
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (the spread of FID)")
    parser.add_argument(
        "--variance_types", nargs="+", default=["fixed_large"], help="sigma_t^2: fixed_large (beta_t), fixed_small"
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=list(PRECISIONS), default=["fp32"], help="sample in fp32 and/or bf16"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "sample_metrics.json")
    args = parser.parse_args()
    report: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as cache_name:
        cache = Path(cache_name)
        for dataset in args.datasets:
            start = time.perf_counter()
            metrics = SampleMetrics("classifier", classifier_dataset=dataset, cache_dir=cache)
            record = dict(metrics.extractor.record, load_seconds=round(time.perf_counter() - start, 2))
            assert record["test_accuracy"] >= CLASSIFIER_MIN_ACCURACY, record
            side = record["input_side"]
            report[dataset] = {"classifier": record, **real_floor(metrics, dataset, side, cache)}
            report[dataset].update(metric_cost(metrics, side))
            print(json.dumps({dataset: report[dataset]}, indent=2), flush=True)
        if args.model is not None:
            metrics = SampleMetrics("classifier", classifier_dataset=args.model_dataset, cache_dir=cache)
            real = report.get(args.model_dataset, {})
            report["model"] = model_samples(
                metrics,
                args.model,
                args.model_dataset,
                args.steps,
                real.get("num_test", 180),
                cache,
                args.seeds,
                args.variance_types,
                real.get("fid_test_vs_train"),
                on_row=lambda rows: write_report({**report, "model_rows_so_far": rows}, args.output),
                precisions=tuple(args.precisions),
            )
            print(json.dumps({"model": report["model"]}, indent=2), flush=True)
    write_report(report, args.output)


def write_report(report: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
