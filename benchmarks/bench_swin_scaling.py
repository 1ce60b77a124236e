"""Swin's linear cost, measured: SwinFPN (Swin-T) against a ViT of similar size from 224x224 to 1024x1024.

For each side length: inference time (batch 1) and peak memory of `SwinFPNForSegmentation` and of transformers'
`ViTModel` (ViT-S/16, 22M parameters, random weights, position embeddings interpolated), then the time per pixel
relative to 224x224: flat for a linear cost, growing with the pixel count for a quadratic one. Also the achieved
GFLOP/s of the Swin backbone at 512x512 (FLOPs counted with `torch.utils.flop_counter`) as a fraction of a large
matmul's rate measured in the same run. Peak memory is the rise of the resident set size (sampled every millisecond)
during one forward pass in a fresh process. Writes `benchmarks/results/swin_scaling.json` and `swin_scaling.png`.

    python benchmarks/bench_swin_scaling.py [--sizes 224 384 512 640 768 896 1024] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_support import PeakResident, counted_flops, matmul_gflops, resident_mib

RESULTS = Path(__file__).parent / "results"


def build(model_name: str) -> tuple[torch.nn.Module, callable]:
    """The model in eval mode and a function running it on `pixel_values`."""
    torch.manual_seed(0)
    if model_name == "swin_fpn":
        from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation

        model = SwinFPNForSegmentation(SwinFPNConfig(num_labels=150, drop_path_rate=0.0)).eval()
        return model, lambda x: model(x).logits
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
    model = ViTModel(config, add_pooling_layer=False).eval()
    return model, lambda x: model(x, interpolate_pos_encoding=True).last_hidden_state


def median_seconds(run, x: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        run(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_worker(model_name: str, size: int, threads: int, queue) -> None:
    """Samples the resident set size every millisecond during one forward pass; sends the rise of its peak."""
    torch.set_num_threads(threads)
    _, run = build(model_name)
    x = torch.randn(1, 3, size, size)
    before = resident_mib()
    with PeakResident() as sampler, torch.inference_mode():
        run(x)
    queue.put(max(sampler.peaks.values()) - before)


def peak_memory_mib(model_name: str, size: int, threads: int) -> float:
    """Rise of the peak RSS over one forward pass, in a fresh process so that earlier runs do not hide it."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=peak_memory_worker, args=(model_name, size, threads, queue))
    process.start()
    value = queue.get(timeout=600)
    process.join()
    return value


def backbone_efficiency(repeats: int, size: int = 512, batch: int = 2) -> dict:
    model, _ = build("swin_fpn")
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        flops = counted_flops(lambda: model.backbone(x))
    seconds = median_seconds(model.backbone, x, repeats)
    peak = matmul_gflops()
    achieved = flops / seconds / 1e9
    return {
        "size": size,
        "batch": batch,
        "gflop": flops / 1e9,
        "seconds": seconds,
        "achieved_gflops": achieved,
        "matmul_gflops": peak,
        "fraction_of_matmul": achieved / peak,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, label in (("swin_fpn", "SwinFPN (Swin-T)"), ("vit", "ViT-S/16")):
        pixels = [row["size"] ** 2 / 1e6 for row in rows]
        time_axis.plot(pixels, [row[f"{name}_relative_time_per_pixel"] for row in rows], "o-", label=label)
        memory_rows = [row for row in rows if f"{name}_peak_mib" in row]
        memory_axis.plot(
            [row["size"] ** 2 / 1e6 for row in memory_rows],
            [row[f"{name}_peak_mib"] for row in memory_rows],
            "o-",
            label=label,
        )
    time_axis.set(xlabel="megapixels", ylabel="time per pixel / at 224x224", title="Inference time per pixel")
    memory_axis.set(xlabel="megapixels", ylabel="MiB", title="Peak memory of one forward pass")
    for axis in (time_axis, memory_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384, 512, 640, 768, 896, 1024])
    parser.add_argument("--memory_sizes", type=int, nargs="+", default=[224, 512, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    runs = {name: build(name)[1] for name in ("swin_fpn", "vit")}
    rows = []
    for size in args.sizes:
        x = torch.randn(1, 3, size, size)
        row = {"size": size}
        for name, run in runs.items():
            row[f"{name}_seconds"] = median_seconds(run, x, args.repeats)
        rows.append(row)
    for name in runs:
        base = rows[0][f"{name}_seconds"] / rows[0]["size"] ** 2
        for row in rows:
            row[f"{name}_relative_time_per_pixel"] = row[f"{name}_seconds"] / row["size"] ** 2 / base
    for row in rows:
        if row["size"] in args.memory_sizes:
            for name in runs:
                row[f"{name}_peak_mib"] = peak_memory_mib(name, row["size"], args.threads)
    efficiency = backbone_efficiency(args.repeats)

    print(f"{args.threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'size':>6}{'SwinFPN s':>11}{'per px':>8}{'ViT s':>9}{'per px':>8}{'Swin MiB':>10}{'ViT MiB':>9}")
    for row in rows:
        print(
            f"{row['size']:>6}{row['swin_fpn_seconds']:>11.3f}{row['swin_fpn_relative_time_per_pixel']:>8.2f}"
            f"{row['vit_seconds']:>9.3f}{row['vit_relative_time_per_pixel']:>8.2f}"
            f"{row.get('swin_fpn_peak_mib', float('nan')):>10.0f}{row.get('vit_peak_mib', float('nan')):>9.0f}"
        )
    print(
        f"Swin-T backbone at 512x512, batch 2: {efficiency['gflop']:.1f} GFLOP in {efficiency['seconds']:.3f} s = "
        f"{efficiency['achieved_gflops']:.0f} GFLOP/s, {efficiency['fraction_of_matmul']:.0%} of a 2048^3 matmul's "
        f"{efficiency['matmul_gflops']:.0f} GFLOP/s"
    )
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": args.threads,
        "rows": rows,
        "backbone_efficiency": efficiency,
    }
    (RESULTS / "swin_scaling.json").write_text(json.dumps(payload, indent=2))
    plot(rows, RESULTS / "swin_scaling.png")


if __name__ == "__main__":
    main()
