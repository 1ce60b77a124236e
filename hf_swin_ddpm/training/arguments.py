"""The command line both training scripts share: the common flags, their checks, model configs and the command shown.

The flags carry the names of the diffusers / transformers example scripts (``--dataset_name``, ``--train_data_dir``,
``--output_dir``, ``--resolution``, ``--train_batch_size``, ``--max_train_steps``, ``--checkpointing_steps``,
``--resume_from_checkpoint``, ``--report_to``, ``--push_to_hub``, ...).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import TrainingError, first_line

# Largest --resolution accepted: one 4096 x 4096 RGB image is 200 MB as float32 before any activation.
MAX_RESOLUTION = 4096
# torch.compile's modes (--torch_compile_mode).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# mmseg's keep-ratio resize scale (long side, short side), as `train-seg --eval_scale` and `evaluate-seg --scale` take it
KEEP_RATIO_SCALE = {"type": int, "nargs": 2, "metavar": ("LONG", "SHORT")}
TRACKERS = ("tensorboard", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive", "swanlab", "trackio")


# The schedule transformers offers beyond diffusers' get_scheduler names: warm-up, a constant stretch, then a decay
WARMUP_STABLE_DECAY = "warmup_stable_decay"
# Datasets whose images must not be flipped (a mirrored digit is not a digit).
NO_FLIP_DATASETS = frozenset({"digits", "mnist", "digit_scenes"})


def default_random_flip(args: argparse.Namespace) -> bool:
    """``--random_flip`` as given, else on except for the datasets in ``NO_FLIP_DATASETS``."""
    return args.dataset_name not in NO_FLIP_DATASETS if args.random_flip is None else args.random_flip


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags both scripts share (names of the diffusers / transformers example scripts), group by group.

    Script-specific defaults (learning rate, warm-up, model preset, ...) are set by each script with
    ``parser.set_defaults``.
    """
    _add_data_arguments(parser.add_argument_group("data"))
    parser.add_argument_group("model").add_argument("--model_config", help="A preset name or a JSON config file.")
    training = parser.add_argument_group("training")
    _add_run_arguments(training)
    _add_optimizer_arguments(training)
    _add_speed_arguments(training)
    _add_checkpoint_arguments(parser.add_argument_group("checkpoints"))
    _add_tracking_arguments(parser.add_argument_group("tracking and the Hub"))


def _add_data_arguments(data: argparse._ArgumentGroup) -> None:
    """The dataset (embedded, Hub, local), its held-out split and how much of it is used."""
    data.add_argument(
        "--dataset_name",
        help="An embedded dataset (digits, mnist, shapes), a Hub dataset id, or a local dataset file/folder "
        "(parquet, arrow, save_to_disk).",
    )
    data.add_argument("--dataset_config_name", help="The configuration of the Hub dataset.")
    data.add_argument(
        "--train_data_dir",
        help="A local folder: an image folder (generation) or images/ + annotations/ folders (segmentation).",
    )
    data.add_argument("--cache_dir", help="Where datasets (and pretrained weights) are cached.")
    data.add_argument("--streaming", action="store_true", help="Stream the dataset (needs --max_train_steps).")
    data.add_argument(
        "--eval_split",
        help="The held-out split to evaluate on. Default: 'validation', else 'test', else --train_val_split of train.",
    )
    data.add_argument(
        "--train_val_split",
        type=float,
        default=0.1,
        help="Fraction of the train split held out for evaluation when the dataset has no eval split.",
    )
    data.add_argument("--max_train_samples", type=int, help="Keep only the first N training examples.")
    data.add_argument("--max_eval_samples", type=int, help="Keep only the first N evaluation examples.")
    data.add_argument("--resolution", type=int, help="Training resolution; sets the model's input/sample size.")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes.")
    data.add_argument(
        "--random_flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Random horizontal flips (default: on, except for the digit datasets: a mirrored digit is not a digit).",
    )
    data.add_argument(
        "--skip_bad_examples",
        action="store_true",
        help="Log and skip examples whose image or label map cannot be read (corrupt or truncated files) instead of "
        "stopping with an error that names them; the same examples are skipped after a resume.",
    )


