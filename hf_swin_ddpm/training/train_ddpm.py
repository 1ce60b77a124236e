"""Train a DDPM (Ho et al. 2020) with accelerate and save it as a ``DDPMPaperPipeline``.

    accelerate launch -m hf_swin_ddpm.training.train_ddpm --dataset_name digits --model_config tiny \\
        --output_dir ddpm-digits --train_batch_size 64 --max_train_steps 2000 --lr_warmup_steps 100

The defaults are the paper's CIFAR-10 recipe: the 35.7M-parameter UNet (``--model_config cifar10``), Adam at 2e-4
with 5,000 warm-up steps and then a constant rate, gradient clipping at 1.0, an EMA of the weights with decay 0.9999,
dropout 0.1, random horizontal flips (off for ``digits``), T = 1000 linear betas from 1e-4 to 0.02 and the L_simple
loss ||eps - eps_theta(x_t, t)||^2 with t uniform. Sample grids go to the trackers and ``output_dir/samples/`` every
``--save_images_steps``; at the end ``output_dir`` holds the pipeline (EMA weights when EMA is on), its variational
bound in bits/dim on the held-out split (``all_results.json``), ``sample_grid.png`` and a model card.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel
from PIL import Image
from torch.utils.data import DataLoader

from ..data import DDPMTransform, collate_ddpm
from ..diffusion import PAPER_UNET_PRESETS, DDPMPaperPipeline, DDPMPaperScheduler
from ..diffusion.scheduling_ddpm_paper import MAX_NUM_TRAIN_TIMESTEPS
from ..imaging import image_grid
from . import arguments, checkpoints, loop, publishing, reporting, runtime
from .dataloaders import (
    TrainingData,
    dataset_description,
    evaluation_dataloader,
    load_train_and_eval_datasets,
    training_dataloader,
)
from .errors import TrainingError, run_with_clear_errors

PROGRAM = "train_ddpm"
logger = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The flags: the common ones plus the DDPM-specific ones (names of diffusers' ``train_unconditional.py``)."""
    parser = argparse.ArgumentParser(
        prog="train_ddpm", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    arguments.add_common_arguments(parser)
    ddpm = parser.add_argument_group("DDPM")
    ddpm.add_argument("--dropout", type=float, default=0.1, help="UNet dropout (the paper's CIFAR-10 value).")
    ddpm.add_argument("--ddpm_num_steps", type=int, default=1000, help="T, the number of diffusion steps.")
    ddpm.add_argument(
        "--ddpm_beta_schedule",
        default="linear",
        choices=("linear", "scaled_linear", "squaredcos_cap_v2"),
        help="The betas over t (the paper's: linear from 1e-4 to 0.02).",
    )
    ddpm.add_argument("--ddpm_num_inference_steps", type=int, default=1000, help="Sampling steps of the sample grids.")
    ddpm.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="Keep an EMA of weights.")
    ddpm.add_argument("--ema_decay", type=float, default=0.9999, help="Maximum EMA decay.")
    ddpm.add_argument("--ema_min_decay", type=float, default=0.0, help="Minimum EMA decay.")
    ddpm.add_argument(
        "--ema_warmup",
        action="store_true",
        help="EMA decay warm-up 1 - (1 + step / inv_gamma)^-power (default: EMAModel's (1 + step) / (10 + step)).",
    )
    ddpm.add_argument("--ema_inv_gamma", type=float, default=1.0, help="inv_gamma of the --ema_warmup schedule.")
    ddpm.add_argument("--ema_power", type=float, default=3 / 4, help="power of the --ema_warmup schedule.")
    ddpm.add_argument("--adam_weight_decay", type=float, default=0.0, help="Decoupled weight decay (0: plain Adam).")
    ddpm.add_argument("--save_images_steps", type=int, default=1000, help="Log a sample grid every N steps.")
    ddpm.add_argument("--num_sample_images", type=int, default=16, help="Images in each sample grid.")
    ddpm.add_argument(
        "--eval_bpd_timesteps",
        type=int,
        default=100,
        help="KL terms of the variational bound evaluated (stratified sample over T, unbiased; 0 skips the evaluation).",
    )
    fid = parser.add_argument_group("FID during training (EMA weights; hf_swin_ddpm.evaluation)")
    fid.add_argument(
        "--eval_fid_steps", type=int, default=0, help="Measure FID every K optimizer steps and at the end (0: never)."
    )
    fid.add_argument("--eval_fid_samples", type=int, default=1000, help="Generated images N per FID measurement.")
    fid.add_argument("--eval_fid_inference_steps", type=int, default=250, help="Sampling steps S of those images.")
    fid.add_argument(
        "--eval_fid_features",
        choices=("classifier", "inception"),
        default="classifier",
        help="Features: the digit classifier (digits, mnist) or the FID Inception (needs --eval_fid_inception_weights).",
    )
    fid.add_argument(
        "--eval_fid_inception_weights", default=None, help="FID Inception weights: a path or REPO[:FILE]."
    )
    fid.add_argument(
        "--eval_fid_reference",
        default=None,
        help="Real images: DATASET[:SPLIT], a FOLDER or a STATS.npz (default: the training split or --train_data_dir).",
    )
    fid.add_argument(
        "--eval_fid_cache_dir", default=None, help="Cache of the classifier and statistics (default: the hub cache)."
    )
    parser.set_defaults(
        model_config="cifar10",
        train_batch_size=128,
        num_epochs=None,
        learning_rate=2e-4,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=5000,
        max_grad_norm=1.0,
    )
    return parser


