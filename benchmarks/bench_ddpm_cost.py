"""What a DDPM costs on this machine, against the machine's own limit: UNet FLOPs, sampling rate, bits/dim evaluation.

Three measurements, all in one process with `--threads` threads (default 2):

1. One UNet forward (one denoising step) of `paper_unet("tiny")` at 16x16x1 (the CPU demo's model) and
   `paper_unet("small")` at 32x32x3 (with `--full` also `paper_unet("cifar10")`, the paper's 35.7M model) at batch
   `--batch`: FLOPs counted with `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention;
   norms and activations are not counted), the fastest of `--repeats` timed calls, the achieved GFLOP/s and its
   fraction of a 2048x2048 @ 2048x2048 fp32 matmul's rate (best of several) measured in the same run.
2. Samples per second of `DDPMPaperPipeline` with the tiny UNet at batch `--sampling_batch` for the paper's 1000 steps
   and respaced to 250, 100 and 50 steps. `DDPMPaperScheduler.set_timesteps(n)` spaces the n timesteps evenly over
   0..999 ("linspace", rounded, like diffusers' "linspace" spacing) and each step uses the effective
   beta = 1 - abar_t / abar_prev of the respaced chain, so every step costs one UNet call whatever n is.
3. The bits/dim evaluation (`hf_swin_ddpm.variational_bound`, which `train_ddpm.py --eval_bpd_timesteps` calls) on
   the same digits test images (16x16, as the demo trains): the full bound with all T = 1000 terms against the
   stratified estimate with 100 KL terms (the demo's `--eval_bpd_timesteps=100`), seconds per image and the bits/dim of
   both. The UNet has random weights unless `--ddpm_model` names a saved pipeline (e.g. demo_models/ddpm-mnist), so
   by default the bits/dim values say how the two estimates compare, not how good a model is.

Writes `benchmarks/results/ddpm_cost.json` (not in `--quick` mode unless `--output` is given).

    .venv/bin/python benchmarks/bench_ddpm_cost.py                  # tiny + small UNets, writes the JSON
    .venv/bin/python benchmarks/bench_ddpm_cost.py --full           # also the CIFAR-10 UNet (slow on a CPU)
    .venv/bin/python benchmarks/bench_ddpm_cost.py --ddpm_model demo_models/ddpm-mnist   # trained weights for 2, 3
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ddpm_cost.py --quick --threads 1  # a smoke run (~20 s)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import diffusers
import numpy as np
import PIL.Image
import torch
from bench_support import matmul_gflops, timed
from diffusers import UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet, variational_bound
from hf_swin_ddpm.data import DDPMTransform
from hf_swin_ddpm.data.embedded import load_digits_arrays

RESULTS = Path(__file__).parent / "results" / "ddpm_cost.json"
PAPER_STEPS = (1000, 250, 100, 50)
STRATIFIED_BPD_TERMS = 100  # the demo's --eval_bpd_timesteps


# ------------------------------------------------------------------------------------------------ timing helpers


def forward_flops(unet: UNet2DModel, sample: torch.Tensor, timesteps: torch.Tensor) -> int:
    """FLOPs of one `unet(sample, timesteps)` call as `FlopCounterMode` counts them."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, timesteps)
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------------ 1. one UNet step


def unet_step_cost(name: str, unet: UNet2DModel, batch: int, repeats: int, matmul_rate: float) -> dict:
    """FLOPs, time and achieved rate of one denoising step (a UNet forward at t = 500) at `batch`."""
    unet = unet.eval()
    size, channels = unet.config.sample_size, unet.config.in_channels
    sample = torch.randn(batch, channels, size, size)
    timesteps = torch.full((batch,), 500, dtype=torch.long)
    flops = forward_flops(unet, sample, timesteps)
    with torch.no_grad():
        times = timed(lambda: unet(sample, timesteps), repeats)
    achieved = flops / min(times) / 1e9
    return {
        "case": name,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "sample_shape": [batch, channels, size, size],
        "gflop": flops / 1e9,
        "gflop_per_image": flops / batch / 1e9,
        "seconds": times,
        "seconds_min": min(times),
        "seconds_median": statistics.median(times),
        "achieved_gflops": achieved,
        "fraction_of_matmul": achieved / matmul_rate,
    }


# ------------------------------------------------------------------------------------------------ 2. sampling


def chain_summary(scheduler: DDPMPaperScheduler, steps: int) -> dict:
    """The respaced chain the scheduler runs for `steps` steps: its ends and the spacing rule."""
    scheduler.set_timesteps(steps)
    chain = [int(t) for t in scheduler.timesteps]
    return {
        "timestep_spacing": scheduler.config.timestep_spacing,
        "first_timesteps": chain[:3],
        "last_timesteps": chain[-3:],
        "distinct_timesteps": len(set(chain)),
    }