def _add_run_arguments(training: argparse._ArgumentGroup) -> None:
    """Where the run writes, its seed, batches and length."""
    training.add_argument("--output_dir", required=True, help="Where the model, checkpoints and logs go.")
    training.add_argument("--seed", type=int, default=0, help="Seed of initialisation, data order and augmentation.")
    training.add_argument("--train_batch_size", type=int, help="Batch size per process.")
    training.add_argument("--eval_batch_size", type=int, default=16, help="Evaluation batch size per process.")
    training.add_argument("--num_epochs", "--num_train_epochs", dest="num_epochs", type=int, help="Training epochs.")
    training.add_argument("--max_train_steps", type=int, help="Optimizer steps; overrides --num_epochs.")
    training.add_argument(
        "--gradient_accumulation_steps", type=int, default=1, help="Batches whose gradients make one optimizer step."
    )
    training.add_argument("--logging_steps", type=int, default=10, help="Log the loss every N optimizer steps.")


def _add_optimizer_arguments(training: argparse._ArgumentGroup) -> None:
    """Adam(W), its learning-rate schedule (diffusers' ``get_scheduler``) and gradient clipping."""
    training.add_argument("--learning_rate", type=float, help="Peak learning rate.")
    training.add_argument(
        "--lr_scheduler",
        help="diffusers.optimization.get_scheduler name, or warmup_stable_decay (constant, then --lr_decay_steps).",
    )
    training.add_argument("--lr_warmup_steps", type=int, help="Linear warm-up, in optimizer steps.")
    training.add_argument(
        "--lr_decay_steps", type=int, help="warmup_stable_decay: the last N optimizer steps decay the rate to 0."
    )
    training.add_argument("--adam_beta1", type=float, default=0.9, help="Adam's beta1.")
    training.add_argument("--adam_beta2", type=float, default=0.999, help="Adam's beta2.")
    training.add_argument("--adam_epsilon", type=float, default=1e-8, help="Adam's epsilon.")
    training.add_argument("--max_grad_norm", type=float, help="Clip gradients to this global norm (0: no clipping).")


def _add_speed_arguments(training: argparse._ArgumentGroup) -> None:
    """Precision and the options that trade memory or start-up time for speed (activation checkpointing, compile,
    channels-last)."""
    training.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), help="Default: accelerate's config.")
    training.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="Recompute activations in the backward pass: less memory, about 1.2x the time per step.",
    )
    training.add_argument(
        "--torch_compile",
        action="store_true",
        help="torch.compile the model for the training forward (checkpoints and the saved model stay uncompiled).",
    )
    training.add_argument(
        "--torch_compile_mode",
        choices=COMPILE_MODES,
        help="torch.compile's mode with --torch_compile (default: 'default').",
    )
    training.add_argument(
        "--channels_last",
        action="store_true",
        help="Keep the convolution weights and the input images channels-last (NHWC) during training.",
    )


def _add_checkpoint_arguments(checkpoints: argparse._ArgumentGroup) -> None:
    """How often checkpoints are written and kept, resuming, and the non-finite steps a run may skip."""
    checkpoints.add_argument("--checkpointing_steps", type=int, default=500, help="Save a checkpoint every N steps.")
    checkpoints.add_argument("--checkpoints_total_limit", type=int, help="Keep at most N checkpoints (oldest go).")
    checkpoints.add_argument(
        "--resume_from_checkpoint",
        help="A checkpoint folder, or 'latest' / 'auto': the newest complete checkpoint in --output_dir if there is "
        "one, else a fresh start (one command line to re-run after every preemption).",
    )
    checkpoints.add_argument(
        "--max_skipped_nonfinite_steps",
        type=int,
        default=0,
        help="Skip up to N optimizer steps whose loss or gradient norm is NaN or infinite (default 0: stop the run "
        "with an error at the first one).",
    )


def _add_tracking_arguments(tracking: argparse._ArgumentGroup) -> None:
    """The trackers and the Hub push at the end."""
    tracking.add_argument(
        "--report_to", default="tensorboard", help=f"Trackers, comma separated ({', '.join(TRACKERS)}), 'all', 'none'."
    )
    tracking.add_argument("--logging_dir", default="logs", help="Tracker logs, relative to --output_dir.")
    tracking.add_argument("--tracker_project_name", help="Project / run name given to the trackers.")
    tracking.add_argument("--push_to_hub", action="store_true", help="Push the final model to the Hub.")
    tracking.add_argument("--hub_model_id", help="The Hub repository (default: the output folder's name).")
    tracking.add_argument("--hub_token", help="Hub token (default: HF_TOKEN or the login cache).")
    tracking.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repository private.")