DEFAULT_NUM_EPOCHS = 100


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; fill in the defaults that depend on others (flips)."""
    args = build_parser().parse_args(argv)
    arguments.check_common_arguments(args)
    args.command_line = arguments.command_line(PROGRAM, sys.argv[1:] if argv is None else argv, [args.hub_token])
    for flag in ("ddpm_num_steps", "ddpm_num_inference_steps", "save_images_steps", "num_sample_images"):
        arguments.check_positive(getattr(args, flag), f"--{flag}")
    arguments.check_positive(args.eval_bpd_timesteps, "--eval_bpd_timesteps", allow_zero=True)
    if args.ddpm_num_steps > MAX_NUM_TRAIN_TIMESTEPS:
        raise TrainingError(f"--ddpm_num_steps must be at most {MAX_NUM_TRAIN_TIMESTEPS}, got {args.ddpm_num_steps}")
    if args.ddpm_num_inference_steps > args.ddpm_num_steps:
        raise TrainingError(
            f"--ddpm_num_inference_steps ({args.ddpm_num_inference_steps}) exceeds --ddpm_num_steps ({args.ddpm_num_steps})"
        )
    if not 0.0 <= args.dropout < 1.0:
        raise TrainingError(f"--dropout must lie in [0, 1), got {args.dropout}")
    if not 0.0 < args.ema_decay <= 1.0:
        raise TrainingError(f"--ema_decay must lie in (0, 1], got {args.ema_decay}")
    args.random_flip = arguments.default_random_flip(args)
    check_fid_arguments(args)
    return args


def check_fid_arguments(args: argparse.Namespace) -> None:
    """The FID flags: counts in range, a reference and features that can be measured (fails before training)."""
    arguments.check_positive(args.eval_fid_steps, "--eval_fid_steps", allow_zero=True)
    if not args.eval_fid_steps:
        return
    if args.eval_fid_samples < 2:
        raise TrainingError(
            f"--eval_fid_samples must be at least 2 (FID needs a covariance), got {args.eval_fid_samples}"
        )
    if not 1 <= args.eval_fid_inference_steps <= args.ddpm_num_steps:
        raise TrainingError(
            f"--eval_fid_inference_steps must lie in [1, --ddpm_num_steps = {args.ddpm_num_steps}], got "
            f"{args.eval_fid_inference_steps}"
        )
    if args.eval_fid_reference is None:
        args.eval_fid_reference = f"{args.dataset_name}:train" if args.dataset_name else str(args.train_data_dir)
    from ..evaluation import CLASSIFIER_DATASETS, parse_reference

    try:
        reference = parse_reference(args.eval_fid_reference)
    except ValueError as error:
        raise TrainingError(f"--eval_fid_reference: {error}") from None
    if args.eval_fid_features == "classifier" and not (
        reference.is_dataset and reference.source in CLASSIFIER_DATASETS
    ):
        if args.dataset_name not in CLASSIFIER_DATASETS:
            raise TrainingError(
                f"--eval_fid_features classifier needs digit data ({', '.join(CLASSIFIER_DATASETS)}); use "
                "--eval_fid_features inception --eval_fid_inception_weights PATH_OR_REPO for other images"
            )


# --- model and data -------------------------------------------------------------------------------------------------


def build_unet(args: argparse.Namespace) -> UNet2DModel:
    """The UNet of ``--model_config`` (a preset of ``PAPER_UNET_PRESETS`` or a JSON config), at ``--resolution``
    with ``--dropout``."""
    config = arguments.load_model_config(args.model_config, PAPER_UNET_PRESETS)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if args.resolution is not None:
        config["sample_size"] = args.resolution
    config["dropout"] = args.dropout
    try:
        return UNet2DModel(**config)
    except (TypeError, ValueError) as error:
        raise TrainingError(f"--model_config {args.model_config}: not a valid UNet2DModel config ({error})") from None


def unet_resolution(unet: UNet2DModel) -> int:
    """The side of the square images the UNet is trained on."""
    size = unet.config.sample_size
    return int(size if isinstance(size, int) else size[0])


def build_noise_scheduler(args: argparse.Namespace) -> DDPMPaperScheduler:
    """The paper's forward process: T steps, betas from 1e-4 to 0.02 (linear by default), sigma_t^2 = beta_t."""
    return DDPMPaperScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule)


