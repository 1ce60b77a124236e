"""Samples per second of `evaluate-ddpm` sampling on 1 and on 2 CPU processes (`accelerate launch`, gloo), and the
projection for k processes (GPUs).

Each run is the real command, `--samples_dir` in a fresh folder, one thread per process; the rate is
`num_samples / sampling_seconds` as the results JSON reports it (rounded there to 10 ms) (the slowest process's sampling time, model loading
and scoring left out). The scaling efficiency e = rate(2) / (2 rate(1)) gives the projection
rate(k) ~ k e rate(1) (sample i depends only on (seed, i), so the processes share nothing while sampling), and the
time of an FID-50k sample set at that rate. On a machine shared with other jobs two processes may not get two cores;
the efficiency is then an underestimate.

    .venv/bin/python benchmarks/bench_fid_sampling.py                 # writes benchmarks/results/fid_sampling.json
    .venv/bin/python benchmarks/bench_fid_sampling.py --quick         # a smoke run (tiny model, few samples)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler
from hf_swin_ddpm.diffusion import paper_unet

RESULTS = Path(__file__).parent / "results" / "fid_sampling.json"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(root: Path, processes: int, num_samples: int, steps: int, batch_size: int) -> dict:
    """One `evaluate-ddpm` run on `processes` CPU processes; its results JSON."""
    name = f"p{processes}-{time.monotonic_ns()}"
    arguments = ["evaluate-ddpm", "model", "--reference", "digits:test", "--num_samples", str(num_samples)]
    arguments += ["--num_inference_steps", str(steps), "--batch_size", str(batch_size), "--bpd_images", "0"]
    arguments += ["--samples_dir", name, "--output", f"{name}.json"]
    if processes == 1:
        argv = [str(BIN / "hf-swin-ddpm"), *arguments]
    else:
        argv = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes)]
        argv += ["--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no"]
        argv += ["--dynamo_backend", "no", "-m", "hf_swin_ddpm.cli", *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    results = json.loads((root / f"{name}.json").read_text())
    results["wall_seconds"] = round(time.perf_counter() - start, 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8x8 model, 8 samples, 4 steps")
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=16)
    args = parser.parse_args()
    if args.quick:
        args.num_samples, args.num_inference_steps, args.batch_size, args.resolution = 8, 4, 4, 8
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        torch.manual_seed(0)
        unet = paper_unet(
            "tiny",
            sample_size=args.resolution,
            in_channels=1,
            out_channels=1,
            block_out_channels=(16, 32, 32),
            norm_num_groups=4,
        )
        DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(num_train_timesteps=1000)).save_pretrained(
            root / "model"
        )
        runs = {k: run(root, k, args.num_samples, args.num_inference_steps, args.batch_size) for k in (1, 2)}
    rates = {k: args.num_samples / r["sampling_seconds"] for k, r in runs.items()}
    efficiency = rates[2] / (2 * rates[1])
    assert runs[1]["fid"] == runs[2]["fid"], "the sample set must not depend on the number of processes"
    projected = {k: rates[1] if k == 1 else k * efficiency * rates[1] for k in (1, 2, 4, 8)}
    projection = {
        k: {"samples_per_second": round(rate, 2), "fid_50k_hours": round(50_000 / rate / 3600, 2)}
        for k, rate in projected.items()
    }
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "torch": torch.__version__,
        "model": f"tiny paper UNet, {args.resolution}x{args.resolution}x1, T = 1000",
        "num_samples": args.num_samples,
        "num_inference_steps": args.num_inference_steps,
        "batch_size": args.batch_size,
        "samples_per_second": {k: round(rate, 2) for k, rate in rates.items()},
        "wall_seconds": {k: r["wall_seconds"] for k, r in runs.items()},
        "efficiency_2_processes": round(efficiency, 3),
        "projection_k_processes_this_model_and_steps": projection,
        "same_fid_1_and_2_processes": runs[1]["fid"] == runs[2]["fid"],
    }
    print(json.dumps(report, indent=2))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"Wrote {RESULTS}")


if __name__ == "__main__":
    main()
