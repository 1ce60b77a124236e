"""DDPM training (hf_swin_ddpm.training.train_ddpm): outputs, exact resume, two processes, data layouts, bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from huggingface_hub import ModelCard
from training_support import (
    assert_one_line_error,
    counting_ddp_modules_at_end_training,
    flags,
    run_cli,
    run_cli_concurrently,
    run_two_processes,
    same_weights,
    tree_digest,
    with_flags,
    write_image_folder,
)

from hf_swin_ddpm import DDPMPaperPipeline
from hf_swin_ddpm.training import train_ddpm
from hf_swin_ddpm.training.checkpoints import complete_checkpoints

# digits at 8x8 with the tiny UNet: 24 training images in batches of 8 (3 per epoch), 5 held-out images.
TINY = flags(
    dataset_name="digits",
    model_config="tiny",
    resolution=8,
    train_batch_size=8,
    max_train_samples=24,
    max_eval_samples=5,
    eval_batch_size=2,
    eval_bpd_timesteps=2,
    ddpm_num_inference_steps=2,
    num_sample_images=4,
    lr_warmup_steps=2,
    logging_steps=1,
    ema_decay=0.9,
    report_to="none",
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(*argv: str) -> train_ddpm.DDPMTrainingResult:
    return train_ddpm.train(train_ddpm.parse_args(list(argv)))


def test_outputs_and_exact_resume(tmp_path):
    first = tmp_path / "run"
    argv = with_flags(TINY, output_dir=first, max_train_steps=5, random_flip=True)
    logged = flags(checkpointing_steps=2, checkpoints_total_limit=2, save_images_steps=2, report_to="tensorboard")
    uninterrupted = train(*argv, *logged)

    # checkpoints every 2 steps, the oldest beyond the limit removed; sample grids; tracker logs
    assert [path.name for path in complete_checkpoints(first)] == ["checkpoint-2", "checkpoint-4"]
    assert (first / "samples" / "samples-0000002.png").is_file() and (
        first / "samples" / "samples-0000004.png"
    ).is_file()
    assert list((first / "logs").rglob("events.out.tfevents*"))
    assert (first / "sample_grid.png").is_file()

    # the saved pipeline holds the EMA weights
    pipeline = DDPMPaperPipeline.from_pretrained(first)
    assert same_weights(pipeline.unet.state_dict(), uninterrupted.unet.state_dict())
    assert not same_weights(uninterrupted.training_weights, uninterrupted.unet.state_dict())
    assert pipeline.unet.config.sample_size == 8

    results = json.loads((first / "all_results.json").read_text())
    assert results["global_step"] == 5 and results["num_processes"] == 1
    assert results["eval_samples"] == 5 and results["eval_split"] == "test"
    assert results["eval_total_bpd"] > 0

    card = ModelCard.load(first / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert {"hf-swin-ddpm", "ddpm"} <= set(card.data.tags)
    assert card.data.eval_results[0].metric_type == "bits_per_dim"
    assert "sample_grid.png" in card.text and "learning_rate" in card.text

    # a save killed half-way leaves checkpoint-N.tmp: "latest" must skip it and resume from checkpoint-4
    partial = first / "checkpoint-9.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half-written")
    resumed_latest = train(*argv, *flags(resume_from_checkpoint="latest"))
    assert resumed_latest.results["global_step"] == 5
    resumed_middle = train(
        *with_flags(TINY, output_dir=tmp_path / "other", max_train_steps=5, random_flip=True),
        *flags(resume_from_checkpoint=first / "checkpoint-2"),
    )
    for resumed in (resumed_latest, resumed_middle):
        assert same_weights(resumed.training_weights, uninterrupted.training_weights)
        assert same_weights(resumed.unet.state_dict(), uninterrupted.unet.state_dict())  # EMA too
        assert resumed.results["train_loss"] == uninterrupted.results["train_loss"]

    # a run resumed at its last step trains nothing and reports the loss its checkpoint logged, not NaN
    at_end = train(
        *with_flags(TINY, output_dir=tmp_path / "end", max_train_steps=4, random_flip=True),
        *flags(resume_from_checkpoint=first / "checkpoint-4"),
    )
    logged_at_4 = json.loads((first / "checkpoint-4" / "training_state.json").read_text())["progress"]["train_loss"]
    assert at_end.results["global_step"] == 4 and math.isfinite(logged_at_4)
    assert at_end.results["train_loss"] == logged_at_4
    assert json.loads((tmp_path / "end" / "all_results.json").read_text())["train_loss"] == logged_at_4


def test_resume_with_gradient_accumulation_across_epochs(tmp_path):
    argv = with_flags(TINY, max_train_steps=4, gradient_accumulation_steps=2, max_train_samples=20, use_ema=True)
    uninterrupted = train(*argv, *flags(output_dir=tmp_path / "a", checkpointing_steps=1))
    resumed = train(*argv, *flags(output_dir=tmp_path / "b", resume_from_checkpoint=tmp_path / "a" / "checkpoint-3"))
    assert same_weights(resumed.training_weights, uninterrupted.training_weights)


def _train_on_two_processes(output_dir: str) -> None:
    with counting_ddp_modules_at_end_training() as ddp_alive:
        result = train(*with_flags(TINY, output_dir=output_dir, max_train_steps=3, checkpointing_steps=3))
    torch.save(
        {
            "training": result.training_weights,
            "ema": result.unet.state_dict(),
            "results": result.results,
            "ddp_alive": ddp_alive,
        },
        Path(output_dir) / f"process-{result.process_index}.pt",
    )


def test_two_processes_keep_identical_weights_and_gather_all_eval_images(tmp_path):
    output_dir = tmp_path / "two"
    run_two_processes(lambda: _train_on_two_processes(str(output_dir)))
    first, second = (torch.load(output_dir / f"process-{i}.pt", weights_only=False) for i in range(2))
    assert same_weights(first["training"], second["training"])
    assert same_weights(first["ema"], second["ema"])
    assert first["ddp_alive"] == second["ddp_alive"] == [0]  # the DDP wrapper freed before the process group
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["num_processes"] == 2
    assert results["eval_samples"] == 5  # 3 + 3 on the two processes, the padding dropped
    assert results["total_train_batch_size"] == 16
    single = train(*with_flags(TINY, output_dir=tmp_path / "one", max_train_steps=3))
    assert not same_weights(single.training_weights, first["training"])  # the processes saw different batches


def test_cli_trains_on_an_image_folder(tmp_path):
    write_image_folder(tmp_path / "folder", {"train": 10, "test": 3})
    result = run_cli(
        "train-ddpm",
        *flags(train_data_dir="folder", output_dir="out", max_train_steps=2, train_batch_size=4),
        *flags(model_config="tiny", resolution=8, eval_bpd_timesteps=2, ddpm_num_inference_steps=2),
        *flags(num_sample_images=2, report_to="none"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["global_step"] == 2 and results["eval_samples"] == 3 and results["eval_split"] == "test"
    assert DDPMPaperPipeline.from_pretrained(tmp_path / "out").unet.config.in_channels == 1


def test_bad_input_is_one_line_and_leaves_checkpoints_alone(tmp_path):
    output_dir = tmp_path / "out"
    train(*with_flags(TINY, output_dir=output_dir, max_train_steps=2, checkpointing_steps=2))
    before = tree_digest(output_dir)
    datasets.Dataset.from_dict({"text": ["a", "b"]}).to_parquet(tmp_path / "text.parquet")
    common = flags(output_dir=output_dir, resume_from_checkpoint="latest", model_config="tiny", max_train_steps=4)
    cases = [
        (flags(train_data_dir="missing_folder"), ["missing_folder", "does not exist"]),
        (flags(dataset_name="no_such_dataset_anywhere"), ["no_such_dataset_anywhere"]),
        (flags(dataset_name="text.parquet"), ["[text]", "image column"]),
        (
            flags(dataset_name="digits", lr_scheduler="warmup_stable_decay", lr_decay_steps=9),
            ["--lr_decay_steps", "the run's 4 optimizer steps"],
        ),
    ]
    results = run_cli_concurrently([["train-ddpm", *case, *common] for case, _ in cases], cwd=tmp_path)
    for (_, fragments), result in zip(cases, results, strict=True):
        assert_one_line_error(result, *fragments)
    assert tree_digest(output_dir) == before
    shutil.rmtree(output_dir)


def test_streaming_resume_is_exact(tmp_path):
    argv = with_flags(TINY, streaming=True, max_train_steps=5, random_flip=True, eval_bpd_timesteps=0)
    uninterrupted = train(*argv, *flags(output_dir=tmp_path / "a", checkpointing_steps=2))
    resumed = train(*argv, *flags(output_dir=tmp_path / "b", resume_from_checkpoint=tmp_path / "a" / "checkpoint-2"))
    assert same_weights(resumed.training_weights, uninterrupted.training_weights)


def test_gradient_checkpointing_trains_to_the_same_weights(tmp_path):
    plain = train(*with_flags(TINY, output_dir=tmp_path / "plain", max_train_steps=3, dropout=0.1))
    checkpointed = train(
        *with_flags(TINY, output_dir=tmp_path / "checkpointed", max_train_steps=3, dropout=0.1),
        "--gradient_checkpointing",
    )
    assert checkpointed.unet.is_gradient_checkpointing and not plain.unet.is_gradient_checkpointing
    assert same_weights(checkpointed.training_weights, plain.training_weights)  # dropout masks replayed exactly


def test_warmup_stable_decay_is_constant_with_warmup_until_its_cosine_decay_to_zero():
    import argparse
    import types

    from diffusers.optimization import get_scheduler

    from hf_swin_ddpm.training.runtime import learning_rate_schedule

    def rates(schedule, steps: int) -> list[float]:
        seen = []
        for _ in range(steps):
            seen.append(schedule.optimizer.param_groups[0]["lr"])
            schedule.optimizer.step()
            schedule.step()
        return seen

    def optimizer():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)

    one_process = types.SimpleNamespace(num_processes=1)
    wsd = argparse.Namespace(lr_scheduler="warmup_stable_decay", lr_warmup_steps=10, lr_decay_steps=40)
    decayed = rates(learning_rate_schedule(wsd, one_process, optimizer(), 100), 100)
    constant = rates(get_scheduler("constant_with_warmup", optimizer=optimizer(), num_warmup_steps=10), 100)
    assert decayed[:60] == constant[:60] and decayed[5] == 5e-4 and decayed[59] == 1e-3
    assert decayed[80] == pytest.approx(0.5e-3) and decayed[70] == pytest.approx(0.5e-3 * (1 + 2**-0.5))
    assert all(later < earlier for earlier, later in zip(decayed[60:], decayed[61:], strict=False))
    assert decayed[99] == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 39 / 40)))


def test_a_constant_run_resumed_into_warmup_stable_decay_is_the_decayed_run(tmp_path):
    """The demo DDPM's recipe trains on from a constant-rate run's checkpoint: until the decay the two schedules
    agree, so resuming gives exactly the weights of the decayed run trained from scratch."""
    decay = flags(max_train_steps=6, lr_scheduler="warmup_stable_decay", lr_decay_steps=3, use_ema=True)
    constant = train(
        *with_flags(TINY, output_dir=tmp_path / "constant", max_train_steps=6, checkpointing_steps=3),
        *flags(lr_scheduler="constant_with_warmup", use_ema=True),
    )
    from_scratch = train(*with_flags(TINY, output_dir=tmp_path / "scratch"), *decay)
    resumed = train(
        *with_flags(TINY, output_dir=tmp_path / "resumed"),
        *decay,
        *flags(resume_from_checkpoint=tmp_path / "constant" / "checkpoint-3"),
    )
    assert same_weights(resumed.training_weights, from_scratch.training_weights)
    assert same_weights(resumed.unet.state_dict(), from_scratch.unet.state_dict())  # EMA too
    assert not same_weights(constant.training_weights, from_scratch.training_weights)  # the decay changed them
    card = ModelCard.load(tmp_path / "scratch" / "README.md").text
    assert "warmup_stable_decay, 2 warm-up steps, cosine decay to 0 over the last 3 steps" in card
