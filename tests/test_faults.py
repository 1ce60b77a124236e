"""Faults during training lose nothing: a learning rate that diverges and a hostile example that makes the loss NaN
(stopped before any weight is updated with it, or skipped deterministically), a full disk (a real tmpfs) while writing
a checkpoint and while writing the final model, and a Hub outage at the end (retried, else the later push command).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import FakeHub
from PIL import Image
from safetensors.torch import load, load_file
from training_support import (
    CONSOLE_SCRIPT,
    assert_one_line_error,
    flags,
    run_cli,
    run_cli_concurrently,
    same_weights,
    small_disk,
    tree_digest,
)

from hf_swin_ddpm.training import train_segmentation
from hf_swin_ddpm.training.checkpoints import complete_checkpoints, verify_checkpoint

DDPM = flags(
    dataset_name="digits",
    model_config="tiny",
    resolution=8,
    train_batch_size=4,
    max_train_samples=12,
    eval_bpd_timesteps=0,
    ddpm_num_inference_steps=2,
    num_sample_images=2,
    logging_steps=1,
    report_to="none",
)


def all_tensors_finite(folder: Path) -> bool:
    files = list(folder.rglob("*.safetensors"))
    assert files
    return all(torch.isfinite(tensor).all() for path in files for tensor in load_file(path).values())


def test_a_diverging_learning_rate_stops_before_nan_weights_are_saved(tmp_path):
    output_dir = tmp_path / "run"
    result = run_cli(
        "train-ddpm",
        *DDPM,
        *flags(output_dir=output_dir, learning_rate=1e36, lr_warmup_steps=0, max_train_steps=6, checkpointing_steps=1),
        cwd=tmp_path,
    )
    assert_one_line_error(result, "non-finite", "optimizer step", "is unchanged", "--max_skipped_nonfinite_steps")
    saved = complete_checkpoints(output_dir)
    assert saved, result.stderr  # at least the first step's checkpoint, written before the divergence
    for checkpoint in saved:
        verify_checkpoint(checkpoint)
        assert all_tensors_finite(checkpoint)
    last = int(saved[-1].name.split("-")[1])
    assert f"optimizer step {last + 1} " in result.stderr and f"checkpoint-{last}, is unchanged" in result.stderr
    assert not (output_dir / "unet").exists()  # no final model either


def hostile_segmentation_folder(root: Path) -> Path:
    """The ADE20K layout with four training pairs, one of whose masks is all ignore index (255): its cross-entropy is
    0/0 = NaN; and one validation pair."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("validation", 1)):
        for folder in ("images", "annotations"):
            (root / folder / split).mkdir(parents=True)
        for index in range(count):
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{index}.png")
            hostile = split == "train" and index == 2
            labels = np.full((32, 32), 255, np.uint8) if hostile else rng.integers(0, 3, (32, 32), dtype=np.uint8)
            Image.fromarray(labels).save(root / "annotations" / split / f"{index}.png")
    return root


SEGMENTATION = flags(
    model_config="tiny",
    resolution=32,
    num_labels=3,
    train_batch_size=1,
    max_train_steps=6,
    logging_steps=1,
    report_to="none",
    lr_warmup_steps=1,
    seed=3,
)


