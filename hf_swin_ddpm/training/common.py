"""What both training scripts share: the common flags, data loading, checkpoints, trackers, results and model cards.

The flags carry the names of the diffusers / transformers example scripts (``--dataset_name``, ``--train_data_dir``,
``--output_dir``, ``--resolution``, ``--train_batch_size``, ``--max_train_steps``, ``--checkpointing_steps``,
``--resume_from_checkpoint``, ``--report_to``, ``--push_to_hub``, ...).

Checkpoints are ``output_dir/checkpoint-{global_step}`` folders: ``accelerator.save_state`` (model as safetensors,
optimizer, LR scheduler, every process's RNG states), the :class:`TrainingProgress` (the data position) and the EMA
(``training_state.json``, ``ema_weights.safetensors``), and a manifest of every file's size and SHA-256 that a resume
checks first. They are written under ``checkpoint-{global_step}.tmp`` and renamed once complete, so a run killed while
saving never leaves a folder that looks complete.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from ..data import EMBEDDED_DATASETS, load_image_dataset

CHECKPOINT_PREFIX = "checkpoint-"
INCOMPLETE_SUFFIX = ".tmp"
CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
ALL_RESULTS_FILE = "all_results.json"
MODEL_CARD_FILE = "README.md"
DEFAULT_EVAL_SPLITS = ("validation", "test")
DEBUG_ENV = "HF_SWIN_DDPM_DEBUG"  # set to 1 to get full tracebacks instead of one-line errors
# Largest --resolution accepted: one 4096 x 4096 RGB image is 200 MB as float32 before any activation.
MAX_RESOLUTION = 4096
TRACKERS = ("tensorboard", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive", "swanlab", "trackio")

AnyDataset = datasets.Dataset | datasets.IterableDataset


class TrainingError(Exception):
    """A problem with the user's input or files: reported as one line, exit status 2, no traceback."""


# --- arguments --------------------------------------------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags both scripts share (names of the diffusers / transformers example scripts).

    Script-specific defaults (learning rate, warm-up, model preset, ...) are set by each script with
    ``parser.set_defaults``.
    """
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        help="An embedded dataset (digits, shapes), a Hub dataset id, or a local dataset file/folder "
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

    model = parser.add_argument_group("model")
    model.add_argument("--model_config", help="A preset name or a JSON config file.")

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", required=True, help="Where the model, checkpoints and logs go.")
    training.add_argument("--seed", type=int, default=0, help="Seed of initialisation, data order and augmentation.")
    training.add_argument("--train_batch_size", type=int, help="Batch size per process.")
    training.add_argument("--eval_batch_size", type=int, default=16, help="Evaluation batch size per process.")
    training.add_argument("--num_epochs", "--num_train_epochs", dest="num_epochs", type=int, help="Training epochs.")
    training.add_argument("--max_train_steps", type=int, help="Optimizer steps; overrides --num_epochs.")
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--learning_rate", type=float, help="Peak learning rate.")
    training.add_argument("--lr_scheduler", help="diffusers.optimization.get_scheduler name.")
    training.add_argument("--lr_warmup_steps", type=int, help="Linear warm-up, in optimizer steps.")
    training.add_argument("--adam_beta1", type=float, default=0.9)
    training.add_argument("--adam_beta2", type=float, default=0.999)
    training.add_argument("--adam_epsilon", type=float, default=1e-8)
    training.add_argument("--max_grad_norm", type=float, help="Clip gradients to this global norm (0: no clipping).")
    training.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), help="Default: accelerate's config.")
    training.add_argument("--logging_steps", type=int, default=10, help="Log the loss every N optimizer steps.")
    training.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="Recompute activations in the backward pass: less memory, about 1.2x the time per step.",
    )

    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument("--checkpointing_steps", type=int, default=500, help="Save a checkpoint every N steps.")
    checkpoints.add_argument("--checkpoints_total_limit", type=int, help="Keep at most N checkpoints (oldest go).")
    checkpoints.add_argument("--resume_from_checkpoint", help="A checkpoint folder, or 'latest' in --output_dir.")

    tracking = parser.add_argument_group("tracking and the Hub")
    tracking.add_argument(
        "--report_to", default="tensorboard", help=f"Trackers, comma separated ({', '.join(TRACKERS)}), 'all', 'none'."
    )
    tracking.add_argument("--logging_dir", default="logs", help="Tracker logs, relative to --output_dir.")
    tracking.add_argument("--tracker_project_name", help="Project / run name given to the trackers.")
    tracking.add_argument("--push_to_hub", action="store_true", help="Push the final model to the Hub.")
    tracking.add_argument("--hub_model_id", help="The Hub repository (default: the output folder's name).")
    tracking.add_argument("--hub_token", help="Hub token (default: HF_TOKEN or the login cache).")
    tracking.add_argument("--hub_private_repo", action="store_true")


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
    for flag in ("learning_rate", "max_train_samples", "max_eval_samples"):
        check_positive(getattr(args, flag), f"--{flag}")
    for flag in ("lr_warmup_steps", "max_grad_norm", "dataloader_num_workers"):
        check_positive(getattr(args, flag), f"--{flag}", allow_zero=True)
    if args.resolution is not None and args.resolution > MAX_RESOLUTION:
        raise TrainingError(f"--resolution must be at most {MAX_RESOLUTION}, got {args.resolution}")
    if not 0.0 < args.train_val_split < 1.0:
        raise TrainingError(f"--train_val_split must lie in (0, 1), got {args.train_val_split}")
    if args.streaming and args.max_train_steps is None:
        raise TrainingError("--streaming needs --max_train_steps (a stream has no length to count epochs by)")
    if args.train_data_dir is not None and not Path(args.train_data_dir).is_dir():
        raise TrainingError(f"--train_data_dir {args.train_data_dir!r} does not exist or is not a folder")
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


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when empty)."""
    text = str(error).strip()
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = f"missing key {text}"
    return text.splitlines()[0] if text else type(error).__name__


