"""Checkpoints: how one is written (atomically, with a manifest), verified and resumed.

Checkpoints are ``output_dir/checkpoint-{global_step}`` folders: ``accelerator.save_state`` (model as safetensors,
optimizer, LR scheduler, every process's RNG states), the :class:`TrainingProgress` (the data position) and
the EMA (``training_state.json``, ``ema_weights.safetensors``), and a manifest of every file's size and SHA-256 that a
resume checks first. They are written under ``checkpoint-{global_step}.tmp`` and renamed once complete, so a run
killed while saving never leaves a folder that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from .errors import TrainingError, first_line

CHECKPOINT_PREFIX = "checkpoint-"
INCOMPLETE_SUFFIX = ".tmp"
CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


@dataclasses.dataclass
class TrainingProgress:
    """Where training stands: optimizer steps taken, the epoch, the batches of that epoch already consumed, and the
    last logged training loss.

    Saved in every checkpoint (``training_state.json``), so a resumed run skips exactly the batches it had consumed
    (``accelerator.skip_first_batches``), and one resumed at its last step still reports the run's loss.
    """

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    skipped_nonfinite_steps: int = 0  # updates skipped under --max_skipped_nonfinite_steps
    train_loss: float | None = None  # the mean loss of the last logging window, None before the first log

    def state_dict(self) -> dict[str, int | float | None]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, int | float | None]) -> None:
        for field in dataclasses.fields(self):
            value = state.get(field.name, field.default)
            setattr(self, field.name, int(value) if isinstance(field.default, int) else value)  # counts are ints


LATEST = ("latest", "auto")  # --resume_from_checkpoint values: the newest complete checkpoint, if any
TRAINING_STATE_FILE = "training_state.json"  # the TrainingProgress and the EMA's scalars
EMA_WEIGHTS_FILE = "ema_weights.safetensors"  # the EMA's shadow parameters
MANIFEST_FILE = "checkpoint_manifest.json"  # size and SHA-256 of every other file, written last
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
    if value in LATEST:
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
    check_finite_weights(accelerator, global_step, root)
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted save
        partial.mkdir(parents=True)  # before any process writes its random states into it
    accelerator.wait_for_everyone()
    failure = _attempt(lambda: accelerator.save_state(str(partial)))
    _stop_if_any_write_failed(accelerator, failure, partial, final)
    if accelerator.is_main_process:
        failure = _attempt(lambda: _write_main_process_part(partial, progress, ema))
    _stop_if_any_write_failed(accelerator, failure, partial, final)
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        if total_limit is not None:
            for old in complete_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _attempt(write: Callable[[], Any]) -> BaseException | None:
    """Run ``write``; the error it raised, or None."""
    try:
        write()
    except Exception as error:
        return error
    return None


def _write_main_process_part(partial: Path, progress: TrainingProgress, ema: Any) -> None:
    """What only the main process writes, after accelerate's part: the training state, then the manifest."""
    write_training_state(partial, progress, ema)
    write_manifest(partial)


@dataclasses.dataclass(frozen=True)
class WriteFailureReport:
    """What one process tells the others about its part of a checkpoint (None in place of a report: it succeeded)."""

    process_index: int
    is_write_failure: bool
    reason: str
    free_mib: float


def _stop_if_any_write_failed(accelerator, failure: BaseException | None, partial: Path, final: Path) -> None:
    """Stop every process together when any of them failed to write its part of the checkpoint: one collective
    (every process calls this), so that no process is left waiting for another in the next one.

    A refused write (full disk, quota, read-only) on any process: the main process removes the unfinished folder and
    raises the one-line error naming the process, the others raise it silently (and remove their own unfinished
    folder, where the disk is not shared). Any other error is re-raised by its process; the others stop silently.
    """
    root = final.parent
    report = None
    if failure is not None:
        write_failed = is_write_failure(failure, root)
        reason = write_failure_reason(failure, root) if write_failed else first_line(failure)
        free = free_mib(root) if root.exists() else 0.0
        report = WriteFailureReport(accelerator.process_index, write_failed, reason, free)
    reports = [report] if accelerator.num_processes == 1 else gather_object([report])
    failed = [found for found in reports if found is not None]
    if not failed:
        return
    first = failed[0]
    error = None
    if accelerator.is_main_process and first.is_write_failure:
        writer = (
            "" if accelerator.num_processes == 1 else f"process {first.process_index} of {accelerator.num_processes}: "
        )
        error = _checkpoint_write_failed(writer + first.reason, first.free_mib, partial, final)
    accelerator.wait_for_everyone()  # the main process has cleaned up (on a shared disk, for everyone)
    if not accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    if failure is not None and not (report.is_write_failure or first.is_write_failure):
        raise failure
    if error is not None:
        raise error from None
    raise TrainingError(f"process {first.process_index} could not write its part of {final}", show=False)