def build_dataloaders(
    args: argparse.Namespace, resolution: int, channels: int
) -> tuple[DataLoader, DataLoader | None, DDPMTransform, TrainingData]:
    """The training and held-out DataLoaders (before ``accelerator.prepare``), the training transform (its epoch
    must be set every epoch) and the loaded data."""
    data = load_train_and_eval_datasets(args, "generation")
    train_dataset, eval_dataset = data.train, data.eval
    train_transform = DDPMTransform(resolution, channels, random_flip=args.random_flip, seed=args.seed)
    train_dataloader = training_dataloader(args, train_dataset, train_transform, collate_ddpm)
    eval_dataloader = None
    if eval_dataset is not None and args.eval_bpd_timesteps > 0:
        eval_transform = DDPMTransform(resolution, channels, random_flip=False)
        eval_dataloader = evaluation_dataloader(args, eval_dataset, eval_transform, collate_ddpm, data.eval_source)
    return train_dataloader, eval_dataloader, train_transform, data


def build_ema(args: argparse.Namespace, unet: UNet2DModel) -> EMAModel | None:
    """diffusers' ``EMAModel`` of the UNet's weights (None without ``--use_ema``)."""
    if not args.use_ema:
        return None
    return EMAModel(
        unet.parameters(),
        decay=args.ema_decay,
        min_decay=args.ema_min_decay,
        use_ema_warmup=args.ema_warmup,
        inv_gamma=args.ema_inv_gamma,
        power=args.ema_power,
        model_cls=UNet2DModel,
        model_config=unet.config,
    )


# --- the training step ------------------------------------------------------------------------------------------------


def ddpm_loss(unet: torch.nn.Module, noise_scheduler: DDPMPaperScheduler, clean_images: torch.Tensor) -> torch.Tensor:
    """L_simple (Algorithm 1): ||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)||^2, t uniform in
    0..T-1 (the paper's 1..T). Noise and timesteps come from the global torch RNG (per process)."""
    noise = torch.randn(clean_images.shape, device=clean_images.device, dtype=clean_images.dtype)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],), device=clean_images.device
    )
    noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
    noise_pred = unet(noisy_images, timesteps).sample
    return F.mse_loss(noise_pred.float(), noise.float())


def training_step(
    accelerator,
    unet,
    noise_scheduler,
    optimizer,
    lr_scheduler,
    batch: dict[str, torch.Tensor],
    max_grad_norm: float,
    guard: loop.NonFiniteGuard | None = None,
    forward_unet: torch.nn.Module | None = None,
) -> torch.Tensor:
    """One micro-batch of L_simple (see :func:`~.loop.accumulated_step`); the forward runs ``forward_unet`` (the
    compiled UNet of ``--torch_compile``) when given, everything else ``unet``."""
    return loop.accumulated_step(
        accelerator,
        unet,
        optimizer,
        lr_scheduler,
        lambda: ddpm_loss(unet if forward_unet is None else forward_unet, noise_scheduler, batch["input"]),
        max_grad_norm,
        guard,
    )