def test_a_nan_batch_stops_the_run_or_is_skipped_deterministically(tmp_path):
    data = hostile_segmentation_folder(tmp_path / "hostile")
    common = [*SEGMENTATION, "--train_data_dir", str(data), "--scale_range", "1", "1"]
    stopped, skipped = run_cli_concurrently(
        [
            ["train-seg", *common, "--output_dir", str(tmp_path / "stopped")],
            ["train-seg", *common, "--output_dir", str(tmp_path / "skipped"), "--max_skipped_nonfinite_steps", "2"],
        ],
        cwd=tmp_path,
    )
    assert_one_line_error(stopped, "non-finite loss nan at optimizer step", "(epoch 0, batch", "no weight was updated")
    assert skipped.returncode == 0, skipped.stderr
    results = json.loads((tmp_path / "skipped" / "all_results.json").read_text())
    assert results["global_step"] == 6 and math.isfinite(results["train_loss"])
    # the hostile example is one batch of every 4-batch epoch: seen in epoch 0, and in epoch 1 unless it comes last
    assert results["skipped_nonfinite_steps"] == skipped.stderr.count("update skipped") >= 1
    assert all_tensors_finite(tmp_path / "skipped")

    # the skips are part of the data position: a resumed run skips the same batches and ends with the same weights
    argv = [*common, "--max_skipped_nonfinite_steps", "2", "--checkpointing_steps", "2"]
    uninterrupted = train_segmentation.train(
        train_segmentation.parse_args([*argv, "--output_dir", str(tmp_path / "a")])
    )
    state = json.loads((tmp_path / "a" / "checkpoint-4" / "training_state.json").read_text())
    assert 1 <= state["progress"]["skipped_nonfinite_steps"] <= uninterrupted.results["skipped_nonfinite_steps"]
    resumed = train_segmentation.train(
        train_segmentation.parse_args(
            [*argv, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", str(tmp_path / "a/checkpoint-4")]
        )
    )
    assert same_weights(resumed.model.state_dict(), uninterrupted.model.state_dict())
    assert resumed.results["skipped_nonfinite_steps"] == uninterrupted.results["skipped_nonfinite_steps"]


def grow(disk: Path, megabytes: float) -> None:
    subprocess.run(["mount", "-o", f"remount,size={int(megabytes * 2**20)}", str(disk)], check=True)


def checkpoint_megabytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def test_a_full_disk_keeps_the_checkpoints_and_the_run_resumes_exactly(tmp_path):
    run = [*DDPM, *flags(max_train_steps=4, checkpointing_steps=2, seed=1)]
    reference = run_cli("train-ddpm", *run, "--output_dir", str(tmp_path / "reference"), cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    size = checkpoint_megabytes(tmp_path / "reference" / "checkpoint-2")

    with small_disk(tmp_path / "disk", 1.5 * size) as disk:  # room for checkpoint-2, not for checkpoint-4
        output_dir = disk / "run"
        result = run_cli("train-ddpm", *run, "--output_dir", str(output_dir), cwd=tmp_path)
        assert_one_line_error(
            result, f"could not write the checkpoint {output_dir / 'checkpoint-4'}", "No space left on device"
        )
        assert "MiB free there; a checkpoint of this run takes about" in result.stderr
        assert "checkpoint-2 is complete and resumable" in result.stderr
        assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoint-2"]  # the .tmp folder is gone
        verify_checkpoint(output_dir / "checkpoint-2")

        grow(disk, 4 * size)
        resumed = run_cli(
            "train-ddpm", *run, "--output_dir", str(output_dir), "--resume_from_checkpoint", "auto", cwd=tmp_path
        )
        assert resumed.returncode == 0, resumed.stderr
        for name in ("unet/diffusion_pytorch_model.safetensors", "checkpoint-4/model.safetensors"):
            # read, not memory-mapped (load_file), so that nothing holds the tmpfs busy at unmount
            expected, actual = (
                load((tmp_path / "reference" / name).read_bytes()),
                load((output_dir / name).read_bytes()),
            )
            assert same_weights(expected, actual), name


def test_a_full_disk_while_writing_the_model_removes_the_partial_files(tmp_path):
    run = [*DDPM, *flags(max_train_steps=2, checkpointing_steps=2, seed=1)]
    reference = run_cli("train-ddpm", *run, "--output_dir", str(tmp_path / "reference"), cwd=tmp_path)
    size = checkpoint_megabytes(tmp_path / "reference" / "checkpoint-2")
    with small_disk(tmp_path / "disk", size + 1.0) as disk:  # the checkpoint fits, the model (4.5 MB) does not
        output_dir = disk / "run"
        result = run_cli("train-ddpm", *run, "--output_dir", str(output_dir), cwd=tmp_path)
        assert_one_line_error(result, f"could not write the trained model into {output_dir}", "No space left")
        assert "The files written so far were removed and the checkpoints are complete" in result.stderr
        assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoint-2"]
        before = tree_digest(output_dir)
        verify_checkpoint(output_dir / "checkpoint-2")
        assert before == tree_digest(output_dir)
    assert reference.returncode == 0


TOKEN, USER = "hf_faults_token", "trainer"


@pytest.fixture
def hub_env(tmp_path) -> Iterator[tuple[FakeHub, dict[str, str]]]:
    hub = FakeHub({TOKEN: USER}).start()
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN}
    yield hub, env
    hub.stop()


def test_the_push_is_retried_through_an_outage_and_else_names_the_command_that_uploads_later(tmp_path, hub_env):
    import os

    hub, extra_env = hub_env
    run = [*DDPM, *flags(max_train_steps=1, checkpointing_steps=1), "--push_to_hub"]
    console = str(CONSOLE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", **extra_env}
    env.pop("HF_HUB_OFFLINE", None)

    hub.commit_failures = [503, 502]  # two failed commits, then the Hub is back: huggingface_hub retries
    recovered = subprocess.run(
        [
            console,
            "train-ddpm",
            *run,
            "--output_dir",
            str(tmp_path / "recovered"),
            "--hub_model_id",
            f"{USER}/recovered",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert "HTTP Error 503" in recovered.stderr and "HTTP Error 502" in recovered.stderr
    assert f"{USER}/recovered" in hub.repos and "unet/diffusion_pytorch_model.safetensors" in (
        hub.repos[f"{USER}/recovered"].head.files
    )

    hub.commit_failures = [503] * 6  # longer than huggingface_hub's 5 retries
    output_dir = tmp_path / "outage"
    failed = subprocess.run(
        [console, "train-ddpm", *run, "--output_dir", str(output_dir), "--hub_model_id", f"{USER}/outage"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert_one_line_error(failed, "The Hub answered 503", f"The trained model is saved in {output_dir}")
    command = failed.stderr.split("upload it later with: ")[1].strip()
    assert command == f"hf-swin-ddpm push {output_dir} {USER}/outage --card_fields {output_dir / 'card_fields.json'}"
    assert (output_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "unet/diffusion_pytorch_model.safetensors" not in hub.repos[f"{USER}/outage"].head.files

    later = subprocess.run(
        [console, *command.split()[1:]], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert later.returncode == 0, later.stderr
    pushed = hub.repos[f"{USER}/outage"].head.files
    assert "unet/diffusion_pytorch_model.safetensors" in pushed and b"optimizer steps" in pushed["README.md"]