def sampling_cost(pipeline: DDPMPaperPipeline, batch: int, steps: int, repeats: int, step_gflop: float) -> dict:
    """Seconds per call, samples per second and the achieved UNet rate of `pipeline` for `steps` steps."""

    def run() -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return pipeline(batch_size=batch, generator=generator, num_inference_steps=steps, output_type="pt").images

    times = timed(run, repeats, warmup=False)
    best = min(times)
    return {
        "steps": steps,
        "batch": batch,
        "seconds": times,
        "seconds_min": best,
        "seconds_median": statistics.median(times),
        "samples_per_second": batch / best,
        "seconds_per_step": best / steps,
        "achieved_gflops": step_gflop * steps / best,
        "chain": chain_summary(pipeline.scheduler, steps),
    }


def sampling_costs(pipeline: DDPMPaperPipeline, batch: int, steps_list: list[int], repeats: int) -> list[dict]:
    """`sampling_cost` for each number of steps, after a short warm-up run."""
    pipeline.set_progress_bar_config(disable=True)
    unet = pipeline.unet
    size, channels = unet.config.sample_size, unet.config.in_channels
    sample = torch.randn(batch, channels, size, size)
    step_gflop = forward_flops(unet, sample, torch.full((batch,), 500, dtype=torch.long)) / 1e9
    pipeline(batch_size=batch, num_inference_steps=2, output_type="pt")
    return [sampling_cost(pipeline, batch, steps, repeats, step_gflop) for steps in steps_list]


# ------------------------------------------------------------------------------------------------ 3. bits/dim


def digits_test_images(count: int, resolution: int, channels: int) -> torch.Tensor:
    """The first `count` digits test images as the DDPM training transform makes them: (count, C, R, R) in [-1, 1]."""
    arrays = load_digits_arrays()
    rows = np.flatnonzero(arrays["is_test"])[:count]
    transform = DDPMTransform(resolution, channels=channels)
    return torch.stack([transform.transform_image(PIL.Image.fromarray(arrays["images"][row])) for row in rows])


def bound_cost(unet: UNet2DModel, scheduler: DDPMPaperScheduler, x0: torch.Tensor, terms: int | None) -> dict:
    """Seconds per image and mean bits/dim of `variational_bound` with `terms` KL terms (None: all T)."""
    start = time.perf_counter()
    bound = variational_bound(unet, scheduler, x0, generator=torch.Generator().manual_seed(1), num_timesteps=terms)
    seconds = time.perf_counter() - start
    return {
        "kl_terms": terms if terms is not None else scheduler.config.num_train_timesteps - 1,
        "images": x0.shape[0],
        "seconds": seconds,
        "seconds_per_image": seconds / x0.shape[0],
        "per_image_total_bpd": bound["total_bpd"].tolist(),
        **{f"mean_{name}": values.mean().item() for name, values in bound.items()},
    }


def bpd_costs(unet: UNet2DModel, scheduler: DDPMPaperScheduler, images: int) -> dict:
    """The full T-term bound and the stratified 100-term estimate on the same digits test images."""
    unet = unet.eval()
    x0 = digits_test_images(images, unet.config.sample_size, unet.config.in_channels)
    full = bound_cost(unet, scheduler, x0, None)
    stratified = bound_cost(unet, scheduler, x0, STRATIFIED_BPD_TERMS)
    differences = np.subtract(stratified["per_image_total_bpd"], full["per_image_total_bpd"])
    return {
        "images": "digits test split, first images, 16x16 via DDPMTransform",
        "full": full,
        "stratified": stratified,
        "time_ratio_full_over_stratified": full["seconds"] / stratified["seconds"],
        "mean_total_bpd_difference_stratified_minus_full": float(differences.mean()),
        "max_abs_total_bpd_difference": float(np.abs(differences).max()),
    }


# ------------------------------------------------------------------------------------------------ report