# --- sampling and evaluation ------------------------------------------------------------------------------------------


class ema_weights:  # noqa: N801 (a context manager used like a function)
    """Within the block the model holds the EMA weights (no-op without EMA); the training weights come back after."""

    def __init__(self, ema: EMAModel | None, model: torch.nn.Module) -> None:
        self.ema, self.model = ema, model

    def __enter__(self) -> torch.nn.Module:
        if self.ema is not None:
            self.ema.store(self.model.parameters())
            self.ema.copy_to(self.model.parameters())
        return self.model

    def __exit__(self, *exc_info: object) -> None:
        if self.ema is not None:
            self.ema.restore(self.model.parameters())


def generate_samples(unet: UNet2DModel, noise_scheduler: DDPMPaperScheduler, args: argparse.Namespace) -> list:
    """``--num_sample_images`` images from the reverse chain (Algorithm 2), seeded by ``--seed``."""
    pipeline = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler.from_config(noise_scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator(device=unet.device).manual_seed(args.seed)
    was_training = unet.training
    unet.eval()
    try:
        return pipeline(
            batch_size=args.num_sample_images, generator=generator, num_inference_steps=args.ddpm_num_inference_steps
        ).images
    finally:
        unet.train(was_training)


def save_sample_grid(images: list, path: Path) -> Image.Image:
    """Save the images as one grid, upscaled (nearest) so that each image is at least 64 pixels wide."""
    grid = image_grid(images)
    factor = max(1, math.ceil(64 / images[0].width))
    grid = grid.resize((grid.width * factor, grid.height * factor), Image.NEAREST) if factor > 1 else grid
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid


def evaluate_bpd(
    accelerator, unet: UNet2DModel, noise_scheduler: DDPMPaperScheduler, eval_dataloader, args: argparse.Namespace
) -> dict[str, float]:
    """The variational bound (bits/dim) averaged over the held-out images, gathered over all processes
    (:func:`~hf_swin_ddpm.evaluation.mean_bits_per_dim`), as ``eval_*_bpd`` results and ``eval_samples``."""
    from ..evaluation import mean_bits_per_dim

    generator = torch.Generator(device=accelerator.device).manual_seed(args.seed + 1 + accelerator.process_index)
    bound = mean_bits_per_dim(
        unet,
        noise_scheduler,
        eval_dataloader,
        generator=generator,
        num_timesteps=args.eval_bpd_timesteps,
        accelerator=accelerator,
        desc="bits/dim",
        leave=False,
    )
    if not bound:
        return {}
    num_images = bound.pop("num_images")
    return {**{f"eval_{name}": value.item() for name, value in bound.items()}, "eval_samples": num_images}


def build_fid_metrics(args: argparse.Namespace):
    """The ``SampleMetrics`` of the FID flags (the classifier trained and cached on first use), or None."""
    if not args.eval_fid_steps:
        return None
    from ..evaluation import CLASSIFIER_DATASETS, SampleMetrics, parse_reference

    reference = parse_reference(args.eval_fid_reference)
    classifier_dataset = reference.source if reference.source in CLASSIFIER_DATASETS else args.dataset_name
    return SampleMetrics(
        args.eval_fid_features,
        classifier_dataset=classifier_dataset or "mnist",
        seed=args.seed,
        inception_weights=args.eval_fid_inception_weights,
        cache_dir=args.eval_fid_cache_dir,
    )


def evaluate_fid(
    unet: UNet2DModel, noise_scheduler: DDPMPaperScheduler, metrics, args: argparse.Namespace
) -> dict[str, Any]:
    """FID, KID and IS of ``--eval_fid_samples`` samples (``--eval_fid_inference_steps`` steps, seeded by ``--seed``)
    against ``--eval_fid_reference``, with the model in eval mode; the global RNG is left alone."""
    from ..evaluation.sampling import evaluate_pipeline

    pipeline = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler.from_config(noise_scheduler.config))
    was_training = unet.training
    unet.eval()
    try:
        measured = evaluate_pipeline(
            pipeline,
            metrics,
            args.eval_fid_reference,
            args.eval_fid_samples,
            args.eval_fid_inference_steps,
            batch_size=args.eval_batch_size,
            seed=args.seed,
            progress=False,
            cache_dir=args.eval_fid_cache_dir,
        )
    finally:
        unet.train(was_training)
    return {
        "eval_fid": measured["fid"],
        "eval_kid": measured["kid_mean"],
        "eval_inception_score": measured["inception_score_mean"],
        "eval_fid_samples": measured["num_generated"],
        "eval_fid_inference_steps": args.eval_fid_inference_steps,
        "eval_fid_reference": args.eval_fid_reference,
        "eval_fid_features": measured["features"],
    }