# --- running with one-line errors -----------------------------------------------------------------------------------


USER_ERRORS: tuple[type[BaseException], ...] = (
    TrainingError,
    ValueError,
    OSError,
    datasets.exceptions.DatasetNotFoundError,
)


def run_with_clear_errors(program: str, train: Callable[[], Any]) -> int:
    """Run ``train()``; a user error becomes one line ``"{program}: error: ..."`` on stderr and exit status 2.

    Set ``HF_SWIN_DDPM_DEBUG=1`` for the full traceback.
    """
    try:
        train()
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"{program}: error: {first_line(error)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{program}: interrupted; resume with --resume_from_checkpoint latest", file=sys.stderr, flush=True)
        return 130
    return 0


# --- data -----------------------------------------------------------------------------------------------------------


def _load_split(args: argparse.Namespace, split: str, task: str) -> AnyDataset:
    """One split of the dataset the flags name (see :func:`hf_swin_ddpm.data.load_image_dataset`)."""
    return load_image_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        split=split,
        streaming=args.streaming,
        task=task,
        cache_dir=args.cache_dir,
        seed=args.seed,
        resolution=args.resolution,
    )


def _first_examples(dataset: AnyDataset, count: int | None) -> AnyDataset:
    """The first ``count`` examples (all when ``count`` is None)."""
    if count is None:
        return dataset
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(count)
    return dataset.select(range(min(count, len(dataset))))


@dataclasses.dataclass
class TrainingData:
    """The training examples and the held-out ones: ``eval_split`` names the split (``"test"``, or ``"train"`` when
    part of the train split was held out) and ``eval_source`` says in words where the held-out examples come from."""

    train: AnyDataset
    eval: AnyDataset | None
    eval_split: str | None
    eval_source: str


def load_train_and_eval_datasets(args: argparse.Namespace, task: str) -> TrainingData:
    """The training data and the held-out data.

    The held-out data is ``--eval_split`` when given (it must exist), otherwise the first of ``validation`` and
    ``test`` that exists, otherwise a seeded ``--train_val_split`` fraction of the train split (not for streams, which
    then have no held-out data).
    """
    train = _load_split(args, "train", task)
    candidates = (args.eval_split,) if args.eval_split else DEFAULT_EVAL_SPLITS
    held_out, eval_split, source = None, None, "none"
    for split in candidates:
        try:
            held_out, eval_split, source = _load_split(args, split, task), split, f"the {split!r} split"
            break
        except ValueError:
            if args.eval_split:
                raise
    if held_out is None and isinstance(train, datasets.Dataset):
        if len(train) < 2:
            raise TrainingError(f"the training data has {len(train)} example(s); at least 2 are needed")
        parts = train.train_test_split(test_size=args.train_val_split, seed=args.seed)
        train, held_out, eval_split = parts["train"], parts["test"], "train"
        source = f"{args.train_val_split:.0%} of the train split, held out (seed {args.seed})"
    train = _first_examples(train, args.max_train_samples)
    if held_out is not None:
        held_out = _first_examples(held_out, args.max_eval_samples)
    if isinstance(train, datasets.Dataset) and len(train) == 0:
        raise TrainingError("the training data is empty")
    return TrainingData(train, held_out, eval_split, source)


