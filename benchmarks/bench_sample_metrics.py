"""Sample metrics with classifier features: the classifiers, the real-data floor, the cost, and a DDPM's samples.

For each dataset: the digit classifier's training time and held-out accuracy (fresh cache; must be >= 97%), the FID
of the real held-out split against the real training split at the held-out size N (the floor any model is judged
against), the IS of the real held-out digits, the cost of the metrics per 1,000 images (features + update, then
compute) and of a statistics cache hit. With `--model`: FID / KID / IS of N samples at each `--steps` against the
training and the held-out split. Writes `benchmarks/results/sample_metrics.json`.

    python benchmarks/bench_sample_metrics.py [--datasets digits mnist] [--model FOLDER --steps 250 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hf_swin_ddpm import DDPMPaperPipeline
from hf_swin_ddpm.evaluation import SampleMetrics, reference_statistics
from hf_swin_ddpm.evaluation.extractors import CLASSIFIER_MIN_ACCURACY
from hf_swin_ddpm.evaluation.sampling import add_pipeline_samples

RESULTS = Path(__file__).parent / "results"


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


def model_samples(metrics: SampleMetrics, folder: Path, dataset: str, steps: list[int], count: int, cache: Path):
    pipeline = DDPMPaperPipeline.from_pretrained(folder)
    side = pipeline.unet.config.sample_size
    rows = {}
    references = {
        split: reference_statistics(
            f"{dataset}:{split}", metrics.extractor, resolution=side, channels=1, cache_dir=cache
        )
        for split in ("train", "test")
    }
    for num_steps in steps:
        metrics.set_reference(references["train"])
        metrics.reset()
        timing = add_pipeline_samples(metrics, pipeline, count, num_steps, batch_size=count, progress=False)
        against_train = metrics.compute()
        metrics.set_reference(references["test"])  # the generated features stay
        against_test = metrics.compute()
        metrics.reset()
        rows[num_steps] = {
            "fid_vs_train": against_train["fid"],
            "fid_vs_test": against_test["fid"],
            "kid_vs_train": against_train["kid_mean"],
            "inception_score": against_train["inception_score_mean"],
            "sampling_seconds": timing["sampling_seconds"],
        }
    results_file = folder / "all_results.json"
    bits = json.loads(results_file.read_text()).get("eval_total_bpd") if results_file.is_file() else None
    return {"model": str(folder), "side": side, "num_samples": count, "bits_per_dim": bits, "by_steps": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    parser.add_argument(
        "--model", type=Path, default=None, help="a DDPMPaperPipeline folder trained on --model_dataset"
    )
    parser.add_argument("--model_dataset", default="digits")
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 20])
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
            test_count = report.get(args.model_dataset, {}).get("num_test", 180)
            report["model"] = model_samples(metrics, args.model, args.model_dataset, args.steps, test_count, cache)
            print(json.dumps({"model": report["model"]}, indent=2), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
