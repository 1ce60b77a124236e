"""Training-step speed of the scripts' options on this machine: fp32, bf16 autocast (``--mixed_precision bf16``),
``--channels_last`` and optionally ``--torch_compile``, for the DDPM step (tiny and small UNet) and the segmentation
step (tiny SwinFPN), all measured in one run.

Each option trains its own copy of the same model (same initial weights, same batches) with the scripts' own
``training_step`` (forward, backward, clipping, AdamW and LR step), the model built by the scripts' own
``build_unet`` / ``build_model``. bf16 runs the forward under ``torch.autocast`` as accelerate's ``--mixed_precision
bf16`` does (fp32 weights and optimizer); channels-last converts the model and the batches as ``--channels_last``
does; compile passes ``torch.compile(model, mode=...)`` as the forward module as ``--torch_compile`` does. The
options run round-robin (the order rotating every round) so that load from other processes hits all alike; the
ratio of an option is the median over rounds of fp32's time / its time (> 1: faster than fp32).

    .venv/bin/python benchmarks/bench_training_options.py      # writes benchmarks/results/training_speed_options.json
    .venv/bin/python benchmarks/bench_training_options.py --quick
    .venv/bin/python benchmarks/bench_training_options.py --torch_compile default   # also compiled (minutes on a CPU)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler

from hf_swin_ddpm.training import runtime, train_ddpm, train_segmentation
from hf_swin_ddpm.training.arguments import COMPILE_MODES

RESULTS = Path(__file__).parent / "results" / "training_speed_options.json"


class Autocast(torch.nn.Module):
    """``module``'s forward under CPU/CUDA bf16 autocast, as accelerate's ``--mixed_precision bf16`` wraps it."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        device_type = next(self.module.parameters()).device.type
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            return self.module(*args, **kwargs)


def make_option(accelerator, model: torch.nn.Module, option: str, compile_mode: str) -> dict:
    """A model copy with its optimizer and LR scheduler prepared, and the module its training forward runs."""
    model = copy.deepcopy(model).to(accelerator.device)
    if option == "channels_last":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    forward = model
    if option == "bf16":
        forward = Autocast(model)
    elif option == "torch_compile":
        forward = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
    model.train()
    return {"model": model, "optimizer": optimizer, "lr_scheduler": lr_scheduler, "forward": forward}


def images_for(option: str, images: torch.Tensor) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if option == "channels_last" else images


def ddpm_workload(preset: str, resolution: int, batch_size: int):
    """The DDPM step of ``train_ddpm`` on random images: (model, step(state, option, batch), batch maker)."""
    args = train_ddpm.parse_args(
        [
            "--dataset_name",
            "digits",
            "--output_dir",
            "unused",
            "--model_config",
            preset,
            "--resolution",
            str(resolution),
        ]
    )
    unet = train_ddpm.build_unet(args)
    scheduler = train_ddpm.build_noise_scheduler(args)
    channels = unet.config.in_channels

    def step(accelerator, state: dict, option: str, images: torch.Tensor) -> None:
        batch = {"input": images_for(option, images)}
        train_ddpm.training_step(
            accelerator,
            state["model"],
            scheduler,
            state["optimizer"],
            state["lr_scheduler"],
            batch,
            1.0,
            None,
            state["forward"],
        )

    def batch(generator: torch.Generator) -> torch.Tensor:
        return torch.rand((batch_size, channels, resolution, resolution), generator=generator) * 2 - 1

    return unet, step, batch


def segmentation_workload(resolution: int, batch_size: int, num_labels: int = 4):
    """The segmentation step of ``train_segmentation`` on random images and labels."""
    args = train_segmentation.parse_args(
        [
            "--dataset_name",
            "shapes",
            "--output_dir",
            "unused",
            "--model_config",
            "tiny",
            "--resolution",
            str(resolution),
        ]
    )
    model = train_segmentation.build_model(args, {index: str(index) for index in range(num_labels)})

    def step(accelerator, state: dict, option: str, batch: dict) -> None:
        batch = {**batch, "pixel_values": images_for(option, batch["pixel_values"])}
        train_segmentation.training_step(
            accelerator, state["model"], state["optimizer"], state["lr_scheduler"], batch, 1.0, None, state["forward"]
        )

    def make_batch(generator: torch.Generator) -> dict:
        pixels = torch.randn((batch_size, 3, resolution, resolution), generator=generator)
        labels = torch.randint(0, num_labels, (batch_size, resolution, resolution), generator=generator)
        return {"pixel_values": pixels, "labels": labels}

    return model, step, make_batch


