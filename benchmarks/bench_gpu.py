"""GPU check and timings for both models (run where a CUDA device is available).

SwinFPN: backbone parity with transformers' `SwinBackbone` on the GPU (fp32, odd input sizes), bf16 autocast agreement,
a training step, and the speed of ours against transformers' eager and under `torch.compile` (batch 8 at 512x512).
DDPM: `DDPMPaperPipeline` against diffusers' `DDPMPipeline` on the same UNet and seed (samples and time).
Writes `benchmarks/results/gpu.json`.

    python benchmarks/bench_gpu.py [--device cuda] [--out benchmarks/results/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler
from transformers import SwinBackbone, SwinConfig

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, SwinFPNConfig, SwinFPNForSegmentation, paper_unet
from hf_swin_ddpm.swin_fpn.modeling_swin_fpn import _swin_geometry, convert_swin_backbone_state_dict


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, x, device: str, repeats: int = 10) -> float:
    for _ in range(3):
        fn(x)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def swin_checks(device: str, size: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    swin_config = SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0)
    reference = SwinBackbone(swin_config).to(device).eval()
    model = SwinFPNForSegmentation(SwinFPNConfig(**_swin_geometry(swin_config), num_labels=150)).to(device).eval()
    model.backbone.load_state_dict(convert_swin_backbone_state_dict(reference.state_dict()))
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
    labels = torch.randint(0, 150, (2, size, size), device=device)
    loss = model(torch.randn(2, 3, size, size, device=device), labels=labels).loss
    loss.backward()
    results["train_step_loss"] = loss.item()
    results["all_grads_finite"] = all(torch.isfinite(p.grad).all().item() for p in model.parameters())
    model.eval()

    batch = torch.randn(batch_size, 3, size, size, device=device)
    ours, theirs = model.backbone, (lambda x: reference(x).feature_maps)
    timings = {}
    with torch.inference_mode():
        timings["eager_fp32"] = {"transformers": timed(theirs, batch, device), "ours": timed(ours, batch, device)}
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            timings["eager_bf16"] = {"transformers": timed(theirs, batch, device), "ours": timed(ours, batch, device)}
        compiled_theirs, compiled_ours = torch.compile(theirs), torch.compile(ours)
        timings["compile_fp32"] = {
            "transformers": timed(compiled_theirs, batch, device),
            "ours": timed(compiled_ours, batch, device),
        }
    for row in timings.values():
        row["speedup"] = row["transformers"] / row["ours"]
    results[f"backbone_batch{batch_size}_{size}"] = timings
    return results


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
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--unet", default="cifar10")
    parser.add_argument("--ddpm-batch", type=int, default=16)
    parser.add_argument("--ddpm-steps", type=int, default=1000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.json"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report["swin_fpn"] = swin_checks(args.device, args.size, args.batch)
    print(json.dumps(report, indent=2), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    report["ddpm"] = ddpm_checks(args.device, args.unet, args.ddpm_batch, args.ddpm_steps)
    report["ddpm"].update(unet=args.unet, batch=args.ddpm_batch, steps=args.ddpm_steps)
    print(json.dumps(report["ddpm"], indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