# What the libraries raise when a write fails: OSError (ENOSPC, EDQUOT, EROFS, EACCES) from Python and numpy, a
# RuntimeError from torch.save ("file write failed", "basic_ios::clear: iostream error"), a SafetensorError naming
# the OS error from safetensors.
WRITE_FAILURE_MARKERS = (
    "no space left",
    "os error 28",
    "file write failed",
    "iostream error",
    "disk quota",
    "read-only file system",
)
NEARLY_FULL_BYTES = 1 << 20  # with less free space than this, any error while writing counts as the full disk's


def is_write_failure(error: BaseException, folder: Path | None = None) -> bool:
    """Whether ``error`` is a refused or failed write (full disk, quota, read-only or forbidden folder)."""
    if isinstance(error, OSError):
        return True
    text = str(error).lower()
    if any(marker in text for marker in WRITE_FAILURE_MARKERS):
        return True
    return folder is not None and folder.exists() and shutil.disk_usage(folder).free < NEARLY_FULL_BYTES


def write_failure_reason(error: BaseException, folder: Path) -> str:
    """The failure in the OS's words: the libraries word a full disk in many ways."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).lower()
    if (
        any(marker in text for marker in WRITE_FAILURE_MARKERS[:4])
        or shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    ):
        return "No space left on device"
    return first_line(error)


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def free_mib(path: Path) -> float:
    return shutil.disk_usage(path).free / 2**20


def latest_checkpoint_size(output_dir: str | Path) -> int:
    """Bytes of the newest complete checkpoint (0 without one): what the next one needs, about."""
    checkpoints = complete_checkpoints(output_dir)
    return size_on_disk(checkpoints[-1]) if checkpoints else 0


def _checkpoint_write_failed(reason: str, free: float, partial: Path, final: Path) -> TrainingError:
    """Remove the unfinished checkpoint and say what failed, the free space where it failed, how much space a
    checkpoint takes and what is kept."""
    written = size_on_disk(partial) if partial.exists() else 0
    shutil.rmtree(partial, ignore_errors=True)
    needed = max(written, latest_checkpoint_size(final.parent))
    kept = complete_checkpoints(final.parent)
    state = f"{kept[-1].name} is complete and resumable" if kept else "no earlier checkpoint exists"
    return TrainingError(
        f"could not write the checkpoint {final}: {reason} ({free:.1f} MiB "
        f"free there; a checkpoint of this run takes about {needed / 2**20:.1f} MiB). The unfinished "
        f"{partial.name} was removed and {state}: free some space (or lower --checkpoints_total_limit), then run "
        "the same command with --resume_from_checkpoint auto"
    )


def check_finite_weights(accelerator, global_step: int, output_dir: Path) -> None:
    """Refuse to checkpoint NaN or infinite weights (an update that overflowed): ``TrainingError`` naming the step,
    with the last checkpoint left as it was. The weights are the same on every process, so all of them agree."""
    named = [(name, parameter) for model in accelerator._models for name, parameter in model.named_parameters()]
    finite = torch.stack([torch.isfinite(parameter.detach()).all() for _, parameter in named])
    if bool(finite.all()):  # one device synchronisation for all the weights
        return
    name = named[int((~finite).nonzero()[0])][0]
    raise TrainingError(
        f"the weights are not finite after optimizer step {global_step} ({name}); nothing was saved and "
        f"{last_checkpoint_unchanged(output_dir)}. Lower --learning_rate (or clip with --max_grad_norm) and resume "
        "from that checkpoint"
    )


def last_checkpoint_unchanged(output_dir: str | Path) -> str:
    """What a run stopped before writing anything leaves, in words: its newest complete checkpoint, if any."""
    saved = complete_checkpoints(output_dir)
    return f"the last checkpoint, {saved[-1].name}, is unchanged" if saved else "no checkpoint was written"


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


def resume_if_requested(
    accelerator, value: str | None, output_dir: str | Path, progress: TrainingProgress, ema: Any = None
) -> Path | None:
    """Resume from the checkpoint ``--resume_from_checkpoint`` names (see :func:`resolve_resume_checkpoint` and
    :func:`load_checkpoint`); with ``latest`` and no checkpoint yet, say so and start fresh. Returns the checkpoint."""
    resume_from = resolve_resume_checkpoint(value, output_dir)
    if resume_from is not None:
        accelerator.print(f"Resuming from {resume_from}")
        load_checkpoint(accelerator, resume_from, progress, ema)
    elif value in LATEST:
        accelerator.print(f"No checkpoint in {output_dir} yet: starting a new run")
    return resume_from
