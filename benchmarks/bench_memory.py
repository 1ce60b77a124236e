"""Peak memory: one training step with and without gradient checkpointing, and the Space with both models loaded.

Training steps (forward, loss, backward, optimizer step; no gradient clipping), each in a fresh process:

- `SwinFPNForSegmentation` with the Swin-T preset (`SWIN_FPN_PRESETS["swin-tiny"]`, 150 classes as ADE20K, the
  config's drop_path_rate) at batch 2 and 512x512, AdamW, with and without `activation_checkpointing_enable()` (the
  name transformers 5 gives `gradient_checkpointing_enable()`, which it deprecates and forwards);
- the DDPM UNet `paper_unet("cifar10")` (dropout 0.1) at batch 16 and 32x32 on L_simple, Adam, with and without
  diffusers' `enable_gradient_checkpointing()`.

The peak is the rise of the process's resident set size over the first step, sampled every millisecond from a thread
(as benchmarks/bench_swin_scaling.py does): after backward (`fwd+bwd`) and over the whole step including the
optimizer's first update, which allocates Adam's two moments (2x the parameters). Freed memory that glibc keeps is
not seen again, hence one fresh process per measurement. Also reported: the bytes autograd saves for backward
(activations, parameters excluded, counted with `saved_tensors_hooks`; a checkpointed block saves only its inputs),
the time per step (median of `--steps` further steps, so recomputation's cost shows), and the largest difference
between the gradients of the first step with and without checkpointing (same seeds, so the same dropout masks).

The Space: `spaces_app/app.py` in its own process (OMP_NUM_THREADS=1, as tests/space_load_support.py starts it), with
(a) the tiny random-weight test models of tests/space_app_support.py and (b) `demo_models/swin-fpn-digit-scenes` and
`demo_models/ddpm-mnist` where they exist: resident memory after launch, after one /segment call and after one
/generate call, and the high-water mark (VmHWM).

Writes `benchmarks/results/memory.json` (not in `--quick` mode unless `--output` is given).

    .venv/bin/python benchmarks/bench_memory.py                    # the sizes above, writes the JSON
    .venv/bin/python benchmarks/bench_memory.py --skip_space       # training steps only
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py --quick --threads 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace

import torch
from bench_support import MIB, PeakResident, resident_mib

from hf_swin_ddpm.training.runtime import enable_gradient_checkpointing

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "memory.json"
DEMO_MODELS = {
    "swin_fpn": REPO_ROOT / "demo_models" / "swin-fpn-digit-scenes",
    "ddpm": REPO_ROOT / "demo_models" / "ddpm-mnist",
}
ADE20K_CLASSES = 150


# ------------------------------------------------------------------------------------------------ memory sampling


class SavedActivations:
    """Counts the distinct storages autograd saves for backward, parameters excluded (a `saved_tensors_hooks` pair)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.storages: dict[int, int] = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.parameters:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / MIB


# ------------------------------------------------------------------------------------------------ training steps


@dataclass(frozen=True)
class TrainingCase:
    """One training-step measurement: which model, at what size, with or without checkpointing."""

    model: str  # "swin_fpn" or "ddpm_unet"
    preset: str  # a SWIN_FPN_PRESETS or PAPER_UNET_PRESETS name
    batch: int
    size: int
    checkpointing: bool
    threads: int
    timed_steps: int
    gradients_path: str

    @property
    def label(self) -> str:
        return f"{self.model} {self.preset} {self.batch}x{self.size}x{self.size}"


