"""Killed training loses nothing: SIGKILL a real DDPM training run (a subprocess) in the middle of writing a checkpoint
and between checkpoints, resume each time with `--resume_from_checkpoint latest`, and end with exactly the weights of
a run that was never interrupted.

The kill in the middle of a save is made deterministic by running the CLI through tests/pausing_cli.py, which wraps
`checkpoints.write_training_state` from the test side to hold the save of one checkpoint after accelerate has written
its files into `checkpoint-STEP.tmp` and before the training state and the manifest. The kill between checkpoints
lands while the run draws its sample grid after step 5, between checkpoint-4 and checkpoint-6.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_support import CONSOLE_SCRIPT, flags

from hf_swin_ddpm.training import checkpoints

MAX_TRAIN_STEPS = 8
CHECKPOINTING_STEPS = 2
SAMPLE_GRID_STEP = 5  # the sample grid drawn after this step keeps the run busy between checkpoint-4 and -6
RUN_FLAGS = flags(
    dataset_name="digits",
    model_config="tiny",
    resolution=8,
    train_batch_size=4,
    max_train_samples=12,
    eval_bpd_timesteps=0,
    ddpm_num_steps=400,
    ddpm_num_inference_steps=400,
    num_sample_images=4,
    save_images_steps=SAMPLE_GRID_STEP,
    lr_warmup_steps=1,
    logging_steps=1,
    max_train_steps=MAX_TRAIN_STEPS,
    checkpointing_steps=CHECKPOINTING_STEPS,
    report_to="none",
)
WAIT_SECONDS = 120
PAUSING_CLI = Path(__file__).with_name("pausing_cli.py")


def start_run(output_dir: Path, *extra: str, pause: tuple[float, int] | None = None) -> subprocess.Popen:
    """`hf-swin-ddpm train-ddpm` in a new process, one thread, offline; `pause=(SECONDS, STEP)` holds the save of
    checkpoint-STEP open for SECONDS (tests/pausing_cli.py)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    program = [str(CONSOLE_SCRIPT)] if pause is None else [sys.executable, str(PAUSING_CLI), *map(str, pause)]
    command = [*program, "train-ddpm", *RUN_FLAGS, "--output_dir", str(output_dir), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    """Poll `condition` every 10 ms; fail if the process exits first or WAIT_SECONDS pass."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run exited ({process.returncode}) before {what}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def sigkill(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return output


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=WAIT_SECONDS * 2)
    assert process.returncode == 0, output
    return output


def checkpoint_names(output_dir: Path) -> set[str]:
    return {path.name for path in output_dir.glob(f"{checkpoints.CHECKPOINT_PREFIX}*")}


def final_tensors(output_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor the run leaves: the saved pipeline's UNet (EMA weights) and the last checkpoint's training
    weights and EMA weights."""
    last = output_dir / f"{checkpoints.CHECKPOINT_PREFIX}{MAX_TRAIN_STEPS}"
    files = {
        "pipeline": output_dir / "unet" / "diffusion_pytorch_model.safetensors",
        "checkpoint_model": last / "model.safetensors",
        "checkpoint_ema": last / checkpoints.EMA_WEIGHTS_FILE,
    }
    return {f"{kind}/{name}": tensor for kind, path in files.items() for name, tensor in load_file(path).items()}


def test_sigkill_mid_save_and_between_checkpoints_then_resume_gives_the_uninterrupted_weights(tmp_path):
    reference = start_run(tmp_path / "reference")
    interrupted_dir = tmp_path / "interrupted"

    # 1. Killed while writing checkpoint-4: checkpoint-2 is the last complete one.
    run = start_run(interrupted_dir, pause=(600, 4))
    partial = interrupted_dir / f"{checkpoints.CHECKPOINT_PREFIX}4{checkpoints.INCOMPLETE_SUFFIX}"
    wait_for(lambda: (partial / "random_states_0.pkl").is_file(), run, "the save of checkpoint-4 to pause")
    sigkill(run)
    assert checkpoint_names(interrupted_dir) == {"checkpoint-2", "checkpoint-4.tmp"}
    assert not (partial / checkpoints.MANIFEST_FILE).exists()  # a half-written checkpoint, which `latest` must skip

    # 2. Resumed from checkpoint-2, killed between checkpoint-4 and checkpoint-6 (after step 5, drawing samples).
    run = start_run(interrupted_dir, "--resume_from_checkpoint", "latest")
    complete = interrupted_dir / f"{checkpoints.CHECKPOINT_PREFIX}4"
    wait_for(complete.is_dir, run, "checkpoint-4 to be complete")
    time.sleep(0.3)
    output = sigkill(run)
    assert f"Resuming from {interrupted_dir / 'checkpoint-2'}" in output
    assert checkpoint_names(interrupted_dir) == {"checkpoint-2", "checkpoint-4"}
    checkpoints.verify_checkpoint(complete)

    # 3. Resumed from checkpoint-4 to the end.
    output = finish(start_run(interrupted_dir, "--resume_from_checkpoint", "latest"))
    assert f"Resuming from {complete}" in output
    finish(reference)

    expected, resumed = final_tensors(tmp_path / "reference"), final_tensors(interrupted_dir)
    assert expected.keys() == resumed.keys() and len(expected) > 0
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    results = json.loads((interrupted_dir / "all_results.json").read_text())
    assert results["global_step"] == MAX_TRAIN_STEPS
