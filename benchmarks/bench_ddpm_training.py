"""Training throughput: our DDPM training step against the inner loop of diffusers' ``train_unconditional.py``.

Both sides train the same UNet (same initial weights) on the same batches with an accelerate-prepared AdamW, LR
scheduler and diffusers' ``EMAModel``; two such trainers exist and the sides swap them after every timed pair (one
trainer instance can run a little slower than an identical other one). Ours is ``hf_swin_ddpm.training.train_ddpm.training_step`` (L_simple with
``DDPMPaperScheduler.add_noise``, the non-finite check of the loss and gradient norm whose norm the clipping reuses)
plus the EMA step and our logging (`RunningLoss`: a loss reduce every 10 steps). Theirs
reproduces ``train_unconditional.py``'s loop body: noise, ``randint`` timesteps, ``DDPMScheduler.add_noise``, the
UNet, MSE, ``accelerator.backward``, clipping at 1.0, optimizer and LR step, the EMA step, and its per-step
``loss.item()`` logging. Runs alternate between the two so that load from other processes hits both alike; the ratio
is the median of the per-pair ratios of images per second, ours / diffusers (goal: >= 1, no slower); the ratio of the
fastest runs is printed beside it. The minor page faults per step of each side are recorded too: glibc's malloc
hands freed activation memory back to the kernel and faults it in again, depending on when tensors die (see the
README); ``MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=268435456`` in the environment turns that off for
both sides.

    .venv/bin/python benchmarks/bench_ddpm_training.py            # writes benchmarks/results/ddpm_training.json
    .venv/bin/python benchmarks/bench_ddpm_training.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import tempfile
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from bench_support import alternate
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from hf_swin_ddpm.diffusion import DDPMPaperScheduler, paper_unet
from hf_swin_ddpm.training.checkpoints import TrainingProgress
from hf_swin_ddpm.training.loop import NonFiniteGuard, RunningLoss
from hf_swin_ddpm.training.train_ddpm import training_step

RESULTS = Path(__file__).parent / "results" / "ddpm_training.json"
LOGGING_STEPS = 10  # our default --logging_steps


class Trainer:
    """A UNet with its prepared optimizer, LR scheduler and EMA, and a function running ``steps`` training steps."""

    def __init__(self, accelerator: Accelerator, unet: UNet2DModel, weight_decay: float) -> None:
        optimizer = torch.optim.AdamW(
            unet.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay
        )
        lr_scheduler = get_scheduler("constant_with_warmup", optimizer=optimizer, num_warmup_steps=500)
        self.accelerator = accelerator
        self.unet, self.optimizer, self.lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
        self.ema = EMAModel(self.unet.parameters(), decay=0.9999, model_cls=UNet2DModel, model_config=unet.config)
        self.global_step = 0


def our_steps(trainer: Trainer, batches: list[torch.Tensor], noise_scheduler: DDPMPaperScheduler) -> None:
    """Our training loop body (train_ddpm.train without the data loading, sampling and checkpoints), with the
    non-finite check of every optimizer step (the loss and gradient norm; clipping reuses that norm)."""
    accelerator = trainer.accelerator
    running_loss, progress_bar = RunningLoss(accelerator.device), tqdm(disable=True)
    guard = NonFiniteGuard(TrainingProgress(), tempfile.gettempdir())
    for clean_images in batches:
        loss = training_step(
            accelerator,
            trainer.unet,
            noise_scheduler,
            trainer.optimizer,
            trainer.lr_scheduler,
            {"input": clean_images},
            1.0,
            guard,
        )
        running_loss.add(loss)
        if accelerator.sync_gradients:
            trainer.ema.step(trainer.unet.parameters())
            trainer.global_step += 1
            if trainer.global_step % LOGGING_STEPS == 0:
                lr = trainer.lr_scheduler.get_last_lr()[0]
                running_loss.log(
                    accelerator, progress_bar, trainer.global_step, lr, 0, ema_decay=trainer.ema.cur_decay_value
                )


def diffusers_steps(trainer: Trainer, batches: list[torch.Tensor], noise_scheduler: DDPMScheduler) -> None:
    """The loop body of diffusers' examples/unconditional_image_generation/train_unconditional.py (epsilon)."""
    accelerator, model = trainer.accelerator, trainer.unet
    for clean_images in batches:
        noise = torch.randn(clean_images.shape, dtype=clean_images.dtype, device=clean_images.device)
        bsz = clean_images.shape[0]
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (bsz,), device=clean_images.device
        ).long()
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        with accelerator.accumulate(model):
            model_output = model(noisy_images, timesteps).sample
            loss = F.mse_loss(model_output.float(), noise.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            trainer.optimizer.zero_grad()
        if accelerator.sync_gradients:
            trainer.ema.step(model.parameters())
            trainer.global_step += 1
        logs = {"loss": loss.detach().item(), "lr": trainer.lr_scheduler.get_last_lr()[0], "step": trainer.global_step}
        logs["ema_decay"] = trainer.ema.cur_decay_value
        accelerator.log(logs, step=trainer.global_step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", help="paper_unet preset (small: 32x32 RGB, half-width CIFAR-10)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=6, help="timed pairs of runs")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 2 steps, 2 pairs; writes nothing")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.preset, args.steps, args.repeats, args.batch_size = "tiny", 2, 2, 8

    torch.manual_seed(0)
    accelerator = Accelerator()
    unet = paper_unet(args.preset, dropout=0.1)
    # Two trainers, and the sides swap them after every pair: an A/A check (our step against itself on two trainers)
    # showed one trainer instance 1-2% slower than the other for no reason in the code, which would otherwise bias
    # whichever side got it.
    trainers = [Trainer(accelerator, copy.deepcopy(unet), weight_decay=0.0) for _ in range(2)]
    rounds = {"ours": 0, "theirs": 0}
    size, channels = unet.config.sample_size, unet.config.in_channels
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.rand((args.batch_size, channels, size, size), generator=generator) * 2 - 1).to(accelerator.device)
        for _ in range(args.steps)
    ]
    our_scheduler = DDPMPaperScheduler()
    their_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")

    faults = {"ours": 0, "theirs": 0}  # minor page faults (memory the allocator got back from the kernel)

    def run_ours() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        our_steps(trainers[rounds["ours"] % 2], batches, our_scheduler)
        faults["ours"] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        rounds["ours"] += 1

    def run_theirs() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        diffusers_steps(trainers[(rounds["theirs"] + 1) % 2], batches, their_scheduler)
        faults["theirs"] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        rounds["theirs"] += 1

    our_times, their_times = alternate(run_ours, run_theirs, args.repeats)
    images = args.steps * args.batch_size
    ratios = [their / our for our, their in zip(our_times, their_times, strict=True)]  # ours / theirs in images/s
    result = {
        "what": "DDPM training images per second: hf_swin_ddpm train_ddpm step vs diffusers train_unconditional loop",
        "preset": args.preset,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "resolution": size,
        "batch_size": args.batch_size,
        "steps_per_run": args.steps,
        "repeats": args.repeats,
        "ours_images_per_second_median": images / statistics.median(our_times),
        "diffusers_images_per_second_median": images / statistics.median(their_times),
        "ours_images_per_second_best": images / min(our_times),
        "diffusers_images_per_second_best": images / min(their_times),
        "ratio_median_of_pairs": statistics.median(ratios),
        "ratio_best": min(their_times) / min(our_times),
        "ours_minor_page_faults_per_step": faults["ours"] / (rounds["ours"] * args.steps),
        "diffusers_minor_page_faults_per_step": faults["theirs"] / (rounds["theirs"] * args.steps),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "device": str(accelerator.device),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    print(
        f"{args.preset} UNet, batch {args.batch_size} at {size}x{size}: ours "
        f"{result['ours_images_per_second_median']:.1f} img/s, diffusers' loop "
        f"{result['diffusers_images_per_second_median']:.1f} img/s; ratio ours/diffusers "
        f"{result['ratio_median_of_pairs']:.3f} (median of pairs), {result['ratio_best']:.3f} (best runs)"
    )
    if not args.quick:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