def _log_fid(accelerator, unet, ema, noise_scheduler, metrics, args: argparse.Namespace, step: int) -> None:
    """Main process: FID with the EMA weights, logged to the trackers as ``eval_fid`` (and KID, IS)."""
    if accelerator.is_main_process:
        with ema_weights(ema, unet):
            measured = evaluate_fid(unet, noise_scheduler, metrics, args)
        logger.info(f"step {step}: FID {measured['eval_fid']:.4f}", main_process_only=True)
        accelerator.log({k: v for k, v in measured.items() if isinstance(v, float)}, step=step)
    accelerator.wait_for_everyone()


# --- the run ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DDPMTrainingResult:
    """What :func:`train` returns: the UNet as saved (the EMA weights when EMA is on), the training weights (without
    EMA), the noise scheduler, the results written to ``all_results.json`` and the process index."""

    unet: UNet2DModel
    training_weights: dict[str, torch.Tensor]
    noise_scheduler: DDPMPaperScheduler
    results: dict[str, Any]
    process_index: int


def build_optimizer(args: argparse.Namespace, unet: UNet2DModel) -> torch.optim.Optimizer:
    """Adam (the paper's; decoupled weight decay with ``--adam_weight_decay``)."""
    return torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.adam_weight_decay,
    )


def build_lr_scheduler(args: argparse.Namespace, accelerator, optimizer, max_train_steps: int):
    """``--lr_scheduler`` after ``--lr_warmup_steps`` (the paper: constant after 5,000), as
    :func:`runtime.learning_rate_schedule` builds it."""
    return runtime.learning_rate_schedule(args, accelerator, optimizer, max_train_steps)


