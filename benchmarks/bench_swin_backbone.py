"""Time `SwinFPNForSegmentation.backbone` against transformers' `SwinBackbone` on the same Swin-T weights.

fp32 eager, bf16 autocast and `torch.compile`, batch 2 at 512x512, 2 threads, both models timed alternately in one
run; then the whole segmenter (the same FPN and head on either backbone) for inference and for a training step
(forward, backward, AdamW). Prints a table of median times and ratios (transformers time / ours: > 1 means ours is faster) and writes
`benchmarks/results/swin_backbone.json`.

Against the machine's limit: in the eager fp32 row each repeat also times a 2048^3 fp32 matmul (best of 3), so both
backbones' achieved rate (FLOPs counted with `torch.utils.flop_counter`, our fused oneDNN linears included, / median
time) is a fraction of the median matmul rate of the same minutes, on a machine whose load may change meanwhile.

    python benchmarks/bench_swin_backbone.py [--size 512] [--batch 2] [--threads 2] [--repeats 7]
        [--parts fp32 bf16 compile whole training] [--no_compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from bench_support import counted_flops
from transformers import SwinBackbone, SwinConfig

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.swin_fpn.convert_swin_fpn import convert_swin_backbone_state_dict, swin_geometry

RESULTS = Path(__file__).parent / "results"
# `--clock cpu` times with this process's CPU time: with one thread, what other jobs on a shared machine take from
# it (waiting for a core) is left out; what they share with it (caches, memory bandwidth) is not.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def matmul_rate(n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of the fastest of `repeats` n^3 fp32 matmuls (after one warm-up), on `clock`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = clock()
        a @ b
        times.append(clock() - start)
    return 2 * n**3 / min(times) / 1e9


def build_pair() -> tuple[torch.nn.Module, SwinFPNForSegmentation]:
    """transformers' SwinBackbone (Swin-T, random weights, SDPA) and our model whose backbone has the same weights."""
    torch.manual_seed(0)
    swin_config = SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0)
    reference = SwinBackbone(swin_config).eval()
    # same stochastic depth on both sides (none): SwinFPNConfig's default of 0.1 would add drop-path work to ours
    ours = SwinFPNForSegmentation(
        SwinFPNConfig(**swin_geometry(swin_config), num_labels=150, drop_path_rate=0.0)
    ).eval()
    ours.backbone.load_state_dict(convert_swin_backbone_state_dict(reference.state_dict()))
    return reference, ours


def whole_model_pair(reference: torch.nn.Module, model: SwinFPNForSegmentation) -> dict:
    """Segmentation logits of SwinFPN, and of the same FPN and head on transformers' backbone."""

    def with_reference_backbone(x: torch.Tensor) -> torch.Tensor:
        logits = model.decode_head(model.fpn(reference(x).feature_maps))
        return model._upsample_to_input(logits, x.shape[-2:])

    return {"transformers": with_reference_backbone, "ours": lambda x: model(x).logits}


