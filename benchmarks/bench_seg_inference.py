"""Cost of mmseg-style inference with `SwinFPNForSegmentation.inference`: slide vs whole, TTA, UperNet vs Semantic FPN.

1. Slide vs whole at 1024x1024 and 2048x2048 (and slide alone at 4096x4096): median time and peak resident memory
   of one image, crop 512 and stride 341 (mmseg's ADE20K setting).
   Every measurement runs in a fresh child process, whose peak resident set size (`ru_maxrss`) minus its resident
   size after building the model is the inference's peak memory: the parent's allocator state cannot leak into it.
2. TTA cost: mmseg's 6 scales x flip (12 views) against one view, whole mode at 512x512, timed alternately.
3. Head cost at 512x512: UperNet (512 channels) against Semantic FPN (FPN 256 + head 128) on Swin-T's stage
   widths (96-768), the heads alone on the same random stage maps: FLOPs (torch.utils.flop_counter) and time.

    python benchmarks/bench_seg_inference.py [--config micro|tiny|swin-tiny] [--num_labels 19] [--threads 2]
        [--repeats 3] [--head_repeats 2]

Writes `benchmarks/results/seg_inference.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from bench_support import alternate, resident_mib, timed
from torch.utils.flop_counter import FlopCounterMode

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.evaluation.segmentation import MMSEG_TTA_SCALES
from hf_swin_ddpm.training.train_segmentation import SEGMENTATION_PRESETS

RESULTS = Path(__file__).parent / "results"
# A very small model so that the 144 windows at 4096x4096 fit a short run on 2 shared cores; slide vs whole ratios
# and the memory bound do not depend on the width. `tiny` (the training preset) and `swin-tiny` are options.
BENCH_CONFIGS = {
    "micro": dict(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 2, 4],
        window_size=7,
        fpn_hidden_size=16,
        head_hidden_size=8,
        head_num_groups=4,
        image_size=512,
    ),
    "tiny": SEGMENTATION_PRESETS["tiny"],
    "swin-tiny": SEGMENTATION_PRESETS["swin-tiny"],
}
CROP, STRIDE = 512, 341  # mmseg's ADE20K slide setting, for every config
CASES = [("whole", 1024), ("slide", 1024), ("whole", 2048), ("slide", 2048), ("slide", 4096)]


def build_model(config_name: str, num_labels: int = 150, **overrides) -> SwinFPNForSegmentation:
    torch.manual_seed(0)
    preset = {**BENCH_CONFIGS[config_name], "drop_path_rate": 0.0, "max_input_pixels": None, **overrides}
    return SwinFPNForSegmentation(SwinFPNConfig(**preset, num_labels=num_labels)).eval()


def child(config_name: str, mode: str, size: int, threads: int, repeats: int, num_labels: int) -> dict:
    """One measurement in this (fresh) process: median seconds and peak MiB above the resident size after setup,
    and the size of the returned logits (num_labels x size x size fp32), which every mode must hold."""
    torch.set_num_threads(threads)
    model = build_model(config_name, num_labels)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))  # thread pool and allocator warm
    baseline = resident_mib()
    pixel_values = torch.randn(1, 3, size, size)

    def run() -> None:
        with torch.no_grad():
            model.inference(pixel_values, mode=mode, crop_size=CROP, stride=STRIDE)

    times = timed(run, repeats, warmup=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    output_mib = num_labels * size * size * 4 / 2**20
    return {
        "mode": mode,
        "size": size,
        "seconds": statistics.median(times),
        "peak_mib": peak - baseline,
        "logits_mib": output_mib,
        "peak_minus_logits_mib": peak - baseline - output_mib,
    }


def slide_vs_whole(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode, size in CASES:
        command = [sys.executable, __file__, "--child", mode, str(size), "--config", args.config]
        command += [
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
            "--num_labels",
            str(args.num_labels),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"{mode:>5} {size}x{size}: {row['seconds']:.2f} s, peak {row['peak_mib']:.0f} MiB "
            f"({row['peak_minus_logits_mib']:.0f} MiB beyond the {row['logits_mib']:.0f} MiB of logits)",
            flush=True,
        )
    return rows


def tta_cost(args: argparse.Namespace) -> dict:
    model = build_model(args.config, args.num_labels)
    pixel_values = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        single, tta = alternate(
            lambda: model.inference(pixel_values),
            lambda: model.inference(pixel_values, scales=MMSEG_TTA_SCALES, flip=True),
            args.repeats,
        )
    result = {"single_seconds": statistics.median(single), "tta_seconds": statistics.median(tta)}
    result["ratio"] = result["tta_seconds"] / result["single_seconds"]
    result["views"] = 2 * len(MMSEG_TTA_SCALES)
    result["pixels_ratio"] = 2 * sum(scale**2 for scale in MMSEG_TTA_SCALES)  # work ~ pixels
    print(f"TTA (12 views) at 512x512: {result['ratio']:.1f}x one view ({result['pixels_ratio']:.1f}x the pixels)")
    return result


def head_cost(args: argparse.Namespace) -> dict:
    """UperNet vs Semantic FPN on Swin-T's stage widths at 512x512 (stage maps at strides 4-32)."""
    torch.manual_seed(0)
    features = tuple(torch.randn(1, 96 * 2**i, 512 // (4 * 2**i), 512 // (4 * 2**i)) for i in range(4))
    heads = {}
    for kind in ("semantic_fpn", "upernet"):
        model = build_model("swin-tiny", decode_head_type=kind)
        heads[kind] = {
            "model": model,
            "head_parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone.")),
        }
    results = {}
    with torch.no_grad():
        for kind, entry in heads.items():
            counter = FlopCounterMode(display=False)
            with counter:
                entry["model"]._decode(features, torch.Size((512, 512)), with_auxiliary=False)
            results[kind] = {"head_parameters": entry["head_parameters"], "gflops": counter.get_total_flops() / 1e9}
        fpn_times, upernet_times = alternate(
            lambda: heads["semantic_fpn"]["model"]._decode(features, torch.Size((512, 512)), False),
            lambda: heads["upernet"]["model"]._decode(features, torch.Size((512, 512)), False),
            args.head_repeats,
        )
    results["semantic_fpn"]["seconds"] = statistics.median(fpn_times)
    results["upernet"]["seconds"] = statistics.median(upernet_times)
    results["time_ratio"] = results["upernet"]["seconds"] / results["semantic_fpn"]["seconds"]
    print(
        f"heads at 512x512 on Swin-T widths: UperNet {results['upernet']['gflops']:.0f} GFLOPs "
        f"{results['upernet']['seconds']:.2f} s, Semantic FPN {results['semantic_fpn']['gflops']:.0f} GFLOPs "
        f"{results['semantic_fpn']['seconds']:.2f} s ({results['time_ratio']:.1f}x)"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="micro", choices=tuple(BENCH_CONFIGS))
    parser.add_argument("--num_labels", type=int, default=19, help="classes (ADE20K: 150; the logits grow with it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--head_repeats", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, size = args.child[0], int(args.child[1])
        print(json.dumps(child(args.config, mode, size, args.threads, args.repeats, args.num_labels)))
        return
    torch.set_num_threads(args.threads)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}",
        "config": args.config,
        "config_fields": BENCH_CONFIGS[args.config],
        "num_labels": args.num_labels,
        "crop_size": CROP,
        "stride": STRIDE,
        "slide_vs_whole": slide_vs_whole(args),
        "tta_512": tta_cost(args),
        "heads_512_swin_tiny_widths": head_cost(args),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "seg_inference.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'seg_inference.json'}")


if __name__ == "__main__":
    main()