def train(args: argparse.Namespace) -> DDPMTrainingResult:
    """Train as the flags say; returns the result on every process (used by the multi-process tests)."""
    # 1. the accelerator, the output folder, the same initial weights on every process
    accelerator, output_dir = runtime.start_run(args)

    # 2. the UNet, the forward process and the data
    unet = build_unet(args)
    if args.gradient_checkpointing:
        runtime.enable_gradient_checkpointing(unet)
    runtime.use_channels_last(unet, args)
    noise_scheduler = build_noise_scheduler(args)
    resolution = unet_resolution(unet)
    with accelerator.main_process_first():
        train_dataloader, eval_dataloader, train_transform, data = build_dataloaders(
            args, resolution, unet.config.in_channels
        )

    # 3. the optimizer and the learning-rate schedule, prepared by accelerate with the dataloaders; the EMA
    optimizer = build_optimizer(args, unet)
    streaming = isinstance(train_dataloader.dataset, datasets.IterableDataset)
    train_dataloader = accelerator.prepare(train_dataloader)
    batches_per_epoch = None if streaming else len(train_dataloader)  # per process
    max_train_steps, _, _ = loop.resolve_training_length(args, batches_per_epoch, DEFAULT_NUM_EPOCHS)
    lr_scheduler = build_lr_scheduler(args, accelerator, optimizer, max_train_steps)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if eval_dataloader is not None:
        eval_dataloader = accelerator.prepare(eval_dataloader)
    unwrapped = accelerator.unwrap_model(unet)
    ema = build_ema(args, unwrapped)
    if ema is not None:
        ema.to(accelerator.device)

    # 4. resume from a checkpoint when asked, start the trackers
    progress = loop.TrainingProgress()  # saved with the EMA in every checkpoint (checkpoints.save_checkpoint)
    set_seed(args.seed, device_specific=True)  # different noise on every process
    checkpoints.resume_if_requested(accelerator, args.resume_from_checkpoint, output_dir, progress, ema)
    total_batch_size = _start_trackers(accelerator, args, unet, max_train_steps, resolution)

    # 5. the optimizer steps (Algorithm 1), each followed by the EMA update; sample grids and FID every so often
    forward_unet = runtime.training_forward_module(unet, args)
    fid_metrics = build_fid_metrics(args) if accelerator.is_main_process else None
    optimizer_steps = loop.OptimizerSteps(
        accelerator,
        args,
        progress,
        max_train_steps,
        lr_scheduler,
        ema=ema,
        log_extra=lambda: {"ema_decay": ema.cur_decay_value} if ema is not None else {},
    )
    unet.train()
    batches = loop.resumable_batches(
        accelerator, train_dataloader, train_transform, progress, max_train_steps, streaming
    )

    def train_step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return training_step(
            accelerator,
            unet,
            noise_scheduler,
            optimizer,
            lr_scheduler,
            {"input": runtime.channels_last_images(batch["input"], args)},
            args.max_grad_norm,
            optimizer_steps.guard,
            forward_unet,
        )

    for step in optimizer_steps.steps(batches, train_step):
        if ema is not None:
            ema.step(unet.parameters())
        if step % args.save_images_steps == 0 and step != max_train_steps:
            _log_samples(accelerator, unwrapped, ema, noise_scheduler, args, step)
        if args.eval_fid_steps and step % args.eval_fid_steps == 0 and step != max_train_steps:
            _log_fid(accelerator, unwrapped, ema, noise_scheduler, fid_metrics, args, step)
    results: dict[str, Any] = optimizer_steps.results(total_batch_size)

    # 6. the EMA weights in the model; the final evaluation; the pipeline, the results and the card saved (and pushed)
    accelerator.wait_for_everyone()
    training_weights = {name: tensor.detach().clone() for name, tensor in unwrapped.state_dict().items()}
    if ema is not None:
        ema.copy_to(unwrapped.parameters())
    results.update(
        _final_evaluation(accelerator, unwrapped, noise_scheduler, eval_dataloader, data, fid_metrics, args)
    )
    if accelerator.is_main_process:
        with publishing.final_outputs_written(output_dir):
            _save_outputs(args, unwrapped, noise_scheduler, results, output_dir)
    accelerator.log({k: v for k, v in results.items() if isinstance(v, int | float)}, step=progress.global_step)
    unet = forward_unet = None  # the DDP wrapper freed before the process group is (runtime.end_run)
    runtime.end_run(accelerator)
    return DDPMTrainingResult(unwrapped, training_weights, noise_scheduler, results, accelerator.process_index)


def _start_trackers(accelerator, args: argparse.Namespace, unet, max_train_steps: int, resolution: int) -> int:
    """Start the trackers and log what is trained; returns the total batch size."""
    accelerator.init_trackers(args.tracker_project_name or PROGRAM, config=reporting.tracker_config(args))
    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"Training {sum(p.numel() for p in unet.parameters()):,} parameters for {max_train_steps} steps "
        f"(batch {total_batch_size} = {args.train_batch_size} x {accelerator.num_processes} processes x "
        f"{args.gradient_accumulation_steps} accumulation), images {resolution}x{resolution}",
        main_process_only=True,
    )
    return total_batch_size


def _final_evaluation(
    accelerator, unet, noise_scheduler, eval_dataloader, data: TrainingData, fid_metrics, args: argparse.Namespace
) -> dict[str, Any]:
    """The results of the saved weights: the held-out bits/dim (with where the images come from) and, with
    ``--eval_fid_steps``, FID / KID / IS (main process)."""
    results: dict[str, Any] = {}
    if eval_dataloader is not None:
        results.update(evaluate_bpd(accelerator, unet, noise_scheduler, eval_dataloader, args))
        results.update(
            eval_bpd_timesteps=args.eval_bpd_timesteps, eval_source=data.eval_source, eval_split=data.eval_split
        )
    if fid_metrics is not None:
        results.update(evaluate_fid(unet, noise_scheduler, fid_metrics, args))
    return results


