"""Secrets: a Hub token never reaches logs, model cards, results, tracker files, errors or tracebacks.

Fake tokens only; the Hub is either a closed loopback port or the loopback stand-in of tests/hub_server.py. Every
output is searched: stdout, stderr, log records, exception chains, and every byte of every file a run writes.
(tests/test_hub.py covers `hf-swin-ddpm push` to a closed port and the 401/403 messages of the CLI.)
"""

from __future__ import annotations

import logging
import os
import subprocess
import traceback
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from hub_server import FakeHub
from space_app_support import free_port
from training_support import CONSOLE_SCRIPT, flags

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet
from hf_swin_ddpm.hub import HubPublishError, push_to_hub
from hf_swin_ddpm.training.arguments import command_line

TOKEN = "hf_fakeSecretToken4SecretsTests0123456789abcd"
REJECTED_TOKEN = "hf_rejectedSecretToken4SecretsTests98765432"
USER = "carol"
TINY_RUN = flags(
    dataset_name="digits",
    model_config="tiny",
    resolution=8,
    train_batch_size=4,
    max_train_samples=8,
    max_train_steps=2,
    checkpointing_steps=1,
    eval_bpd_timesteps=0,
    ddpm_num_steps=10,
    ddpm_num_inference_steps=2,
    num_sample_images=2,
    lr_warmup_steps=1,
    report_to="tensorboard",
)


def assert_no_secret(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in (TOKEN, REJECTED_TOKEN):
        assert secret.encode() not in data, f"a token appears in {where}"
        assert secret[3:].encode() not in data, f"a token (without its prefix) appears in {where}"


def assert_no_secret_in_files(folder: Path) -> int:
    """Every file under `folder`, read as bytes (cards, results, tracker event files, checkpoints, weights)."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    for path in files:
        assert_no_secret(path.read_bytes(), str(path))
    return len(files)


def training_env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_ENDPOINT": endpoint, **extra}
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_SWIN_DDPM_DEBUG"):
        if name not in extra:
            env.pop(name, None)
    return env


def train_and_push(
    output_dir: Path, repo_id: str, token_arguments: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, str]:
    """Runs the console script's tiny DDPM training with --push_to_hub; returns the process and its whole output."""
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "train-ddpm", *TINY_RUN, "--output_dir", str(output_dir), "--push_to_hub"]
        + ["--hub_model_id", repo_id, *token_arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("token_arguments", "extra_env"),
    [
        (["--hub_token=" + TOKEN], {}),
        (["--hub_tok", TOKEN], {}),  # argparse accepts unambiguous abbreviations
        ([], {"HF_TOKEN": TOKEN, "HF_SWIN_DDPM_DEBUG": "1"}),  # the debug switch prints the full traceback
    ],
    ids=["flag-equals", "abbreviated-flag", "environment-with-traceback"],
)
def test_training_push_to_an_unreachable_hub_never_shows_the_token(tmp_path, token_arguments, extra_env):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    output_dir = tmp_path / "run"
    result, output = train_and_push(
        output_dir, f"{USER}/secret-test", token_arguments, training_env(endpoint, **extra_env)
    )
    assert result.returncode == 2, output
    assert f"Could not reach the Hugging Face Hub at {endpoint}" in output
    assert ("Traceback" in output) == bool(extra_env.get("HF_SWIN_DDPM_DEBUG"))
    assert_no_secret(output, "the run's output")
    assert (output_dir / "README.md").is_file() and any((output_dir / "logs").rglob("events.out.tfevents*"))
    assert "***" in (output_dir / "README.md").read_text() or not token_arguments
    assert assert_no_secret_in_files(output_dir) > 10


@pytest.fixture(scope="module")
def pipeline(one_thread) -> DDPMPaperPipeline:
    torch.manual_seed(0)
    return DDPMPaperPipeline(unet=paper_unet("tiny"), scheduler=DDPMPaperScheduler(num_train_timesteps=10))


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub({TOKEN: USER}).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.stop()


def push_and_capture(pipeline, repo_id: str, token: str, caplog, capsys) -> tuple[str, str]:
    """Push with every logger at DEBUG; returns (the error's message and full traceback chain, all logs and output)."""
    caplog.set_level(logging.DEBUG)
    try:
        push_to_hub(pipeline, repo_id, token=token, example_image=False)
    except HubPublishError as error:
        error_text = str(error) + "".join(traceback.format_exception(error))
        chained = error.__cause__ or error.__context__
        while chained is not None:  # even the suppressed context, which a debugger would show
            error_text += "".join(traceback.format_exception(chained))
            chained = chained.__cause__ or chained.__context__
    else:
        error_text = ""
    captured = capsys.readouterr()
    return error_text, caplog.text + captured.out + captured.err


@pytest.mark.parametrize(
    ("repo_id", "token", "message"),
    [
        (f"{USER}/rejected", REJECTED_TOKEN, "The Hub rejected the token (401 Unauthorized)"),
        ("dave/not-yours", TOKEN, "No write access to dave/not-yours (403 Forbidden)"),
    ],
)
def test_hub_api_errors_logs_and_tracebacks_never_show_the_token(
    fake_hub, pipeline, caplog, capsys, repo_id, token, message
):
    fake_hub.add_repo("dave/not-yours", owner="dave", files={"README.md": b"---\nlicense: mit\n---\n"})
    error_text, logs = push_and_capture(pipeline, repo_id, token, caplog, capsys)
    assert message in error_text
    assert_no_secret(error_text, "the error and its traceback chain")
    assert_no_secret(logs, "the log records and console output")


def test_a_successful_push_logs_and_uploads_no_token(fake_hub, pipeline, caplog, capsys):
    error_text, logs = push_and_capture(pipeline, f"{USER}/ok", TOKEN, caplog, capsys)
    assert error_text == "" and "Pushed to" in logs
    assert_no_secret(logs, "the log records and console output")
    for name, content in fake_hub.repos[f"{USER}/ok"].head.files.items():
        assert_no_secret(content, f"the uploaded {name}")


def test_unreachable_hub_error_chain_never_shows_the_token(monkeypatch, pipeline, caplog, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    error_text, logs = push_and_capture(pipeline, f"{USER}/x", TOKEN, caplog, capsys)
    assert "Could not reach the Hugging Face Hub" in error_text
    assert_no_secret(error_text, "the error and its traceback chain")
    assert_no_secret(logs, "the log records and console output")


@pytest.mark.parametrize(
    "argv",
    [
        ["--hub_token", TOKEN],
        ["--hub_token=" + TOKEN],
        ["--hub_tok", TOKEN],
        ["--hub_tok=" + TOKEN],
        ["--output_dir", f"runs/{TOKEN}"],  # the parsed token masked wherever it appears
    ],
)
def test_the_command_line_shown_in_cards_and_trackers_masks_the_token(argv):
    shown = command_line("train_ddpm", argv, [TOKEN])
    assert TOKEN not in shown and "***" in shown


def test_training_push_to_the_hub_uploads_no_token(fake_hub, tmp_path):
    output_dir = tmp_path / "run"
    result, output = train_and_push(
        output_dir, f"{USER}/trained", [f"--hub_token={TOKEN}"], training_env(fake_hub.endpoint)
    )
    assert result.returncode == 0, output
    assert_no_secret(output, "the run's output")
    uploaded = fake_hub.repos[f"{USER}/trained"].head.files
    assert "README.md" in uploaded and "--hub_token=***" in uploaded["README.md"].decode()
    for name, content in uploaded.items():
        assert_no_secret(content, f"the uploaded {name}")
    assert_no_secret_in_files(output_dir)