def check_first_examples(dataset: AnyDataset, count: int) -> None:
    """Run the first ``count`` examples of a transformed map-style dataset through its transform, so that bad data
    (masks of the wrong size, labels out of range, unreadable images) stops the run before it starts."""
    if isinstance(dataset, datasets.Dataset):
        for index in range(min(count, len(dataset))):
            dataset[index]


def dataset_label(args: argparse.Namespace) -> str:
    """How the model card and logs name the data: the dataset name or the folder."""
    if args.dataset_name is not None:
        return args.dataset_name + (f" ({args.dataset_config_name})" if args.dataset_config_name else "")
    return f"local folder {Path(args.train_data_dir).name}"


def hub_dataset_ids(args: argparse.Namespace) -> list[str]:
    """The ``datasets`` entry of the card metadata: the Hub dataset id (not an embedded dataset or a local path)."""
    if args.dataset_name is None or args.dataset_name in EMBEDDED_DATASETS or Path(args.dataset_name).exists():
        return []
    return [args.dataset_name]


def batches_leaving_global_rng(dataloader: Iterable) -> Iterator:
    """Iterate ``dataloader`` without moving the global torch RNG, which drives the training noise and dropout.

    A DataLoader without its own generator draws its base seed from the global RNG when it starts; accelerate's
    loaders that skip the batches of a stream on resume are such loaders. Fetching every batch inside
    ``torch.random.fork_rng`` keeps a resumed run's random draws the same as an uninterrupted run's.
    """
    iterator = iter(dataloader)
    while True:
        with torch.random.fork_rng(devices=[]):
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


def resumable_batches(
    accelerator, dataloader, transform, progress: TrainingProgress, max_train_steps: int, streaming: bool
) -> Iterator:
    """The training batches, epoch after epoch, from where ``progress`` stands until ``max_train_steps``.

    Each epoch re-seeds the data order and the augmentation (``set_epoch``); a resumed run first skips the batches
    ``progress`` says its epoch already consumed. ``progress.batches_in_epoch`` counts each batch as it is handed
    out and ``progress.epoch`` advances when an epoch is exhausted; the caller advances ``progress.global_step``.
    """
    while progress.global_step < max_train_steps:
        dataloader.set_epoch(progress.epoch)
        transform.set_epoch(progress.epoch)
        batches = dataloader
        if progress.batches_in_epoch:
            batches = accelerator.skip_first_batches(dataloader, progress.batches_in_epoch)
        batches_before = progress.batches_in_epoch
        for batch in batches_leaving_global_rng(batches):
            progress.batches_in_epoch += 1
            yield batch
            if progress.global_step >= max_train_steps:
                return
        if progress.batches_in_epoch == batches_before and streaming:
            raise TrainingError("the training stream yielded no batches")
        progress.epoch += 1
        progress.batches_in_epoch = 0


def seeded_data_generator(seed: int) -> torch.Generator:
    """The DataLoader's own generator: its base-seed draw then leaves the global torch RNG alone (exact resume)."""
    return torch.Generator().manual_seed(seed)


# --- schedule -------------------------------------------------------------------------------------------------------


def resolve_training_length(
    args: argparse.Namespace, batches_per_epoch: int | None, default_num_epochs: int
) -> tuple[int, int, int | None]:
    """``(max_train_steps, num_epochs, updates_per_epoch)`` from ``--max_train_steps`` / ``--num_epochs``.

    ``batches_per_epoch`` is per process (None for streams, which then need ``--max_train_steps``).
    """
    if batches_per_epoch is None:
        return args.max_train_steps, 1, None
    if batches_per_epoch == 0:
        raise TrainingError("the training data is smaller than one batch per process; lower --train_batch_size")
    updates_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    if args.max_train_steps is not None:
        return args.max_train_steps, math.ceil(args.max_train_steps / updates_per_epoch), updates_per_epoch
    num_epochs = args.num_epochs or default_num_epochs
    return num_epochs * updates_per_epoch, num_epochs, updates_per_epoch


