"""Time and peak memory of `segment_large` (slide inference in bounded memory, a label map out) against the
in-memory `model.inference(mode="slide")` (float32 logits of the whole image, then the argmax) on large RGB images.

Every measurement runs in a fresh child process: its peak resident set size (`ru_maxrss`) minus its resident size
after building the model and the uint8 input image is the peak memory of the segmentation, model and input excluded
(the in-memory path's normalised float32 copy of the image counts: it is part of that path). `window_forward`, one
forward of a window batch, is the part both paths share. A 150-class SwinFPN of
the `micro` geometry (`bench_seg_inference.py`; the memory of both paths is dominated by the logits, not the
network), crop 512 and stride 341 (mmseg's ADE20K setting). The in-memory slide inference runs only where its
logits, 4 x 150 x H x W bytes, fit in the memory available (not at 8192x8192: 37.5 GiB); where both run, the label
maps are compared (equal = every pixel the same class). A size is N (N x N) or HxW: segment_large's memory is set
by the width (the rows carried between bands span it), so a 1024x8192 strip shows the 8192x8192 bound in an eighth of
the time.

    python benchmarks/bench_segment_large.py [--sizes 2048 4096 8192 1024x8192] [--methods segment_large slide]
        [--window_batch_size 4] [--threads 2]

Writes `benchmarks/results/segment_large.json` (or `--output`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_seg_inference import BENCH_CONFIGS
from bench_support import resident_mib

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.evaluation import segment_large

RESULTS = Path(__file__).parent / "results"
MICRO = BENCH_CONFIGS["micro"]  # the model of bench_seg_inference.py
NUM_LABELS, CROP, STRIDE = 150, 512, 341
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_model() -> SwinFPNForSegmentation:
    torch.manual_seed(0)
    config = SwinFPNConfig(**MICRO, num_labels=NUM_LABELS, drop_path_rate=0.0, max_input_pixels=None)
    return SwinFPNForSegmentation(config).eval()


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def child(method: str, size: str, window_batch_size: int, threads: int) -> dict:
    """One segmentation of a random RGB image of `size` (N or HxW) in this (fresh) process."""
    torch.set_num_threads(threads)
    model = build_model()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))  # thread pool and allocator warm
    image = np.random.default_rng(0).integers(0, 256, (*parse_size(size), 3), dtype=np.uint8)
    baseline = resident_mib()
    start = time.perf_counter()
    if method == "window_forward":  # the fixed part of both: one forward of a window batch and its logits
        with torch.no_grad():
            logits = model(torch.zeros(window_batch_size, 3, CROP, CROP)).logits
        labels = logits[0].argmax(dim=0).to(torch.uint8).numpy()
    elif method == "segment_large":
        labels = segment_large(model, image, CROP, STRIDE, window_batch_size, mean=MEAN, std=STD)
    else:
        mean, std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)
        pixels = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0).sub_(mean).div_(std)[None]
        logits = model.inference(
            pixels, mode="slide", crop_size=CROP, stride=STRIDE, window_batch_size=window_batch_size
        )
        labels = logits[0].argmax(dim=0).to(torch.uint8).numpy()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "method": method,
        "size": size,
        "seconds": seconds,
        "peak_mib_above_model_and_input": peak - baseline,
        "peak_rss_mib": peak,
        "labels_sha1": hashlib.sha1(labels.tobytes()).hexdigest(),
    }


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["2048", "4096", "8192"], help="N or HxW")
    methods = ("window_forward", "segment_large", "slide")
    parser.add_argument("--methods", nargs="+", default=list(methods), choices=methods)
    parser.add_argument("--window_batch_size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "segment_large.json")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.window_batch_size, args.threads)))
        return
    rows, labels_equal = [], {}
    for size in args.sizes:
        height, width = parse_size(size)
        logits_mib = 4 * NUM_LABELS * height * width / 2**20
        for method in args.methods:
            if method == "slide" and 1.3 * (logits_mib + 12 * height * width / 2**20) > available_mib():
                print(f"{method:>13} {height}x{width}: skipped, {logits_mib:.0f} MiB of logits do not fit", flush=True)
                rows.append({"method": method, "size": size, "skipped": "the logits do not fit in memory"})
                continue
            command = [sys.executable, __file__, "--child", method, size]
            command += ["--window_batch_size", str(args.window_batch_size), "--threads", str(args.threads)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            row = json.loads(output.strip().splitlines()[-1])
            row["logits_mib"] = logits_mib
            rows.append(row)
            print(
                f"{method:>13} {height}x{width}: {row['seconds']:.1f} s, peak {row['peak_mib_above_model_and_input']:.0f}"
                f" MiB above the model and the input ({logits_mib:.0f} MiB of float32 logits in memory)",
                flush=True,
            )
        pair = [
            row for row in rows if row["size"] == size and row["method"] != "window_forward" and "labels_sha1" in row
        ]
        if len(pair) == 2:
            labels_equal[size] = pair[0]["labels_sha1"] == pair[1]["labels_sha1"]
            print(f"{'':>13} {height}x{width}: labels equal: {labels_equal[size]}")
    results = {
        "model": {"geometry": "micro", **MICRO, "num_labels": NUM_LABELS},
        "crop_size": CROP,
        "stride": STRIDE,
        "window_batch_size": args.window_batch_size,
        "threads": args.threads,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
        "rows": rows,
        "labels_equal": labels_equal,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