def measure(name: str, workload, options: list[str], steps: int, rounds: int, compile_mode: str, accelerator) -> dict:
    """Seconds per step of every option, round-robin; ratios vs fp32."""
    model, step, make_batch = workload
    generator = torch.Generator().manual_seed(0)
    batches = [make_batch(generator) for _ in range(steps)]
    states = {}
    for option in options:
        torch.manual_seed(0)
        states[option] = make_option(accelerator, model, option, compile_mode)
    compile_seconds = None

    def run(option: str) -> float:
        start = time.perf_counter()
        for batch in batches:
            step(accelerator, states[option], option, batch)
        return (time.perf_counter() - start) / len(batches)

    for option in options:  # warm-up (and compilation)
        start = time.perf_counter()
        step(accelerator, states[option], option, batches[0])
        if option == "torch_compile":
            compile_seconds = time.perf_counter() - start
    times: dict[str, list[float]] = {option: [] for option in options}
    for round_index in range(rounds):
        order = options[round_index % len(options) :] + options[: round_index % len(options)]
        for option in order:
            times[option].append(run(option))
    result = {
        "seconds_per_step_median": {option: statistics.median(values) for option, values in times.items()},
        "speedup_vs_fp32_median_of_rounds": {
            option: statistics.median(f / o for f, o in zip(times["fp32"], values, strict=True))
            for option, values in times.items()
            if option != "fp32"
        },
        "speedup_vs_fp32_per_round": {
            option: [round(f / o, 3) for f, o in zip(times["fp32"], values, strict=True)]
            for option, values in times.items()
            if option != "fp32"
        },
    }
    if compile_seconds is not None:
        result["torch_compile_first_step_seconds"] = compile_seconds
    speedups = ", ".join(f"{o} {r:.2f}x" for o, r in result["speedup_vs_fp32_median_of_rounds"].items())
    print(f"{name}: fp32 {result['seconds_per_step_median']['fp32'] * 1000:.0f} ms/step; vs fp32: {speedups}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="training steps per timed run (the small UNet: a third)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of timed runs (every option once a round)")
    parser.add_argument(
        "--torch_compile", choices=COMPILE_MODES, help="also measure torch.compile in this mode (inductor; minutes)"
    )
    parser.add_argument("--quick", action="store_true", help="the tiny workloads, 2 steps, 2 rounds; writes nothing")
    parser.add_argument("--only", help="only the workloads whose name contains this (e.g. small)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 2, 2
    accelerator = Accelerator(mixed_precision="no")
    options = ["fp32", "bf16", "channels_last"] + (["torch_compile"] if args.torch_compile else [])
    workloads = {
        "ddpm_tiny_unet_16x16x1_batch16": (ddpm_workload("tiny", 16, 16), args.steps),
        "segmentation_tiny_swin_fpn_64x64_batch16": (segmentation_workload(64, 16), args.steps),
    }
    if not args.quick:
        workloads["ddpm_small_unet_32x32x3_batch16"] = (ddpm_workload("small", 32, 16), max(1, args.steps // 3))
    if args.only:
        workloads = {name: value for name, value in workloads.items() if args.only in name}
    results: dict = {}
    for name, (workload, steps) in workloads.items():
        results[name] = measure(
            name, workload, options, steps, args.rounds, args.torch_compile or "default", accelerator
        )
        if not args.quick:  # after every workload, so that an interrupted run keeps what it measured
            write_report(args, results, accelerator)


def write_report(args: argparse.Namespace, results: dict, accelerator) -> None:
    """The JSON of the workloads measured so far (merged into an existing file's workloads)."""
    previous = json.loads(args.output.read_text())["workloads"] if args.output.is_file() else {}
    report = {
        "what": "training step speed of the options vs fp32 (ratio > 1: faster), the scripts' training_step",
        "workloads": {**previous, **results},
        "steps_per_run": args.steps,
        "rounds": args.rounds,
        "torch_compile_mode": args.torch_compile,
        "device": str(accelerator.device),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "cpu_bf16_instructions": runtime.cpu_has_fast_bf16(),
        "torch": torch.__version__,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