@dataclasses.dataclass
class TrainingProgress:
    """Where training stands: optimizer steps taken, the epoch, and the batches of that epoch already consumed.

    Saved in every checkpoint (``training_state.json``), so a resumed run skips exactly the batches it had consumed
    (``accelerator.skip_first_batches``).
    """

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0

    def state_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, int(state[field.name]))


# --- checkpoints ----------------------------------------------------------------------------------------------------

TRAINING_STATE_FILE = "training_state.json"  # the TrainingProgress and the EMA's scalars
EMA_WEIGHTS_FILE = "ema_weights.safetensors"  # the EMA's shadow parameters
MANIFEST_FILE = "checkpoint_manifest.json"  # size and SHA-256 of every other file, written last
# Test hook, "SECONDS" or "SECONDS@STEP": sleep inside ``save_checkpoint`` (of every checkpoint, or only of the one at
# global step STEP) after accelerate has written its part of the temporary folder and before the training state and
# the manifest, so that tests/test_kill_resume.py can kill a run in the middle of a save. Unset in normal use.
TEST_PAUSE_ENV = "HF_SWIN_DDPM_TEST_PAUSE_IN_CHECKPOINT"
_EMA_SCALARS = ("decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup", "inv_gamma", "power")


def checkpoint_step(path: Path) -> int | None:
    """The global step of a complete checkpoint folder's name, None for anything else (incl. ``.tmp`` folders)."""
    match = CHECKPOINT_PATTERN.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints in ``output_dir``, oldest (lowest step) first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(checkpoint_step(path), path) for path in root.iterdir()]
    return [path for step, path in sorted((s, p) for s, p in found if s is not None)]


