"""GPU check and timings for both models (run where a CUDA device is available; `--dry_run` runs every path on the
CPU with tiny sizes).

SwinFPN: backbone parity with transformers' `SwinBackbone` on the GPU (fp32, odd input sizes), bf16 autocast agreement,
a training step; then the speed of the backbone and of the whole segmenter (ours, and the same FPN and head on
transformers' backbone) against transformers' at batch 8 and 32, 512x512, in fp32 eager, bf16 autocast eager and
bf16 autocast under `torch.compile`, with model FLOP utilisation: FLOPs counted by `torch.utils.flop_counter` / time /
the GPU's dense bf16 peak (`DENSE_BF16_PEAK_TFLOPS`). Rows are timed alternately (median of rounds) and saved one by
one; `--swin_budget_s` bounds the Swin speed part (about 8 minutes in all on an H200 with the defaults).
DDPM: `DDPMPaperPipeline` against diffusers' `DDPMPipeline` on the same UNet and seed (samples and time).
Writes `benchmarks/results/gpu_<device>.json` (e.g. `gpu_h200.json`).

    python benchmarks/bench_gpu.py [--batches 8 32] [--skip_ddpm] [--out PATH]
    python benchmarks/bench_gpu.py --dry_run        # CPU, tiny sizes, writes $TMPDIR/gpu_dry_run_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from bench_support import counted_flops
from diffusers import DDPMPipeline, DDPMScheduler
from transformers import SwinBackbone, SwinConfig

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, SwinFPNConfig, SwinFPNForSegmentation, paper_unet
from hf_swin_ddpm.swin_fpn.convert_swin_fpn import convert_swin_backbone_state_dict, swin_geometry

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets (SXM parts where there are two);
# the first name that occurs in `torch.cuda.get_device_name()` is used, `--peak_tflops` overrides.
DENSE_BF16_PEAK_TFLOPS = {
    "H200": 989.4,
    "H100 PCIe": 756.5,
    "H100": 989.4,
    "A100": 312.0,
    "L40S": 362.05,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
}
SWIN_MODES = ("eager_fp32", "eager_bf16", "compile_bf16")


def dense_bf16_peak_tflops(device_name: str, override: float | None) -> float | None:
    if override is not None:
        return override
    return next((peak for name, peak in DENSE_BF16_PEAK_TFLOPS.items() if name in device_name), None)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def alternating_seconds(fns: dict, x, device: str, repeats: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each function over `repeats` rounds of `calls` calls each, the functions
    alternating round by round (after two warm-up calls each, which also compile)."""
    for fn in fns.values():
        fn(x), fn(x)
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn(x)
            synchronize(device)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def swin_pair(device: str, geometry: dict | None = None) -> tuple[SwinBackbone, SwinFPNForSegmentation]:
    """transformers' SwinBackbone (Swin-T unless `geometry`, random weights) and our segmenter with its weights."""
    torch.manual_seed(0)
    swin_config = SwinConfig(
        **(geometry or {}), out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0
    )
    reference = SwinBackbone(swin_config).to(device).eval()
    config = SwinFPNConfig(**swin_geometry(swin_config), num_labels=150, drop_path_rate=0.0)
    model = SwinFPNForSegmentation(config).to(device).eval()
    model.backbone.load_state_dict(convert_swin_backbone_state_dict(reference.state_dict()))
    return reference, model


def swin_targets(reference: SwinBackbone, model: SwinFPNForSegmentation) -> dict[str, dict]:
    """The backbones, and the whole segmenter: our model, and the same FPN and head on transformers' backbone."""

    def segmenter_on_reference(x: torch.Tensor) -> torch.Tensor:
        logits = model.decode_head(model.fpn(reference(x).feature_maps))
        return model._upsample_to_input(logits, x.shape[-2:])

    return {
        "backbone": {"transformers": lambda x: reference(x).feature_maps, "ours": model.backbone},
        "segmenter": {"transformers": segmenter_on_reference, "ours": lambda x: model(x).logits},
    }


