"""Which loss helps a rare class: cross-entropy vs CE + Dice vs class-weighted CE, same data, steps and seed.

The data: an imbalanced variant of the embedded `shapes` dataset. Its training split keeps every image without a
triangle and only `--rare_fraction` of the images with one, so triangles cover a small share of the training pixels;
the test split is the full, balanced `shapes` test split. Each loss trains the tiny SwinFPN with `hf-swin-ddpm
train-seg` (the same flags apart from `--loss` / `--class_weight`) and is scored on the test split with mmseg's
metrics by the script's own end-of-training evaluation. Writes `benchmarks/results/losses_imbalanced.json`.

    python benchmarks/bench_losses_imbalanced.py [--max_train_steps 1500] [--rare_fraction 0.05]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np

from hf_swin_ddpm.data import SHAPES_ID2LABEL, embedded_dataset

RESULTS = Path(__file__).parent / "results" / "losses_imbalanced.json"
RARE_CLASS = 3  # triangle
LOSSES = {
    "ce": ["--loss", "ce:1.0"],
    "ce+dice": ["--loss", "ce:1.0,dice:0.5"],
    "ce, class_weight auto": ["--loss", "ce:1.0", "--class_weight", "auto"],
}


def imbalanced_shapes(folder: Path, rare_fraction: float, seed: int = 0) -> dict:
    """Save the imbalanced `shapes` variant to `folder` (`save_to_disk`); returns its class pixel shares."""
    train = embedded_dataset("shapes", "train")
    has_rare = [bool((np.asarray(a) == RARE_CLASS).any()) for a in train["annotation"]]
    rng = np.random.default_rng(seed)
    keep = [i for i, rare in enumerate(has_rare) if not rare or rng.random() < rare_fraction]
    train = train.select(keep)
    counts = np.zeros(len(SHAPES_ID2LABEL), dtype=np.int64)
    for annotation in train["annotation"]:
        counts += np.bincount(np.asarray(annotation).ravel(), minlength=len(SHAPES_ID2LABEL))[: len(counts)]
    datasets.DatasetDict({"train": train, "test": embedded_dataset("shapes", "test")}).save_to_disk(str(folder))
    return {
        "train_images": len(train),
        "train_images_with_rare_class": sum(has_rare[i] for i in keep),
        "train_pixel_share": {SHAPES_ID2LABEL[c]: float(counts[c] / counts.sum()) for c in range(len(counts))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_train_steps", type=int, default=1500)
    parser.add_argument("--rare_fraction", type=float, default=0.05)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    report: dict = {"rare_class": SHAPES_ID2LABEL[RARE_CLASS], "max_train_steps": args.max_train_steps, "runs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "shapes-imbalanced"
        report["data"] = imbalanced_shapes(data, args.rare_fraction)
        print(json.dumps(report["data"]), flush=True)
        for name, flags in LOSSES.items():
            output_dir = Path(scratch) / name.replace(" ", "_").replace(",", "")
            command = [
                *(sys.executable, "-m", "hf_swin_ddpm.cli", "train-seg"),
                *("--dataset_name", str(data), "--model_config", "tiny", "--resolution", "64"),
                *("--train_batch_size", "16", "--max_train_steps", str(args.max_train_steps)),
                *("--scale_range", "1", "1", "--eval_batch_size", "50", "--logging_steps", "100"),
                *("--checkpointing_steps", str(args.max_train_steps), "--output_dir", str(output_dir), *flags),
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            results = json.loads((output_dir / "all_results.json").read_text())
            per_class = results["eval_per_class_iou"]
            report["runs"][name] = {
                "flags": flags,
                "mIoU": results["eval_mean_iou"],
                "rare_class_IoU": per_class[SHAPES_ID2LABEL[RARE_CLASS]],
                "per_class_IoU": per_class,
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(json.dumps({name: report["runs"][name]}), flush=True)
            args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
