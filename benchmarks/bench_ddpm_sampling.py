"""Times DDPMPaperPipeline against diffusers' DDPMPipeline, and DDPMPaperScheduler.step against DDPMScheduler.step.

Both pipelines get the same UNet, steps and seed (and produce the same images, which is checked); runs alternate
between the two so that load from other processes on a shared machine hits both alike, and the reported ratio is the
median of the per-pair ratios ours / diffusers (goal: <= 1.05); the ratio of the fastest runs is printed beside it.
On a machine shared with other jobs single runs can take many times longer than they should; the fastest runs are
then the better guide.

    .venv/bin/python benchmarks/bench_ddpm_sampling.py            # full run, writes benchmarks/results/ddpm_sampling.json
    .venv/bin/python benchmarks/bench_ddpm_sampling.py --quick    # a smoke run
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import diffusers
import torch
from bench_support import alternate
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from hf_swin_ddpm.diffusion import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet

RESULTS = Path(__file__).parent / "results" / "ddpm_sampling.json"


def micro_unet() -> UNet2DModel:
    """A one-level UNet2DModel (8x8, 1 channel) where the per-step overhead outside the UNet matters most."""
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        mid_block_type=None,
        norm_num_groups=4,
    )


def summary(ours: list[float], theirs: list[float], scale: float = 1.0) -> dict:
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {
        "ours": [t * scale for t in ours],
        "diffusers": [t * scale for t in theirs],
        "ours_median": statistics.median(ours) * scale,
        "diffusers_median": statistics.median(theirs) * scale,
        "ours_min": min(ours) * scale,
        "diffusers_min": min(theirs) * scale,
        "ratio": statistics.median(ratios),
    }


def bench_pipeline(name: str, unet: UNet2DModel, batch_size: int, steps: int, repeats: int, device: str) -> dict:
    unet = unet.eval().to(device)
    ours = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler())
    # the same chain for any number of steps: diffusers' "linspace" spacing is ours
    reference_scheduler = DDPMScheduler(variance_type="fixed_large", clip_sample=False, timestep_spacing="linspace")
    theirs = DDPMPipeline(unet=unet, scheduler=reference_scheduler)
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)

    def run(pipe):
        return pipe(
            batch_size=batch_size,
            generator=torch.Generator(device).manual_seed(0),
            num_inference_steps=steps,
            output_type="pt",
        ).images

    max_difference = (run(ours) - run(theirs)).abs().max().item()
    ours_times, theirs_times = alternate(lambda: run(ours), lambda: run(theirs), repeats)
    result = {
        "case": name,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "sample_shape": [batch_size, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size],
        "steps": steps,
        "max_image_difference": max_difference,
        **summary(ours_times, theirs_times),
    }
    return result


def bench_scheduler_step(shape: tuple[int, ...], repeats: int, device: str) -> dict:
    """Microseconds per `step` call over a whole 1000-step chain, after `set_timesteps(1000)` as a pipeline does.

    Both draw the same noise with `randn_tensor`, which is most of the time at larger shapes.
    """
    ours = DDPMPaperScheduler()
    theirs = DDPMScheduler(variance_type="fixed_large", clip_sample=False)
    sample = torch.randn(shape, device=device)
    model_output = torch.randn(shape, device=device)

    def chain(scheduler):
        def run():
            scheduler.set_timesteps(1000)
            generator = torch.Generator(device).manual_seed(0)
            for t in scheduler.timesteps:
                scheduler.step(model_output, t, sample, generator=generator)

        return run

    ours_times, theirs_times = alternate(chain(ours), chain(theirs), repeats)
    per_call = 1e6 / 1000  # seconds per chain -> microseconds per call
    return {"sample_shape": list(shape), **summary(ours_times, theirs_times, scale=per_call), "unit": "us/call"}


def print_table(pipelines: list[dict], steps: list[dict]) -> None:
    header = f"{'pipeline case':<34}{'steps':>6}{'ours s':>10}{'diffusers s':>13}{'ratio':>8}{'(min/min)':>11}"
    print(f"{header}{'max |diff|':>12}")
    for row in pipelines:
        print(
            f"{row['case']:<34}{row['steps']:>6}{row['ours_median']:>10.3f}{row['diffusers_median']:>13.3f}"
            f"{row['ratio']:>8.3f}{row['ours_min'] / row['diffusers_min']:>11.3f}{row['max_image_difference']:>12.1e}"
        )
    print()
    print(f"{'scheduler.step, sample shape':<34}{'ours us':>10}{'diffusers us':>14}{'ratio':>8}{'(min/min)':>11}")
    for row in steps:
        print(
            f"{str(tuple(row['sample_shape'])):<34}{row['ours_median']:>10.1f}{row['diffusers_median']:>14.1f}"
            f"{row['ratio']:>8.3f}{row['ours_min'] / row['diffusers_min']:>11.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps and repeats, no JSON unless --output")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--device", default="cpu", help="where the UNets run (the schedulers' tensors follow)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 2 if args.quick else args.repeats
    cases = [
        ("micro UNet (8x8x1, 1 level)", micro_unet(), 2, 1000),
        ('paper_unet("tiny") 16x16x1', paper_unet("tiny"), 4, 250),
        ('paper_unet("small") 32x32x3', paper_unet("small"), 2, 50),
    ]
    if args.device != "cpu":
        cases.append(('paper_unet("cifar10") 32x32x3', paper_unet("cifar10"), 64, 100))
    if args.quick:
        cases = [(name, unet, batch, max(steps // 10, 10)) for name, unet, batch, steps in cases]

    with torch.no_grad():
        pipelines = [
            bench_pipeline(name, unet, batch, steps, repeats, args.device) for name, unet, batch, steps in cases
        ]
        shapes = ((4, 1, 16, 16), (16, 3, 32, 32))
        steps = [bench_scheduler_step(shape, 2 * repeats, args.device) for shape in shapes]
    print_table(pipelines, steps)

    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "benchmark": "ddpm_sampling",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": args.threads,
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "repeats": repeats,
            "ratio_definition": "median over alternating pairs of time(ours) / time(diffusers)",
            "pipelines": pipelines,
            "scheduler_step": steps,
        }
        output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