def check_positive(value: int | float | None, flag: str, allow_zero: bool = False) -> None:
    """Raise ``TrainingError`` when a numeric flag is not positive (or not >= 0)."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise TrainingError(f"{flag} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_common_arguments(args: argparse.Namespace) -> None:
    """Raise ``TrainingError`` naming the first inconsistent or out-of-range common flag."""
    if (args.dataset_name is None) == (args.train_data_dir is None):
        raise TrainingError("give exactly one of --dataset_name and --train_data_dir")
    for flag in ("resolution", "train_batch_size", "eval_batch_size", "num_epochs", "max_train_steps"):
        check_positive(getattr(args, flag), f"--{flag}")
    for flag in ("gradient_accumulation_steps", "checkpointing_steps", "checkpoints_total_limit", "logging_steps"):
        check_positive(getattr(args, flag), f"--{flag}")
    for flag in ("learning_rate", "max_train_samples", "max_eval_samples", "lr_decay_steps"):
        check_positive(getattr(args, flag), f"--{flag}")
    for flag in ("lr_warmup_steps", "max_grad_norm", "dataloader_num_workers", "max_skipped_nonfinite_steps"):
        check_positive(getattr(args, flag), f"--{flag}", allow_zero=True)
    if args.lr_decay_steps is not None and args.lr_scheduler != WARMUP_STABLE_DECAY:
        raise TrainingError(f"--lr_decay_steps needs --lr_scheduler {WARMUP_STABLE_DECAY}")
    if args.resolution is not None and args.resolution > MAX_RESOLUTION:
        raise TrainingError(f"--resolution must be at most {MAX_RESOLUTION}, got {args.resolution}")
    if not 0.0 < args.train_val_split < 1.0:
        raise TrainingError(f"--train_val_split must lie in (0, 1), got {args.train_val_split}")
    if args.streaming and args.max_train_steps is None:
        raise TrainingError("--streaming needs --max_train_steps (a stream has no length to count epochs by)")
    if args.train_data_dir is not None and not Path(args.train_data_dir).is_dir():
        raise TrainingError(f"--train_data_dir {args.train_data_dir!r} does not exist or is not a folder")
    if getattr(args, "torch_compile_mode", None) and not args.torch_compile:
        raise TrainingError(f"--torch_compile_mode {args.torch_compile_mode} needs --torch_compile")
    report_to = tracker_names(args.report_to)
    unknown = [name for name in report_to if name not in TRACKERS]
    if unknown:
        raise TrainingError(
            f"--report_to: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}, all, none"
        )


def tracker_names(report_to: str | None) -> list[str]:
    """``--report_to`` as a list of tracker names ("all" is kept as is, "none" gives an empty list)."""
    if report_to is None or report_to.strip().lower() in ("", "none"):
        return []
    if report_to.strip().lower() == "all":
        return ["all"]
    return [name.strip() for name in report_to.split(",") if name.strip()]


def load_model_config(value: str, presets: Mapping[str, Mapping[str, Any]], flag: str = "--model_config") -> dict:
    """The model config of ``value``: a preset name from ``presets``, or a JSON file (e.g. a saved ``config.json``)."""
    if value in presets:
        return dict(presets[value])
    path = Path(value)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise TrainingError(f"{flag}: {path} is not a readable JSON file ({first_line(error)})") from None
        if not isinstance(config, dict):
            raise TrainingError(f"{flag}: {path} must hold a JSON object of config values")
        return config
    raise TrainingError(f"{flag}: {value!r} is neither a preset ({', '.join(presets)}) nor a JSON config file")


def command_line(program: str, argv: Sequence[str], secrets: Sequence[str | None] = ()) -> str:
    """The command as the model card and the trackers show it, with the Hub token masked in every spelling
    (``--hub_token T``, ``--hub_token=T``, an abbreviation argparse accepts such as ``--hub_tok T``): the value after
    a ``--hub_t...`` flag and every occurrence of a string of ``secrets`` (the parsed token) become ``***``."""
    shown = []
    mask_next = False
    for value in argv:
        if mask_next:
            value, mask_next = "***", False
        elif value.startswith("--hub_t"):
            flag, equals, _ = value.partition("=")
            value, mask_next = (f"{flag}=***", False) if equals else (value, True)
        for secret in secrets:
            if secret:
                value = value.replace(secret, "***")
        shown.append(value)
    return " ".join([program, *shown])