def print_tables(matmul_rate: float, steps: list[dict], sampling: list[dict], bpd: dict) -> None:
    """The three results as plain-text tables."""
    print(f"fp32 matmul 2048^3: {matmul_rate:.0f} GFLOP/s (best of several)\n")
    print(f"{'one denoising step':<30}{'batch':>6}{'GFLOP':>9}{'best s':>9}{'GFLOP/s':>9}{'of matmul':>11}")
    for row in steps:
        print(
            f"{row['case']:<30}{row['sample_shape'][0]:>6}{row['gflop']:>9.2f}{row['seconds_min']:>9.4f}"
            f"{row['achieved_gflops']:>9.1f}{row['fraction_of_matmul']:>11.1%}"
        )
    print(f"\n{'sampling (tiny UNet)':<22}{'batch':>6}{'best s':>9}{'samples/s':>11}{'ms/step':>9}{'GFLOP/s':>9}")
    for row in sampling:
        print(
            f"{row['steps']:>5} steps{'':<12}{row['batch']:>6}{row['seconds_min']:>9.2f}"
            f"{row['samples_per_second']:>11.2f}{row['seconds_per_step'] * 1e3:>9.2f}{row['achieved_gflops']:>9.1f}"
        )
    print(f"\n{'bits/dim bound (' + bpd['weights'] + ')':<36}{'images':>7}{'s/image':>9}{'total bpd':>11}")
    for key in ("full", "stratified"):
        row = bpd[key]
        print(
            f"{str(row['kl_terms']) + ' KL terms':<36}{row['images']:>7}{row['seconds_per_image']:>9.2f}"
            f"{row['mean_total_bpd']:>11.3f}"
        )
    print(
        f"full / stratified time: {bpd['time_ratio_full_over_stratified']:.1f}x; total bpd stratified - full: mean "
        f"{bpd['mean_total_bpd_difference_stratified_minus_full']:+.3f}, max |diff| {bpd['max_abs_total_bpd_difference']:.3f}"
    )


def write_report(path: Path, args: argparse.Namespace, results: dict) -> None:
    """The results with the machine, versions and settings, as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "ddpm_cost",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "quick": args.quick,
        "load_average_at_end": os.getloadavg(),
        "flop_counting": "torch.utils.flop_counter.FlopCounterMode: matmul, conv, attention; not norms/activations",
        "rate_definition": "FLOPs / fastest of the timed runs; matmul: fastest of several 2048x2048 fp32 products",
        **results,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small batches, 1/10 of the steps, 2 bpd images")
    parser.add_argument("--full", action="store_true", help='also time paper_unet("cifar10") (slow on a CPU)')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the fastest counts)")
    parser.add_argument("--batch", type=int, default=16, help="batch of the single-step FLOP/s measurement")
    parser.add_argument("--sampling_batch", type=int, default=16)
    parser.add_argument("--steps", type=int, nargs="+", default=list(PAPER_STEPS), help="sampling chain lengths")
    parser.add_argument("--bpd_images", type=int, default=8)
    parser.add_argument("--ddpm_model", type=Path, default=None, help="a saved DDPMPaperPipeline for parts 2 and 3")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.batch, args.sampling_batch, args.bpd_images = 1, 4, 4, 2
        args.steps = [max(steps // 10, 1) for steps in args.steps]
    return args


def tiny_pipeline(model: Path | None) -> tuple[DDPMPaperPipeline, str]:
    """The saved pipeline at `model`, or a random-weight tiny UNet with the paper's scheduler; and which it is."""
    if model is not None:
        return DDPMPaperPipeline.from_pretrained(model), f"trained weights from {model}"
    torch.manual_seed(0)
    return DDPMPaperPipeline(unet=paper_unet("tiny").eval(), scheduler=DDPMPaperScheduler()), "random weights"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    matmul_rate = matmul_gflops(repeats=3 if args.quick else 5)
    cases = [('paper_unet("tiny") 16x16x1', "tiny"), ('paper_unet("small") 32x32x3', "small")]
    if args.full:
        cases.append(('paper_unet("cifar10") 32x32x3', "cifar10"))
    steps = [unet_step_cost(name, paper_unet(preset), args.batch, args.repeats, matmul_rate) for name, preset in cases]
    pipeline, weights = tiny_pipeline(args.ddpm_model)
    sampling = sampling_costs(pipeline, args.sampling_batch, args.steps, args.repeats)
    bpd = {"weights": weights, **bpd_costs(pipeline.unet, pipeline.scheduler, args.bpd_images)}
    matmul_rate_end = matmul_gflops(repeats=3 if args.quick else 5)  # did the machine's state change meanwhile?

    print(f"{args.threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print_tables(matmul_rate, steps, sampling, bpd)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        results = {
            "matmul_gflops": matmul_rate,
            "matmul_gflops_at_end": matmul_rate_end,
            "unet_step": steps,
            "sampling": {"unet": 'paper_unet("tiny")', "weights": weights, "runs": sampling},
            "bits_per_dim": bpd,
        }
        write_report(output, args, results)


if __name__ == "__main__":
    main()