def swin_checks(device: str, size: int, reference: SwinBackbone, model: SwinFPNForSegmentation) -> dict:
    """Parity with transformers on the device (fp32, odd sizes), bf16 agreement, a training step."""
    results: dict = {"parity_fp32": {}}
    with torch.inference_mode():
        for shape in [(224, 224), (333, 517), (size, size)]:
            x = torch.randn(2, 3, *shape, device=device)
            diff = max((a - b).abs().max().item() for a, b in zip(reference(x).feature_maps, model.backbone(x)))
            results["parity_fp32"][f"{shape[0]}x{shape[1]}"] = diff
        x = torch.randn(2, 3, size, size, device=device)
        fp32 = model(x).logits
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            bf16 = model(x).logits.float()
        results["bf16_logits_max_abs_diff"] = (fp32 - bf16).abs().max().item()
        results["bf16_argmax_agreement"] = (fp32.argmax(1) == bf16.argmax(1)).float().mean().item()

    model.train()
    labels = torch.randint(0, model.config.num_labels, (2, size, size), device=device)
    loss = model(torch.randn(2, 3, size, size, device=device), labels=labels).loss
    loss.backward()
    results["train_step_loss"] = loss.item()
    results["all_grads_finite"] = all(torch.isfinite(p.grad).all().item() for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()
    return results


def swin_speed_row(
    fns: dict, x: torch.Tensor, device: str, mode: str, args: argparse.Namespace, peak_tflops: float | None
) -> dict:
    """One (target, batch, mode) row: median times, speedup (transformers / ours), images/s, and per side the
    counted FLOPs (fp32, `torch.utils.flop_counter`), achieved TFLOP/s and MFU against the dense bf16 peak."""
    with torch.inference_mode():
        flops = {name: counted_flops(lambda fn=fn: fn(x)) for name, fn in fns.items()}
        if mode.startswith("compile"):
            fns = {name: torch.compile(fn, backend=args.compile_backend, dynamic=False) for name, fn in fns.items()}
        autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if "bf16" in mode else nullcontext()
        with autocast:
            seconds = alternating_seconds(fns, x, device, args.repeats, args.calls)
    row = {"mode": mode, "batch": x.shape[0], "speedup": seconds["transformers"] / seconds["ours"]}
    for name in fns:
        achieved = flops[name] / seconds[name] / 1e12
        row[name] = {
            "seconds": seconds[name],
            "images_per_s": x.shape[0] / seconds[name],
            "gflop": flops[name] / 1e9,
            "achieved_tflops": achieved,
            "mfu_of_dense_bf16_peak": None if peak_tflops is None else achieved / peak_tflops,
        }
    return row


def swin_speed(
    device: str,
    reference: SwinBackbone,
    model: SwinFPNForSegmentation,
    args: argparse.Namespace,
    peak_tflops: float | None,
    report: dict,
    save,
) -> None:
    """Every target x batch x mode row into `report["swin_speed"]`, saved after each row; rows that would start
    after `args.swin_budget_s` seconds are listed as skipped, so that a short device lease still returns data."""
    rows, skipped = report.setdefault("swin_speed", []), report.setdefault("swin_speed_skipped", [])
    began = time.perf_counter()
    targets = swin_targets(reference, model)
    for mode in SWIN_MODES:  # the compiled rows (the slowest to start) last
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size, device=device)
            for target, fns in targets.items():
                if time.perf_counter() - began > args.swin_budget_s:
                    skipped.append(f"{target} batch {batch} {mode}")
                    continue
                row = {"target": target, **swin_speed_row(fns, x, device, mode, args, peak_tflops)}
                rows.append(row)
                print(
                    f"{target:<10} batch {batch:>3} {mode:<13} transformers {row['transformers']['seconds'] * 1e3:8.2f} ms"
                    f"  ours {row['ours']['seconds'] * 1e3:8.2f} ms  speedup {row['speedup']:.2f}x  "
                    f"MFU ours {_percent(row['ours']['mfu_of_dense_bf16_peak'])}",
                    flush=True,
                )
                save()
            del x
            if device.startswith("cuda"):
                torch.cuda.empty_cache()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def ddpm_checks(device: str, unet_name: str, batch_size: int, steps: int) -> dict:
    torch.manual_seed(0)
    unet = paper_unet(unet_name).to(device).eval()
    ours = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler())
    theirs = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(variance_type="fixed_large", clip_sample=False))
    ours.set_progress_bar_config(disable=True)
    theirs.set_progress_bar_config(disable=True)
    results = {}
    with torch.inference_mode():
        for name, pipe in (("diffusers", theirs), ("ours", ours)):
            generator = torch.Generator(device=device).manual_seed(0)
            synchronize(device)
            start = time.perf_counter()
            images = pipe(
                batch_size=batch_size, generator=generator, num_inference_steps=steps, output_type="np"
            ).images
            synchronize(device)
            results[f"{name}_seconds"] = time.perf_counter() - start
            results[f"{name}_images"] = images
    results["samples_max_abs_diff"] = float(abs(results.pop("ours_images") - results.pop("diffusers_images")).max())
    results["time_ratio_ours_over_diffusers"] = results["ours_seconds"] / results["diffusers_seconds"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds per row (median)")
    parser.add_argument("--calls", type=int, default=5, help="calls per round")
    parser.add_argument("--compile_backend", default="inductor")
    parser.add_argument("--peak_tflops", type=float, default=None, help="dense bf16 peak, if not in the table")
    parser.add_argument("--swin_budget_s", type=float, default=330.0, help="start no Swin speed row after this")
    parser.add_argument("--skip_ddpm", action="store_true")
    parser.add_argument("--unet", default="cifar10")
    parser.add_argument("--ddpm_batch", type=int, default=16)
    parser.add_argument("--ddpm_steps", type=int, default=1000)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/gpu_<device>.json")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="on the CPU with a tiny Swin, 64x64, batches 1 and 2, compile with the 'eager' backend, 2 DDPM steps of "
        "the tiny UNet: checks that every path runs, measures nothing",
    )
    args = parser.parse_args()
    geometry = None
    if args.dry_run:
        args.device, args.size, args.batches, args.repeats, args.calls = "cpu", 64, [1, 2], 1, 1
        args.compile_backend, args.unet, args.ddpm_batch, args.ddpm_steps = "eager", "tiny", 1, 2
        geometry = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=7)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    peak = dense_bf16_peak_tflops(device_name, args.peak_tflops)
    slug = "dry_run_cpu" if args.dry_run else "_".join(device_name.lower().replace("nvidia", "").split())
    folder = Path(tempfile.gettempdir()) if args.dry_run else Path(__file__).parent / "results"
    out = Path(args.out or folder / f"gpu_{slug}.json")
    report = {
        "device": device_name,
        "torch": torch.__version__,
        "dense_bf16_peak_tflops": peak,
        "args": vars(args),
        "swin_fpn_geometry": geometry or "Swin-T",
        "notes": "speedup = transformers' time / ours (> 1: ours faster); FLOPs counted in fp32 with "
        "torch.utils.flop_counter, per side (ours skips the padding slots' output projection); MFU = counted FLOPs "
        "/ time / dense bf16 peak, in every mode",
    }
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(report, indent=2))

    reference, model = swin_pair(args.device, geometry)
    report["swin_fpn"] = swin_checks(args.device, args.size, reference, model)
    print(json.dumps(report["swin_fpn"], indent=2), flush=True)
    save()
    swin_speed(args.device, reference, model, args, peak, report, save)
    del reference, model
    if not args.skip_ddpm:
        report["ddpm"] = ddpm_checks(args.device, args.unet, args.ddpm_batch, args.ddpm_steps)
        report["ddpm"].update(unet=args.unet, batch=args.ddpm_batch, steps=args.ddpm_steps)
        print(json.dumps(report["ddpm"], indent=2))
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
