"""onnxruntime (CPU) against PyTorch eager on this CPU: the same model, the same inputs, the same thread count.

Models: the demo's segmentation preset (`tiny`: 4 stages, convolutional stem, window 4) at the demo size 64x64 and at
512x512, batch 1, exported once with `hf_swin_ddpm.export` (dynamic sizes: one file serves both); and the DDPM
`small` UNet at 32x32, batch 1. Each pair is timed alternately (`bench_support.alternate`), medians reported, with
the largest absolute difference of the outputs. The export time is reported too (torch.export's symbolic shape
reasoning dominates it and grows with the number of stages and blocks).

    python benchmarks/bench_onnx.py [--threads 2] [--repeats 10] [--seg_preset tiny] [--out DIR]

Writes `benchmarks/results/onnx.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from bench_support import alternate

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.diffusion import paper_unet
from hf_swin_ddpm.export import export_swin_fpn_onnx, export_unet_onnx
from hf_swin_ddpm.training.train_segmentation import SEGMENTATION_PRESETS

RESULTS = Path(__file__).parent / "results"


def _cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
    return " ".join(flag for flag in wanted if f" {flag}" in flags)


def _compare(name, run_torch, run_ort, repeats) -> dict:
    torch_out, ort_out = run_torch(), run_ort()
    torch_times, ort_times = alternate(run_torch, run_ort, repeats)
    eager, onnx = statistics.median(torch_times), statistics.median(ort_times)
    row = {
        "case": name,
        "eager_s": round(eager, 5),
        "onnxruntime_s": round(onnx, 5),
        "speedup": round(eager / onnx, 3),
        "max_abs_diff": float(np.abs(np.asarray(torch_out) - np.asarray(ort_out)).max()),
    }
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seg_preset", default="tiny", choices=tuple(SEGMENTATION_PRESETS))
    parser.add_argument("--out", default=None, help="folder for the .onnx files (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    out = Path(args.out or tempfile.mkdtemp())
    rows, exports = [], {}

    torch.manual_seed(0)
    config = SwinFPNConfig(**{**SEGMENTATION_PRESETS[args.seg_preset], "max_input_pixels": None}, num_labels=4)
    model = SwinFPNForSegmentation(config).eval()
    start = time.perf_counter()
    path = export_swin_fpn_onnx(model, out / "seg", opset=18)
    exports[f"swin_fpn_{args.seg_preset}"] = round(time.perf_counter() - start, 1)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model.config._attn_implementation = "sdpa"  # eager PyTorch as users run it (export switched it to eager)
    for size in (64, 512):
        pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))

        def run_torch(pixels=pixels):
            with torch.inference_mode():
                return model(pixel_values=pixels).logits.numpy()

        array = pixels.numpy()

        def run_ort(array=array):
            return session.run(None, {"pixel_values": array})[0]

        rows.append(_compare(f"swin_fpn {args.seg_preset} 1x3x{size}x{size}", run_torch, run_ort, args.repeats))

    unet = paper_unet("small").eval()
    start = time.perf_counter()
    path = export_unet_onnx(unet, out / "unet", opset=18)
    exports["unet_small"] = round(time.perf_counter() - start, 1)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    sample = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor([500])

    def run_unet_torch():
        with torch.inference_mode():
            return unet(sample, timestep).sample.numpy()

    def run_unet_ort():
        return session.run(None, {"sample": sample.numpy(), "timestep": timestep.numpy()})[0]

    rows.append(_compare("ddpm unet small 1x3x32x32", run_unet_torch, run_unet_ort, args.repeats))
    result = {
        "machine": {"cpu_flags": _cpu_flags(), "processor": platform.processor() or platform.machine()},
        "threads": args.threads,
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "export_seconds": exports,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