def resolve_resume_checkpoint(value: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume_from_checkpoint`` names: a folder, or ``latest`` (None when there is none yet)."""
    if value is None:
        return None
    if value == "latest":
        checkpoints = complete_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(value)
    if not path.is_dir() and (Path(output_dir) / value).is_dir():
        path = Path(output_dir) / value
    if not path.is_dir():
        raise TrainingError(f"--resume_from_checkpoint: {value!r} is not a checkpoint folder (or 'latest')")
    if path.name.endswith(INCOMPLETE_SUFFIX):
        raise TrainingError(f"--resume_from_checkpoint: {path} is an incomplete checkpoint (its save was interrupted)")
    if not any(path.glob("model*.safetensors")):
        raise TrainingError(
            f"--resume_from_checkpoint: {path} has no model.safetensors; not a checkpoint of this training script"
        )
    return path


def save_checkpoint(
    accelerator,
    output_dir: str | Path,
    global_step: int,
    total_limit: int | None,
    progress: TrainingProgress,
    ema: Any = None,
) -> Path:
    """Write ``checkpoint-{global_step}`` completely or not at all; then remove the oldest beyond ``total_limit``.

    Everything goes into ``checkpoint-{global_step}.tmp``: ``accelerator.save_state`` (model as safetensors,
    optimizer, LR scheduler, every process's RNG states), the training state (``training_state.json``, and
    ``ema_weights.safetensors`` with EMA) and, last, ``checkpoint_manifest.json`` with the size and SHA-256 of every
    file. Only then is the folder renamed, so a run killed at any moment leaves either a complete checkpoint or a
    ``.tmp`` folder that ``latest`` ignores and the next save replaces. Call on every process.
    """
    root = Path(output_dir)
    final = root / f"{CHECKPOINT_PREFIX}{global_step}"
    partial = root / f"{CHECKPOINT_PREFIX}{global_step}{INCOMPLETE_SUFFIX}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted save
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _pause_for_tests(global_step)
        write_training_state(partial, progress, ema)
        write_manifest(partial)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        if total_limit is not None:
            for old in complete_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _pause_for_tests(global_step: int) -> None:
    """Sleep as ``$HF_SWIN_DDPM_TEST_PAUSE_IN_CHECKPOINT`` says (unset: no pause); see ``TEST_PAUSE_ENV``."""
    value = os.environ.get(TEST_PAUSE_ENV)
    if not value:
        return
    seconds, _, step = value.partition("@")
    if not step or int(step) == global_step:
        import time

        time.sleep(float(seconds))


def write_training_state(folder: Path, progress: TrainingProgress, ema: Any = None) -> None:
    """``training_state.json`` (progress, EMA scalars) and ``ema_weights.safetensors``: no pickles, so resuming
    never unpickles objects (accelerate's ``register_for_checkpointing`` would load them with ``weights_only=False``)."""
    from safetensors.torch import save_file

    state: dict[str, Any] = {"progress": progress.state_dict()}
    if ema is not None:
        ema_state = ema.state_dict()
        state["ema"] = {name: ema_state[name] for name in _EMA_SCALARS}
        shadow = {str(index): tensor.detach().cpu().contiguous() for index, tensor in enumerate(ema.shadow_params)}
        save_file(shadow, str(folder / EMA_WEIGHTS_FILE))
    (folder / TRAINING_STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def write_manifest(folder: Path) -> None:
    """``checkpoint_manifest.json``: the size and SHA-256 of every file in the checkpoint folder."""
    files = {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    (folder / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=2, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: Path) -> None:
    """Raise ``TrainingError`` naming the file when the checkpoint lacks its manifest or a file it lists, or a file's
    size or SHA-256 differs from the manifest's (truncated, altered or replaced)."""
    manifest_file = path / MANIFEST_FILE
    try:
        files = json.loads(manifest_file.read_text())["files"]
    except FileNotFoundError:
        raise TrainingError(
            f"--resume_from_checkpoint: {path} has no {MANIFEST_FILE}; not a complete checkpoint of this script"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TrainingError(f"--resume_from_checkpoint: {manifest_file} is damaged ({first_line(error)})") from None
    for name, expected in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise TrainingError(f"--resume_from_checkpoint: {file} is missing from the checkpoint")
        if file.stat().st_size != expected["size"]:
            raise TrainingError(
                f"--resume_from_checkpoint: {file} is truncated or altered "
                f"({file.stat().st_size} bytes, the checkpoint wrote {expected['size']})"
            )
        if _sha256(file) != expected["sha256"]:
            raise TrainingError(f"--resume_from_checkpoint: {file} is altered (its SHA-256 differs from the manifest)")


def load_checkpoint(accelerator, path: Path, progress: TrainingProgress, ema: Any = None) -> None:
    """Verify the checkpoint against its manifest, then ``accelerator.load_state`` (model, optimizer, LR scheduler,
    RNG states; its pickles are read with ``weights_only=True``) and the training state (progress, EMA)."""
    verify_checkpoint(path)
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # what torch, safetensors and accelerate raise on a bad file is often anonymous
        raise TrainingError(f"--resume_from_checkpoint: {path} could not be loaded ({first_line(error)})") from None
    state = json.loads((path / TRAINING_STATE_FILE).read_text())
    progress.load_state_dict(state["progress"])
    if ema is not None:
        _load_ema(path, state, ema)


def _load_ema(path: Path, state: Mapping[str, Any], ema: Any) -> None:
    from safetensors.torch import load_file

    if "ema" not in state or not (path / EMA_WEIGHTS_FILE).is_file():
        raise TrainingError(
            f"--resume_from_checkpoint: {path} was saved without EMA weights; resume with --no-use_ema"
        )
    shadow = load_file(str(path / EMA_WEIGHTS_FILE))
    if len(shadow) != len(ema.shadow_params):
        raise TrainingError(
            f"--resume_from_checkpoint: {path / EMA_WEIGHTS_FILE} holds {len(shadow)} EMA tensors, the model has "
            f"{len(ema.shadow_params)}; the checkpoint is of another model"
        )
    devices = [parameter.device for parameter in ema.shadow_params]
    shadow_params = [shadow[str(index)].to(devices[index]) for index in range(len(shadow))]
    ema.load_state_dict({**state["ema"], "shadow_params": shadow_params})


# --- trackers and images ----------------------------------------------------------------------------------------------


def tracker_config(args: argparse.Namespace) -> dict[str, int | float | str | bool]:
    """The flags as tracker hyperparameters (TensorBoard accepts only scalars and strings)."""
    config = {}
    for key, value in vars(args).items():
        if key == "hub_token":
            continue
        config[key] = value if isinstance(value, int | float | str | bool) else str(value)
    return config


def image_grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Paste equally sized images into a grid, ``columns`` wide (default: about square)."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new(images[0].mode, (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image, ((index % columns) * width, (index // columns) * height))
    return grid


def log_image(accelerator, tag: str, image: Image.Image, step: int) -> None:
    """Send an image to the trackers that take images (TensorBoard, Weights & Biases). Main process only."""
    if not accelerator.is_main_process:
        return
    array = np.asarray(image.convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(tag, array, step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({tag: wandb.Image(image)}, step=step)


def upscale_for_display(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Nearest-neighbour upscale of a small image so that its short side reaches about ``min_side`` pixels."""
    factor = max(1, min_side // max(1, min(image.size)))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


# --- results, model card, Hub ---------------------------------------------------------------------------------------


def write_all_results(output_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``all_results.json`` (as the transformers examples do)."""
    path = Path(output_dir) / ALL_RESULTS_FILE
    path.write_text(json.dumps(dict(results), indent=2, sort_keys=True) + "\n")
    return path


CARD_KINDS: dict[str, dict[str, Any]] = {
    "ddpm": {
        "library_name": "diffusers",
        "pipeline_tag": "unconditional-image-generation",
        "tags": ["hf-swin-ddpm", "ddpm", "diffusion", "unconditional-image-generation"],
        "metric": ("bits_per_dim", "NLL (bits/dim)", "test"),
    },
    "swin_fpn": {
        "library_name": "transformers",
        "pipeline_tag": "image-segmentation",
        "tags": ["hf-swin-ddpm", "swin", "fpn", "semantic-segmentation", "vision"],
        "metric": ("mean_iou", "Mean IoU", "validation"),
    },
}

FALLBACK_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ description }}
{% if image_file %}
![{{ image_caption }}]({{ image_file }})
{% endif %}
## Training

{{ training_data }}

| Hyperparameter | Value |
|---|---|
{% for name, value in hyperparameters.items() -%}
| {{ name }} | {{ value }} |
{% endfor %}
## Results

{% if metric_value is not none %}{{ metric_name }}: {{ metric_value }} ({{ eval_dataset }}, {{ eval_split }}).
{% else %}No evaluation results were recorded.{% endif %}
"""

FALLBACK_DESCRIPTIONS = {
    "ddpm": "A DDPM (Ho et al. 2020, arXiv:2006.11239) trained with hf-swin-ddpm; load it with "
    "`hf_swin_ddpm.DDPMPaperPipeline.from_pretrained`.",
    "swin_fpn": "A Swin Transformer + Semantic FPN segmentation model trained with hf-swin-ddpm; load it with "
    "`transformers.AutoModelForSemanticSegmentation.from_pretrained` after `import hf_swin_ddpm`.",
}


def render_model_card(kind: str, card_fields: Mapping[str, Any]):
    """The model card of a ``kind`` (``"ddpm"`` or ``"swin_fpn"``) model as a ``huggingface_hub.ModelCard``.

    Uses ``hf_swin_ddpm.hub.render_model_card`` (the templates of ``model_cards/``) when that module is available,
    else a small built-in template with the same YAML metadata. ``card_fields`` are that function's fields
    (``model_name``, ``datasets``, ``training_data``, ``hyperparameters``, ``bits_per_dim`` / ``mean_iou``,
    ``eval_dataset``, ``eval_split``, ``num_parameters``, ``architecture``, ``image_file``, ...).
    """
    try:
        from ..hub import render_model_card as render_with_templates
    except ImportError:
        render_with_templates = None
    if render_with_templates is not None:
        return render_with_templates(kind, **card_fields)
    return _render_fallback_card(kind, card_fields)


def _render_fallback_card(kind: str, fields: Mapping[str, Any]):
    """The built-in card: huggingface_hub's ``ModelCardData`` (with ``model-index`` results) and a short body."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    info = CARD_KINDS[kind]
    metric_field, metric_name, default_split = info["metric"]
    model_name = fields.get("model_name") or "model"
    datasets_ids = list(fields.get("datasets") or [])
    metric_value = fields.get(metric_field)
    eval_dataset = fields.get("eval_dataset") or (datasets_ids[0] if datasets_ids else None)
    eval_split = fields.get("eval_split") or default_split
    eval_results = None
    if metric_value is not None and eval_dataset:
        eval_results = [
            EvalResult(
                task_type=info["pipeline_tag"],
                dataset_type=eval_dataset,
                dataset_name=eval_dataset,
                dataset_split=eval_split,
                metric_type=metric_field,
                metric_name=metric_name,
                metric_value=round(float(metric_value), 6),
            )
        ]
    card_data = ModelCardData(
        library_name=info["library_name"],
        pipeline_tag=info["pipeline_tag"],
        tags=[*info["tags"], *(fields.get("tags") or [])],
        datasets=datasets_ids or None,
        license=fields.get("license") or "apache-2.0",
        base_model=fields.get("base_model"),
        model_name=model_name,
        eval_results=eval_results,
    )
    return ModelCard.from_template(
        card_data,
        template_str=FALLBACK_CARD_TEMPLATE,
        model_name=model_name,
        description=FALLBACK_DESCRIPTIONS[kind],
        training_data=fields.get("training_data") or "",
        hyperparameters={k: format_value(v) for k, v in (fields.get("hyperparameters") or {}).items()},
        metric_name=metric_name,
        metric_value=None if metric_value is None else format_value(float(metric_value)),
        eval_dataset=eval_dataset,
        eval_split=eval_split,
        image_file=fields.get("image_file"),
        image_caption=fields.get("image_caption") or "Example",
    )


def write_model_card(output_dir: str | Path, kind: str, card_fields: Mapping[str, Any]) -> Path:
    """Write ``output_dir/README.md``, the model card (see :func:`render_model_card`)."""
    path = Path(output_dir) / MODEL_CARD_FILE
    render_model_card(kind, card_fields).save(path)
    return path


def format_value(value: Any) -> str:
    """A hyperparameter or metric as the card shows it."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# repo_id: push_to_hub takes it as its own argument and puts the namespaced id it created into the card
PUSH_SKIPPED_CARD_FIELDS = ("model_name", "image_file", "image_caption", "repo_id")


def push_to_hub(obj: Any, args: argparse.Namespace, card_fields: Mapping[str, Any], **save_fields: Any) -> str:
    """Push ``obj`` with ``hf_swin_ddpm.hub.push_to_hub`` to ``--hub_model_id`` (default: the output folder's name),
    with the run's card fields and ``save_fields`` (``image_processor``, ``example_image``); returns the commit URL."""
    try:
        from ..hub import push_to_hub as hub_push
    except ImportError as error:
        raise TrainingError(f"--push_to_hub needs hf_swin_ddpm.hub, which is not available ({error})") from None
    repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
    fields = {k: v for k, v in card_fields.items() if k not in PUSH_SKIPPED_CARD_FIELDS}
    return hub_push(
        obj,
        repo_id,
        private=args.hub_private_repo,
        token=args.hub_token,
        commit_message=f"End of training ({args.command_line.split()[0]})",
        **fields,
        **save_fields,
    )


@contextlib.contextmanager
def main_process_first_when(accelerator, condition: bool = True):
    """``accelerator.main_process_first()`` when ``condition``, else nothing (e.g. dataset downloads)."""
    if condition:
        with accelerator.main_process_first():
            yield
    else:
        yield


def make_accelerator(args: argparse.Namespace):
    """The ``Accelerator`` of a run: gradient accumulation, mixed precision, trackers logging under
    ``output_dir/logging_dir``, and accelerate's seedable sampler (every process draws the same, seeded order)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    trackers = tracker_names(args.report_to)
    project_config = ProjectConfiguration(
        project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / args.logging_dir)
    )
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers or None,
        project_config=project_config,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )


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


class RunningLoss:
    """The training loss since the last log, kept as a tensor so that the steps between logs never wait for it."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device)
        self.count = 0
        self.last = float("nan")

    def add(self, loss: torch.Tensor) -> None:
        self.total, self.count = self.total + loss, self.count + 1

    def log(self, accelerator, progress_bar, step: int, lr: float, epoch: int, **extra: float) -> float:
        """The mean since the last log, averaged over all processes (a collective: call it on every process), logged
        with the learning rate, the epoch and ``extra`` to the trackers and the progress bar; the window restarts."""
        mean = self.total / max(self.count, 1)
        self.last = accelerator.reduce(mean.reshape(1), reduction="mean").item()
        self.total, self.count = torch.zeros_like(self.total), 0
        accelerator.log({"loss": self.last, "lr": lr, "epoch": epoch, **extra}, step=step)
        progress_bar.set_postfix(loss=f"{self.last:.4f}", lr=f"{lr:.2e}")
        return self.last


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing the library's way: transformers' `activation_checkpointing_enable` (the v5 name of
    `gradient_checkpointing_enable`) or diffusers' `enable_gradient_checkpointing`."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable()
    else:
        model.enable_gradient_checkpointing()
