"""Time `SwinFPNForSegmentation.backbone` against transformers' `SwinBackbone` on the same Swin-T weights.

fp32 eager, bf16 autocast and `torch.compile`, batch 2 at 512x512, 2 threads, both models timed alternately in one
run; then the whole segmenter (the same FPN and head on either backbone) for inference and for a training step
(forward, backward, AdamW). Prints a table of median times and ratios (transformers time / ours: > 1 means ours is faster) and writes
`benchmarks/results/swin_backbone.json`.

    python benchmarks/bench_swin_backbone.py [--size 512] [--batch 2] [--threads 2] [--repeats 7] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import SwinBackbone, SwinConfig

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.swin_fpn.modeling_swin_fpn import _swin_geometry, convert_swin_backbone_state_dict

RESULTS = Path(__file__).parent / "results"


def build_pair() -> tuple[torch.nn.Module, SwinFPNForSegmentation]:
    """transformers' SwinBackbone (Swin-T, random weights, SDPA) and our model whose backbone has the same weights."""
    torch.manual_seed(0)
    swin_config = SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0)
    reference = SwinBackbone(swin_config).eval()
    # same stochastic depth on both sides (none): SwinFPNConfig's default of 0.1 would add drop-path work to ours
    ours = SwinFPNForSegmentation(
        SwinFPNConfig(**_swin_geometry(swin_config), num_labels=150, drop_path_rate=0.0)
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
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    reference.eval(), model.eval()
    return {name: statistics.median(values) for name, values in times.items()}


def reference_forward(model: torch.nn.Module):
    return lambda x: model(x).feature_maps


def time_alternating(fns: dict, x: torch.Tensor, repeats: int, autocast: bool) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so that both see the same machine state."""
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode(), context:
        for fn in fns.values():  # warm-up (and compilation)
            fn(x)
            fn(x)
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference_model, model = build_pair()
    reference, ours = reference_forward(reference_model), model.backbone
    x = torch.randn(args.batch, 3, args.size, args.size)
    modes = [("eager fp32", False, False), ("eager bf16 autocast", True, False)]
    if not args.no_compile:
        modes += [("compile fp32", False, True)]
    rows = []
    for mode, autocast, compiled in modes:
        fns = {"transformers": reference, "ours": ours}
        if compiled:
            fns = {name: torch.compile(fn) for name, fn in fns.items()}
        seconds = time_alternating(fns, x, args.repeats, autocast)
        diff = max_abs_diff(fns["transformers"], fns["ours"], x, autocast)
        rows.append(
            {
                "mode": mode,
                "transformers_s": seconds["transformers"],
                "ours_s": seconds["ours"],
                "speedup": seconds["transformers"] / seconds["ours"],
                "max_abs_diff": diff,
            }
        )
    eager = rows[0]["transformers_s"], rows[0]["ours_s"]
    whole = whole_model_pair(reference_model, model)
    seconds = time_alternating(whole, x, args.repeats, autocast=False)
    rows.append({"mode": "whole model fp32", **_row_times(seconds), "max_abs_diff": max_abs_diff_logits(whole, x)})
    seconds = training_step_seconds(reference_model, model, x, max(3, args.repeats // 2))
    rows.append({"mode": "training step fp32", **_row_times(seconds), "max_abs_diff": float("nan")})
    for row in rows[: len(modes)]:
        row["transformers_gain_vs_eager"] = eager[0] / row["transformers_s"]
        row["ours_gain_vs_eager"] = eager[1] / row["ours_s"]

    print(
        f"Swin-T backbone, batch {args.batch} at {args.size}x{args.size}, {args.threads} threads, {platform.processor()}"
    )
    print(f"{'mode':<22}{'transformers':>14}{'ours':>10}{'speedup':>9}{'max|diff|':>11}")
    for row in rows:
        print(
            f"{row['mode']:<22}{row['transformers_s'] * 1e3:>12.1f}ms{row['ours_s'] * 1e3:>8.1f}ms"
            f"{row['speedup']:>8.2f}x{row['max_abs_diff']:>11.2e}"
        )
    bf16 = {"ours_speedup_over_our_fp32": rows[1]["ours_gain_vs_eager"], **bf16_agreement(model, x)}
    print(
        f"ours, bf16 autocast over fp32: {bf16['ours_speedup_over_our_fp32']:.2f}x; segmentation logits vs fp32 "
        f"(random weights): argmax agrees on {bf16['argmax_agreement']:.2%} of pixels, relative L2 error "
        f"{bf16['relative_l2_error']:.2e}"
    )
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "args": vars(args),
        "rows": rows,
        "bf16_autocast": bf16,
    }
    (RESULTS / "swin_backbone.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