def training_step_seconds(reference, model, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of one forward + backward + AdamW step of the whole segmenter, each backbone in turn."""
    labels = torch.randint(0, model.config.num_labels, (x.shape[0], *x.shape[-2:]))
    forwards = whole_model_pair(reference, model)
    reference.train(), model.train()
    optimizers = {
        "transformers": torch.optim.AdamW(
            [*reference.parameters(), *model.fpn.parameters(), *model.decode_head.parameters()]
        ),
        "ours": torch.optim.AdamW(model.parameters()),
    }

    def step(name: str) -> None:
        loss = torch.nn.functional.cross_entropy(forwards[name](x), labels, ignore_index=255)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {name: [] for name in forwards}
    for name in forwards:
        step(name)
    for _ in range(repeats):
        for name in forwards:
            start = clock()
            step(name)
            times[name].append(clock() - start)
    reference.eval(), model.eval()
    return {name: statistics.median(values) for name, values in times.items()}


def reference_forward(model: torch.nn.Module):
    return lambda x: model(x).feature_maps


def time_alternating(
    fns: dict, x: torch.Tensor, repeats: int, autocast: bool, matmul_rates: list[float] | None = None
) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so that both see the same machine state; with
    `matmul_rates`, a 2048^3 matmul's GFLOP/s is appended to it after each repeat."""
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode(), context:
        for fn in fns.values():  # warm-up (and compilation)
            fn(x)
            fn(x)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = clock()
                fn(x)
                times[name].append(clock() - start)
            if matmul_rates is not None:
                matmul_rates.append(matmul_rate())
    return {name: statistics.median(values) for name, values in times.items()}


def fraction_of_matmul(fns: dict, x: torch.Tensor, seconds: dict[str, float], matmul_rates: list[float]) -> dict:
    """Counted GFLOP, achieved GFLOP/s and its fraction of the median matmul rate, per backbone."""
    matmul = statistics.median(matmul_rates)
    result = {"matmul_gflops": matmul, "matmul_gflops_per_repeat": matmul_rates}
    with torch.inference_mode():
        for name, fn in fns.items():
            flops = counted_flops(lambda fn=fn: fn(x))
            achieved = flops / seconds[name] / 1e9
            result[name] = {"gflop": flops / 1e9, "achieved_gflops": achieved, "fraction_of_matmul": achieved / matmul}
    return result


def max_abs_diff(reference, ours, x: torch.Tensor, autocast: bool) -> float:
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    with torch.inference_mode(), context:
        return max((a.float() - b.float()).abs().max().item() for a, b in zip(reference(x), ours(x)))


def _row_times(seconds: dict[str, float]) -> dict[str, float]:
    return {
        "transformers_s": seconds["transformers"],
        "ours_s": seconds["ours"],
        "speedup": seconds["transformers"] / seconds["ours"],
    }


def max_abs_diff_logits(fns: dict, x: torch.Tensor) -> float:
    with torch.inference_mode():
        return (fns["transformers"](x) - fns["ours"](x)).abs().max().item()


def bf16_agreement(model: SwinFPNForSegmentation, x: torch.Tensor) -> dict[str, float]:
    """How far bf16 autocast moves our segmentation logits from fp32: per-pixel argmax agreement, relative L2 error."""
    with torch.inference_mode():
        reference = model(x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).logits.float()
    return {
        "argmax_agreement": (reference.argmax(1) == low.argmax(1)).float().mean().item(),
        "relative_l2_error": ((low - reference).norm() / reference.norm()).item(),
        "max_abs_diff": (low - reference).abs().max().item(),
    }


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (`platform.processor()` is empty on many Linux machines), and its count."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} logical CPUs"


PARTS = ("fp32", "bf16", "compile", "whole", "training")


def backbone_rows(reference, ours, x: torch.Tensor, args: argparse.Namespace, part: str) -> tuple[dict, dict | None]:
    """One backbone row (eager fp32 with the matmul rate, bf16 autocast or compiled fp32)."""
    fns = {"transformers": reference, "ours": ours}
    if part == "compile":
        fns = {name: torch.compile(fn) for name, fn in fns.items()}
    autocast, matmul_rates = part == "bf16", [] if part == "fp32" else None
    seconds = time_alternating(fns, x, args.repeats, autocast, matmul_rates)
    mode = {"fp32": "eager fp32", "bf16": "eager bf16 autocast", "compile": "compile fp32"}[part]
    row = {
        "mode": mode,
        **_row_times(seconds),
        "max_abs_diff": max_abs_diff(fns["transformers"], fns["ours"], x, autocast),
    }
    return row, None if matmul_rates is None else fraction_of_matmul(fns, x, seconds, matmul_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="rows to measure; the others are kept from the existing JSON (each row records its run's time and load), "
        "so that a busy machine can measure them in several short runs",
    )
    parser.add_argument("--no_compile", action="store_true", help="the same as leaving 'compile' out of --parts")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="'cpu' (with --threads 1) for a machine other jobs share",
    )
    parser.add_argument("--out", default=str(RESULTS / "swin_backbone.json"))
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    parts = [part for part in args.parts if not (args.no_compile and part == "compile")]

    path = Path(args.out)
    payload = json.loads(path.read_text()) if path.exists() else {}
    rows = {row["mode"]: row for row in payload.get("rows", [])}
    reference_model, model = build_pair()
    reference, ours = reference_forward(reference_model), model.backbone
    x = torch.randn(args.batch, 3, args.size, args.size)
    stamp = {"measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    for part in parts:
        if part in ("fp32", "bf16", "compile"):
            row, efficiency = backbone_rows(reference, ours, x, args, part)
            if efficiency is not None:
                payload["eager_fp32_vs_matmul"] = {**efficiency, **stamp, "load_average": os.getloadavg()}
        elif part == "whole":
            whole = whole_model_pair(reference_model, model)
            seconds = time_alternating(whole, x, args.repeats, autocast=False)
            row = {"mode": "whole model fp32", **_row_times(seconds), "max_abs_diff": max_abs_diff_logits(whole, x)}
        else:
            seconds = training_step_seconds(reference_model, model, x, max(3, args.repeats // 2))
            row = {"mode": "training step fp32", **_row_times(seconds), "max_abs_diff": float("nan")}
        rows[row["mode"]] = {**row, **stamp, "load_average": os.getloadavg(), "repeats": args.repeats}
    if "bf16" in parts:
        bf16_speedup = (
            rows["eager fp32"]["ours_s"] / rows["eager bf16 autocast"]["ours_s"] if "eager fp32" in rows else None
        )
        payload["bf16_autocast"] = {"ours_speedup_over_our_fp32": bf16_speedup, **bf16_agreement(model, x)}

    print(f"Swin-T backbone, batch {args.batch} at {args.size}x{args.size}, {args.threads} threads, {_cpu_name()}")
    print(f"{'mode':<22}{'transformers':>14}{'ours':>10}{'speedup':>9}{'max|diff|':>11}  measured")
    for row in rows.values():
        print(
            f"{row['mode']:<22}{row['transformers_s'] * 1e3:>12.1f}ms{row['ours_s'] * 1e3:>8.1f}ms"
            f"{row['speedup']:>8.2f}x{row['max_abs_diff']:>11.2e}  {row.get('measured_at', '?')}"
        )
    efficiency = payload.get("eager_fp32_vs_matmul")
    if efficiency and "ours" in efficiency:
        print(
            f"eager fp32 against a 2048^3 matmul's {efficiency['matmul_gflops']:.0f} GFLOP/s (median of the repeats): "
            + ", ".join(
                f"{name} {efficiency[name]['gflop']:.1f} GFLOP at {efficiency[name]['achieved_gflops']:.0f} GFLOP/s = "
                f"{efficiency[name]['fraction_of_matmul']:.0%}"
                for name in ("transformers", "ours")
            )
        )
    payload.update(
        machine=platform.platform(),
        processor=_cpu_name(),
        torch=torch.__version__,
        args={"size": args.size, "batch": args.batch, "threads": args.threads, "clock": args.clock},
        rows=list(rows.values()),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