def build_swin_fpn(case: TrainingCase) -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable[[], torch.Tensor]]:
    """SwinFPN (preset backbone, ADE20K's 150 classes) in training mode, AdamW, and its loss on a fixed batch."""
    from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
    from hf_swin_ddpm.swin_fpn.configuration_swin_fpn import SWIN_FPN_PRESETS

    torch.manual_seed(0)
    config = SwinFPNConfig(**SWIN_FPN_PRESETS[case.preset], num_labels=ADE20K_CLASSES, image_size=case.size)
    model = SwinFPNForSegmentation(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    pixel_values = torch.randn(case.batch, 3, case.size, case.size)
    labels = torch.randint(0, ADE20K_CLASSES, (case.batch, case.size, case.size))
    return model, optimizer, lambda: model(pixel_values, labels=labels).loss


def build_ddpm_unet(case: TrainingCase) -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable[[], torch.Tensor]]:
    """A paper UNet in training mode (dropout on), Adam, and L_simple on a fixed noisy batch."""
    from hf_swin_ddpm import DDPMPaperScheduler, paper_unet

    torch.manual_seed(0)
    unet = paper_unet(case.preset, sample_size=case.size).train()
    optimizer = torch.optim.Adam(unet.parameters(), lr=2e-4)
    scheduler = DDPMPaperScheduler()
    channels = unet.config.in_channels
    x0 = torch.rand(case.batch, channels, case.size, case.size) * 2 - 1
    noise = torch.randn_like(x0)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (case.batch,))
    noisy = scheduler.add_noise(x0, noise, timesteps)
    return unet, optimizer, lambda: torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, noise)


def training_worker(case: TrainingCase) -> dict:
    """In a fresh process: the first step's resident-memory rise and saved activations, the gradients of that step
    (written to `case.gradients_path`), then the time of `case.timed_steps` further steps."""
    torch.set_num_threads(case.threads)
    build = build_swin_fpn if case.model == "swin_fpn" else build_ddpm_unet
    model, optimizer, loss_fn = build(case)
    if case.checkpointing:
        enable_gradient_checkpointing(model)
    saved = SavedActivations(model)
    torch.manual_seed(1)  # the same dropout / drop-path masks with and without checkpointing
    before = resident_mib()
    start = time.perf_counter()
    with PeakResident() as peak:
        peak.mark("fwd+bwd")
        with saved.hooks:
            loss = loss_fn()
        loss.backward()
        peak.mark("optimizer")
        optimizer.step()
    first_seconds = time.perf_counter() - start
    gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    torch.save(gradients, case.gradients_path)
    del gradients
    return {
        **{key: value for key, value in asdict(case).items() if key != "gradients_path"},
        "label": case.label,
        "parameter_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / MIB,
        "resident_before_step_mib": before,
        "rise_fwd_bwd_mib": peak.peaks["fwd+bwd"] - before,
        "rise_step_mib": max(peak.peaks.values()) - before,
        "saved_activations_mib": saved.mib,
        "loss": loss.item(),
        "first_step_seconds": first_seconds,
        "step_seconds": time_steps(optimizer, loss_fn, case.timed_steps),
    }


def time_steps(optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor], steps: int) -> list[float]:
    """Seconds of each of `steps` full training steps."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def in_fresh_process(function: Callable, *args: object) -> object:
    """`function(*args)` in a new spawned process, so that no memory freed by earlier work hides its peak."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def gradient_difference(plain_path: Path, checkpointed_path: Path) -> dict:
    """The largest absolute difference between two saved gradient dicts, and the largest gradient for scale."""
    plain = torch.load(plain_path, weights_only=True)
    checkpointed = torch.load(checkpointed_path, weights_only=True)
    if plain.keys() != checkpointed.keys():
        missing = sorted(plain.keys() ^ checkpointed.keys())[:5]
        return {"error": f"different parameters have gradients: {missing}"}
    max_difference = max((plain[name] - checkpointed[name]).abs().max().item() for name in plain)
    max_gradient = max(g.abs().max().item() for g in plain.values())
    return {"max_abs_difference": max_difference, "max_abs_gradient": max_gradient, "parameters": len(plain)}


