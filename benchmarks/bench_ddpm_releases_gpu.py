"""The GPU time of the DDPM paper's Table 1 protocol on the released CIFAR-10 model (google/ddpm-cifar10-32):
1,000 steps of sampling at batch 500 in bf16 with `DDPMPaperPipeline` and with diffusers' `DDPMPipeline`, and the
projected time of FID-50k's 50,000 samples.

The UNet is synthesized with random weights from the released repository's `unet/config.json` (diffusers' conversion
of the official model: 35,746,307 parameters; nothing is downloaded), since the time does not depend on the weights.
Three rows, alternated round by round so that neither always runs first:

- `ours_autocast`: `DDPMPaperPipeline` with the paper's sampler (`paper_sampler=True`'s scheduler: Algorithm 2,
  sigma_t^2 = beta_t, no clipping) and `autocast_dtype=torch.bfloat16` (the UNet under bf16 autocast; x_t and the
  scheduler in float32), as `hf-swin-ddpm evaluate-ddpm --sampler paper --bf16` runs;
- `diffusers_autocast`: diffusers' `DDPMPipeline` with `DDPMScheduler(variance_type="fixed_large",
  clip_sample=False)` (the same chain) called inside `torch.autocast(..., dtype=torch.bfloat16)`;
- `diffusers_bf16_weights`: the same pipeline with the UNet cast to bf16 (`from_pretrained(..., torch_dtype=
  torch.bfloat16)` as users load it; x_t is then bf16 too).

Each row reports seconds per 1,000-step run (median over `--repeats`), milliseconds per step, images per second, the
achieved TFLOP/s (FLOPs of one UNet call counted by `torch.utils.flop_counter`, times the batch and the steps), and the
projected FID-50k sampling time: ceil(50,000 / batch) runs. The samples of the first two rows are compared (their
largest difference is recorded: bf16 rounding, not a different chain).

    python benchmarks/bench_ddpm_releases_gpu.py                 # CUDA: writes benchmarks/results/ddpm_releases_gpu.json
    python benchmarks/bench_ddpm_releases_gpu.py --device cpu --unet tiny --batch_size 2 --steps 3 --repeats 1
        # a CPU smoke run of every path; writes $TMPDIR/ddpm_releases_cpu_smoke.json, never into benchmarks/results/

A GPU run with the defaults does 3 rows x (1 warm-up of `--warmup_steps` + `--repeats` runs of 1,000 steps); at about
20 ms a step on an H200 (an estimate: 500 x 12.1 GFLOP at ~300 TFLOP/s) that is about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import diffusers
import torch
from bench_support import counted_flops
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet

RESULTS = Path(__file__).parent / "results" / "ddpm_releases_gpu.json"
FID_SAMPLES = 50_000
CIFAR10_PARAMETERS = 35_746_307  # the paper's CIFAR-10 network (Appendix B), as diffusers' conversion builds it

# google/ddpm-cifar10-32's unet/config.json (diffusers' conversion of the official model), without the bookkeeping keys
RELEASED_CIFAR10_UNET = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}


def synthesized_unet(name: str) -> UNet2DModel:
    """`cifar10`: the released CIFAR-10 UNet with random weights; `tiny`: `paper_unet("tiny")` for CPU smoke runs."""
    torch.manual_seed(0)
    if name == "tiny":
        return paper_unet("tiny").eval()
    unet = UNet2DModel(**RELEASED_CIFAR10_UNET).eval()
    parameters = sum(p.numel() for p in unet.parameters())
    if parameters != CIFAR10_PARAMETERS:
        raise SystemExit(f"the synthesized CIFAR-10 UNet has {parameters:,} parameters, expected 35,746,307")
    return unet


def unet_call_flops(unet: UNet2DModel, device: str) -> int:
    """FLOPs of one UNet call on one image, counted on the plain float32 path (FlopCounterMode)."""
    side = unet.config.sample_size
    sample = torch.randn(1, unet.config.in_channels, side, side, device=device)
    with torch.no_grad():
        return counted_flops(lambda: unet(sample, torch.tensor([500], device=device)))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--unet", choices=["cifar10", "tiny"], default="cifar10")
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row")
    parser.add_argument("--warmup_steps", type=int, default=10, help="steps of the untimed first run of each row")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    output = args.output or (RESULTS if on_gpu else Path(tempfile.gettempdir()) / "ddpm_releases_cpu_smoke.json")
    if not on_gpu and output.resolve().parent == RESULTS.parent.resolve():
        raise SystemExit("a CPU run is a smoke test: write it outside benchmarks/results/ (--output)")
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    unet = synthesized_unet(args.unet).to(args.device)
    flops_per_image_step = unet_call_flops(unet, args.device)
    with tempfile.TemporaryDirectory() as folder:  # loaded in bf16 as users load a release
        unet.save_pretrained(folder)
        bf16_unet = UNet2DModel.from_pretrained(folder, torch_dtype=torch.bfloat16).eval().to(args.device)

    ours = DDPMPaperPipeline(
        unet=unet, scheduler=DDPMPaperScheduler(variance_type="fixed_large", clip_sample=False)
    )  # what DDPMPaperPipeline.from_pretrained("google/ddpm-cifar10-32", paper_sampler=True) builds
    same_chain = {"variance_type": "fixed_large", "clip_sample": False, "timestep_spacing": "linspace"}
    theirs = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**same_chain))
    theirs_bf16 = DDPMPipeline(unet=bf16_unet, scheduler=DDPMScheduler(**same_chain))
    for pipe in (ours, theirs, theirs_bf16):
        pipe.set_progress_bar_config(disable=True)
    autocast = torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)

    def run(row: str, steps: int) -> torch.Tensor:
        generator = torch.Generator(args.device).manual_seed(0)
        common = {"batch_size": args.batch_size, "generator": generator, "num_inference_steps": steps}
        if row == "ours_autocast":
            images = ours(**common, output_type="pt", autocast_dtype=torch.bfloat16).images
        elif row == "diffusers_autocast":
            with autocast:
                images = theirs(**common, output_type="pt").images
        else:
            images = theirs_bf16(**common, output_type="pt").images
        synchronize(args.device)
        return images

    rows = ["ours_autocast", "diffusers_autocast", "diffusers_bf16_weights"]
    for row in rows:  # untimed: CUDA context, cuDNN autotuning, allocator
        run(row, min(args.warmup_steps, args.steps))
    times = {row: [] for row in rows}
    finals = {}
    for repeat in range(args.repeats):
        for row in rows if repeat % 2 == 0 else rows[::-1]:
            start = time.perf_counter()
            images = run(row, args.steps)
            times[row].append(time.perf_counter() - start)
            finals[row] = images
    difference = (finals["ours_autocast"].float() - finals["diffusers_autocast"].float()).abs().max().item()

    runs_for_fid = math.ceil(FID_SAMPLES / args.batch_size)
    results = []
    for row in rows:
        seconds = statistics.median(times[row])
        tflops = flops_per_image_step * args.batch_size * args.steps / seconds / 1e12
        results.append(
            {
                "row": row,
                "seconds_per_run": times[row],
                "median_seconds_per_run": seconds,
                "ms_per_step": 1000 * seconds / args.steps,
                "images_per_second": args.batch_size / seconds,
                "achieved_tflops": tflops,
                "mfu": tflops / args.peak_tflops if args.peak_tflops else None,
                # at 1,000 steps per sample, scaled from the steps timed
                "projected_fid50k_sampling_hours": runs_for_fid * seconds * (1000 / args.steps) / 3600,
            }
        )
    report = {
        "benchmark": "ddpm_releases_gpu",
        "smoke_test": not on_gpu,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "unet": args.unet,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "gflop_per_image_step": flops_per_image_step / 1e9,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "fid_samples": FID_SAMPLES,
        "runs_for_fid": runs_for_fid,
        "max_sample_difference_ours_vs_diffusers_autocast": difference,
        "rows": results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['device']}: {args.unet} UNet, batch {args.batch_size}, {args.steps} steps, bf16")
    print(f"{'row':<26}{'s/run':>9}{'ms/step':>10}{'img/s':>9}{'TFLOP/s':>9}{'FID-50k h':>11}")
    for row in results:
        print(
            f"{row['row']:<26}{row['median_seconds_per_run']:>9.2f}{row['ms_per_step']:>10.2f}"
            f"{row['images_per_second']:>9.1f}{row['achieved_tflops']:>9.2f}"
            f"{row['projected_fid50k_sampling_hours']:>11.3f}"
        )
    print(f"max |ours - diffusers| (autocast rows): {difference:.3g}; wrote {output}")


if __name__ == "__main__":
    main()