def _log_samples(accelerator, unet, ema, noise_scheduler, args: argparse.Namespace, step: int) -> None:
    """Sample a grid with the EMA weights on the main process; save it under ``samples/`` and log it."""
    if accelerator.is_main_process:
        with ema_weights(ema, unet):
            images = generate_samples(unet, noise_scheduler, args)
        grid = save_sample_grid(images, Path(args.output_dir) / "samples" / f"samples-{step:07d}.png")
        reporting.log_image(accelerator, "samples", grid, step)
    accelerator.wait_for_everyone()


def _save_outputs(
    args: argparse.Namespace,
    unet: UNet2DModel,
    noise_scheduler: DDPMPaperScheduler,
    results: dict[str, Any],
    output_dir: Path,
) -> None:
    """Main process: the pipeline, ``sample_grid.png``, ``all_results.json``, the model card, and the Hub push."""
    pipeline = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler.from_config(noise_scheduler.config))
    pipeline.save_pretrained(output_dir)
    images = generate_samples(unet, noise_scheduler, args)
    save_sample_grid(images, output_dir / "sample_grid.png")
    publishing.write_all_results(output_dir, results)
    card_fields = ddpm_card_fields(args, unet, results, output_dir)
    publishing.write_model_card(output_dir, "ddpm", card_fields)
    if "eval_fid" in results:
        _record_fid_in_card(output_dir, results)
    if args.push_to_hub:
        url = publishing.push_trained_model(pipeline, args, card_fields, example_image=output_dir / "sample_grid.png")
        print(f"Pushed to {url}")


def _record_fid_in_card(output_dir: Path, results: dict[str, Any]) -> None:
    """The final FID / KID / IS into the card's model-index (``hub.update_card_results``)."""
    from ..evaluation import parse_reference
    from ..hub import update_card_results

    reference = parse_reference(results["eval_fid_reference"])
    dataset, split = (reference.source, reference.split) if reference.is_dataset else (reference.source, None)
    measured = {
        "fid": results["eval_fid"],
        "kid_mean": results["eval_kid"],
        "inception_score_mean": results["eval_inception_score"],
        "num_generated": results["eval_fid_samples"],
        "num_inference_steps": results["eval_fid_inference_steps"],
        "features": results["eval_fid_features"],
    }
    update_card_results(output_dir, measured, dataset=dataset, split=split)


def ddpm_card_fields(
    args: argparse.Namespace, unet: UNet2DModel, results: dict[str, Any], output_dir: Path
) -> dict[str, Any]:
    """The model card fields of the run (``hf_swin_ddpm.hub.render_model_card`` names)."""
    resolution = unet_resolution(unet)
    colour = "grayscale" if unet.config.in_channels == 1 else f"{unet.config.in_channels}-channel"
    hyperparameters = {
        "learning_rate": args.learning_rate,
        "lr_scheduler": runtime.learning_rate_schedule_description(args),
        "optimizer": f"Adam betas ({args.adam_beta1}, {args.adam_beta2}), eps {args.adam_epsilon}, "
        f"weight decay {args.adam_weight_decay}",
        "max_grad_norm": args.max_grad_norm,
        "dropout": args.dropout,
        "EMA": f"decay {args.ema_decay}" if args.use_ema else "off",
        "random_flip": args.random_flip,
        "beta schedule": f"{args.ddpm_beta_schedule}, T = {args.ddpm_num_steps}",
    }
    return publishing.run_card_fields(
        args,
        results,
        output_dir,
        model_config=args.model_config,
        hyperparameters=hyperparameters,
        metric=("bits_per_dim", results.get("eval_total_bpd")),
        training_data=f"Trained on {dataset_description(args)} at {resolution}x{resolution} ({colour}); "
        f"held-out images: {results.get('eval_source', 'none')}.",
        num_parameters=sum(p.numel() for p in unet.parameters()),
        architecture={
            "block_out_channels": tuple(unet.config.block_out_channels),
            "layers_per_block": unet.config.layers_per_block,
            "down_block_types": tuple(unet.config.down_block_types),
        },
        sample_size=f"{resolution}x{resolution} {colour}",
        num_train_timesteps=args.ddpm_num_steps,
        image_file="sample_grid.png",
        image_caption=f"{args.num_sample_images} samples ({args.ddpm_num_inference_steps} steps, seed {args.seed})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hf_swin_ddpm.training.train_ddpm`` / ``hf-swin-ddpm train-ddpm``."""
    return run_with_clear_errors(PROGRAM, lambda: train(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