def compare_checkpointing(model: str, preset: str, batch: int, size: int, args: argparse.Namespace) -> dict:
    """The training step without and with checkpointing, each in a fresh process, and their gradients' difference."""
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        paths = {flag: Path(folder) / f"gradients-{flag}.pt" for flag in (False, True)}
        for flag, path in paths.items():
            case = TrainingCase(model, preset, batch, size, flag, args.threads, args.steps, str(path))
            rows[flag] = in_fresh_process(training_worker, case)
        difference = gradient_difference(paths[False], paths[True])
    plain, checkpointed = rows[False], rows[True]
    return {
        "without_checkpointing": plain,
        "with_checkpointing": checkpointed,
        "gradients": difference,
        "peak_saved_mib": plain["rise_step_mib"] - checkpointed["rise_step_mib"],
        "fwd_bwd_peak_saved_mib": plain["rise_fwd_bwd_mib"] - checkpointed["rise_fwd_bwd_mib"],
        "time_ratio_with_over_without": median(checkpointed) / median(plain),
    }


def median(row: dict) -> float:
    return statistics.median(row["step_seconds"])


# ------------------------------------------------------------------------------------------------ the Space


def space_support() -> SimpleNamespace:
    """The test helpers that save tiny models and serve the Space (tests/ is not a package), and an example image."""
    if str(REPO_ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
    import space_app_support
    import space_load_support

    return SimpleNamespace(
        save_tiny_segmenter=space_app_support.save_tiny_segmenter,
        save_tiny_ddpm=space_app_support.save_tiny_ddpm,
        served_space=space_load_support.served_space,
        memory_sampler=space_load_support.MemorySampler,
        resident_bytes=space_load_support.resident_bytes,
        peak_resident_bytes=space_load_support.peak_resident_bytes,
        example=sorted((space_app_support.APP_PATH.parent / "examples").glob("*.png"))[0],
    )


def folder_mib(folder: Path) -> float:
    """Size of the weights (*.safetensors) under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors")) / MIB


def space_memory(name: str, swin_fpn: Path, ddpm: Path, generate: tuple[int, int], log: Path) -> dict:
    """Resident memory of the Space serving `swin_fpn` and `ddpm`: after launch, /segment and /generate."""
    from gradio_client import Client, handle_file

    support = space_support()
    num_images, steps = generate
    with support.served_space(swin_fpn, ddpm, log) as server:
        after_launch = support.resident_bytes(server.pid)
        client = Client(server.url, verbose=False, analytics_enabled=False)
        with support.memory_sampler(server.pid) as sampled:
            start = time.perf_counter()
            client.predict(handle_file(str(support.example)), api_name="/segment")
            segment_seconds = time.perf_counter() - start
            after_segment = support.resident_bytes(server.pid)
            start = time.perf_counter()
            client.predict(0, num_images, steps, "sigma² = beta", api_name="/generate")
            generate_seconds = time.perf_counter() - start
            after_generate = support.resident_bytes(server.pid)
        high_water = support.peak_resident_bytes(server.pid)
    return {
        "models": name,
        "swin_fpn_model": str(swin_fpn),
        "ddpm_model": str(ddpm),
        "weights_mib": {"swin_fpn": folder_mib(swin_fpn), "ddpm": folder_mib(ddpm)},
        "after_launch_mib": after_launch / MIB,
        "after_segment_mib": after_segment / MIB,
        "after_generate_mib": after_generate / MIB,
        "peak_sampled_during_calls_mib": sampled.peak / MIB,
        "high_water_mark_mib": high_water / MIB,
        "segment": {"image": support.example.name, "seconds": segment_seconds},
        "generate": {"num_images": num_images, "steps": steps, "seconds": generate_seconds},
    }


def space_memories(generate: tuple[int, int]) -> list[dict]:
    """The Space with the tiny test models, and with the demo models if they have been trained."""
    support = space_support()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-space-") as folder:
        root = Path(folder)
        swin_fpn, ddpm = support.save_tiny_segmenter(root / "swin-fpn"), support.save_tiny_ddpm(root / "ddpm")
        rows.append(space_memory("tiny test models", swin_fpn, ddpm, generate, root / "server.log"))
        if all(path.is_dir() for path in DEMO_MODELS.values()):
            demo = DEMO_MODELS["swin_fpn"], DEMO_MODELS["ddpm"]
            rows.append(space_memory("demo models", *demo, generate, root / "server-demo.log"))
        else:
            rows.append(
                {"models": "demo models", "skipped": f"not found: {', '.join(map(str, DEMO_MODELS.values()))}"}
            )
    return rows


# ------------------------------------------------------------------------------------------------ report


def print_training(comparisons: list[dict]) -> None:
    """One table row per training step, then the savings and slowdown of checkpointing."""
    print(
        f"{'training step':<34}{'ckpt':>5}{'params MiB':>11}{'saved act':>10}{'rise fwd+bwd':>13}{'rise step':>10}"
        f"{'s/step':>8}"
    )
    for comparison in comparisons:
        for key in ("without_checkpointing", "with_checkpointing"):
            row = comparison[key]
            print(
                f"{row['label']:<34}{'yes' if row['checkpointing'] else 'no':>5}{row['parameter_mib']:>11.0f}"
                f"{row['saved_activations_mib']:>10.0f}{row['rise_fwd_bwd_mib']:>13.0f}{row['rise_step_mib']:>10.0f}"
                f"{median(row):>8.3f}"
            )
        gradients = comparison["gradients"]
        detail = gradients.get("error") or (
            f"max |grad diff| {gradients['max_abs_difference']:.2e} (max |grad| {gradients['max_abs_gradient']:.2e})"
        )
        print(
            f"  checkpointing saves {comparison['peak_saved_mib']:.0f} MiB of the step's peak "
            f"({comparison['fwd_bwd_peak_saved_mib']:.0f} MiB of the fwd+bwd peak), time x"
            f"{comparison['time_ratio_with_over_without']:.2f}; {detail}"
        )


def print_space(rows: list[dict]) -> None:
    print(f"\n{'Space RSS, MiB':<20}{'launch':>8}{'/segment':>10}{'/generate':>11}{'sampled peak':>14}{'VmHWM':>8}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['models']:<20}  skipped ({row['skipped']})")
            continue
        print(
            f"{row['models']:<20}{row['after_launch_mib']:>8.0f}{row['after_segment_mib']:>10.0f}"
            f"{row['after_generate_mib']:>11.0f}{row['peak_sampled_during_calls_mib']:>14.0f}"
            f"{row['high_water_mark_mib']:>8.0f}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Swin-T at 1x128x128, the UNet at batch 2, 1 timed step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the measured first one")
    parser.add_argument("--swin_preset", default="swin-tiny")
    parser.add_argument("--swin_batch", type=int, default=2)
    parser.add_argument("--swin_size", type=int, default=512)
    parser.add_argument("--ddpm_preset", default="cifar10")
    parser.add_argument("--ddpm_batch", type=int, default=16)
    parser.add_argument("--ddpm_size", type=int, default=32)
    parser.add_argument("--generate", type=int, nargs=2, default=[8, 250], metavar=("IMAGES", "STEPS"))
    parser.add_argument("--skip_space", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.swin_batch, args.swin_size, args.ddpm_batch, args.generate = 1, 1, 128, 2, [2, 10]
    return args


def main() -> None:
    args = parse_args()
    comparisons = [
        compare_checkpointing("swin_fpn", args.swin_preset, args.swin_batch, args.swin_size, args),
        compare_checkpointing("ddpm_unet", args.ddpm_preset, args.ddpm_batch, args.ddpm_size, args),
    ]
    space = [] if args.skip_space else space_memories(tuple(args.generate))
    print(f"{args.threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print_training(comparisons)
    if space:
        print_space(space)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "benchmark": "memory",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "quick": args.quick,
            "load_average_at_end": os.getloadavg(),
            "memory_definition": "rise of the resident set size over the first training step, sampled every 1 ms, "
            "in a fresh process; Space: RSS of the server process (OMP_NUM_THREADS=1)",
            "training_steps": comparisons,
            "space": space,
        }
        output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
