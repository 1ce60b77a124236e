"""Corrupt or hostile files: truncated or altered safetensors, configs with wrong types or unknown model types, missing
pieces, pickles that would run code, remote code. Every entry point (hub.load_saved, the CLI, the Space, training
resume) names the bad file, loads pickles only on request and never with arbitrary objects, and runs no remote code.

A hostile pickle here is a real one: its `__reduce__` would create a marker file, and each test checks the marker is
absent after loading (and the payload is first shown to work with a plain `pickle.loads`).
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from space_app_support import load_app_module, save_tiny_ddpm, save_tiny_segmenter
from training_support import flags

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, SwinFPNForSegmentation, paper_unet
from hf_swin_ddpm.cli import main as cli_main
from hf_swin_ddpm.hub import load_saved, save_for_hub
from hf_swin_ddpm.safe_loading import ModelFileError, check_model_folder
from hf_swin_ddpm.training import checkpoints, train_ddpm

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "hf_swin_ddpm"
SPACE_APP = Path(__file__).resolve().parents[1] / "spaces_app" / "app.py"
SEGMENTER_WEIGHTS = "model.safetensors"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


class CodeRunner:
    """Unpickling this runs `exec`, which creates `marker`: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def write_hostile_pickle(path: Path, marker: Path) -> None:
    """A torch checkpoint whose unpickling would create `marker` (a weights file an attacker would ship)."""
    torch.save({"weight": CodeRunner(marker)}, path)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """The file the hostile payloads would create; the payload is shown to work, then the marker is removed."""
    marker = tmp_path / "code_ran"
    pickle.loads(pickle.dumps(CodeRunner(marker)))
    assert marker.exists()
    marker.unlink()
    return marker


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("originals")
    return {"segmenter": save_tiny_segmenter(root / "segmenter"), "ddpm": save_tiny_ddpm(root / "ddpm")}


def copy_of(originals: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(originals[kind], tmp_path / kind))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def overwrite_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:40] = b"{" * 32  # the JSON header starts at byte 8
    path.write_bytes(bytes(data))


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = cli_main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, stderr
    return errors[0]


# ------------------------------------------------------------------------------------------------ damaged safetensors


@pytest.mark.parametrize("damage", [truncate, overwrite_header, lambda path: truncate(path, 0.0001)])
@pytest.mark.parametrize(("kind", "weights"), [("segmenter", SEGMENTER_WEIGHTS), ("ddpm", UNET_WEIGHTS)])
def test_damaged_safetensors_are_named_by_every_entry_point(originals, tmp_path, capsys, kind, weights, damage):
    folder = copy_of(originals, kind, tmp_path)
    damage(folder / weights)
    expected = f"{folder / weights}: not a valid safetensors file"

    with pytest.raises(ModelFileError, match="not a valid safetensors file") as error:
        load_saved(folder)
    assert expected in str(error.value)

    app = load_app_module()
    loader = app.load_segmenter if kind == "segmenter" else app.load_ddpm
    with pytest.raises(app.ModelLoadError, match="not a valid safetensors file") as error:
        loader(str(folder))
    assert str(folder / weights) in str(error.value)

    if kind == "ddpm":
        status, stderr = cli(["sample", str(folder), str(tmp_path / "out.png"), "--num_inference_steps", "1"], capsys)
        assert status == 2 and expected in one_error_line(stderr)


def test_altered_tensor_bytes_in_an_intact_safetensors_file_load_without_running_anything(originals, tmp_path):
    """safetensors has no checksum: changed values load as they are (documented in SECURITY.md), but only as data."""
    folder = copy_of(originals, "segmenter", tmp_path)
    data = bytearray((folder / SEGMENTER_WEIGHTS).read_bytes())
    data[-100] ^= 0xFF
    (folder / SEGMENTER_WEIGHTS).write_bytes(bytes(data))
    model, _ = load_saved(folder)
    original = SwinFPNForSegmentation.from_pretrained(originals["segmenter"])
    differences = [
        name for name, tensor in model.state_dict().items() if not torch.equal(tensor, original.state_dict()[name])
    ]
    assert len(differences) == 1


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    ("kind", "config", "changes", "message"),
    [
        ("segmenter", "config.json", {"window_size": "seven"}, "SwinFPNConfig.window_size: expected int, got 'seven'"),
        ("segmenter", "config.json", {"depths": [1, 1]}, "SwinFPNConfig.num_heads: expected one entry per stage"),
        ("segmenter", "config.json", {"num_labels": 0, "id2label": {}}, "SwinFPNConfig.num_labels"),
        ("ddpm", "scheduler/scheduler_config.json", {"num_train_timesteps": "1000"}, "must be an integer"),
        ("ddpm", "scheduler/scheduler_config.json", {"num_train_timesteps": 10**10}, "must be at most 100000"),
        ("ddpm", "scheduler/scheduler_config.json", {"beta_end": None}, "`beta_end` must be a real number"),
        ("ddpm", "unet/config.json", {"block_out_channels": "abc"}, "could not load the DDPMPaperPipeline"),
    ],
)
def test_configs_with_wrong_types_give_one_clear_error(originals, tmp_path, kind, config, changes, message):
    folder = copy_of(originals, kind, tmp_path)
    edit_json(folder / config, **changes)
    with pytest.raises(ValueError, match=message) as error:
        load_saved(folder)
    assert str(folder) in str(error.value)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_unreadable_configs_are_named(originals, tmp_path, content):
    folder = copy_of(originals, "ddpm", tmp_path)
    (folder / "unet" / "config.json").write_text(content)
    with pytest.raises(ModelFileError, match=f"{folder / 'unet' / 'config.json'}: "):
        load_saved(folder)


def test_unknown_model_type_with_remote_code_never_runs_the_code(originals, tmp_path, marker):
    """A config with an unknown model type whose `auto_map` points at shipped code: refused, the code never runs."""
    folder = copy_of(originals, "segmenter", tmp_path)
    edit_json(folder / "config.json", model_type="not_a_known_model")
    for code_file in folder.glob("*.py"):
        code_file.write_text(f"open({str(marker)!r}, 'w').close()\n" + code_file.read_text())

    with pytest.raises(ValueError, match="'not_a_known_model'"):
        load_saved(folder)
    app = load_app_module()
    with pytest.raises(app.ModelLoadError, match="contains custom code"):
        app.load_segmenter(str(folder))
    assert not marker.exists()


def test_remote_code_layout_loads_with_the_installed_classes_not_the_shipped_files(tmp_path, marker):
    torch.manual_seed(0)
    pipeline = DDPMPaperPipeline(unet=paper_unet("tiny"), scheduler=DDPMPaperScheduler(num_train_timesteps=10))
    folder = save_for_hub(pipeline, tmp_path / "repo", example_image=False)
    shipped = sorted(folder.rglob("*.py"))
    assert shipped
    for code_file in shipped:
        code_file.write_text(f"open({str(marker)!r}, 'w').close()\n" + code_file.read_text())
    loaded, _ = load_saved(folder)
    assert type(loaded) is DDPMPaperPipeline and not marker.exists()


# ------------------------------------------------------------------------------------------------ missing pieces


@pytest.mark.parametrize(
    ("kind", "missing", "message"),
    [
        ("segmenter", SEGMENTER_WEIGHTS, "no file named model.safetensors"),
        ("ddpm", UNET_WEIGHTS, "no file named diffusion_pytorch_model.safetensors"),
        ("ddpm", "scheduler/scheduler_config.json", "scheduler_config.json"),
        ("ddpm", "unet/config.json", "config.json"),
    ],
)
def test_a_missing_piece_is_named(originals, tmp_path, capsys, monkeypatch, kind, missing, message):
    folder = copy_of(originals, kind, tmp_path)
    (folder / missing).unlink()
    with pytest.raises(ValueError, match=message) as error:
        load_saved(folder)
    assert str(folder) in str(error.value)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_a_push_that_fails_before_the_network")
    status, stderr = cli(["push", str(folder), "me/model"], capsys)
    assert status == 2
    line = one_error_line(stderr)
    assert str(folder) in line and message in line


# ------------------------------------------------------------------------------------------------ pickles


@pytest.mark.parametrize(
    ("kind", "safetensors", "pickle_name"),
    [
        ("segmenter", SEGMENTER_WEIGHTS, "pytorch_model.bin"),
        ("ddpm", UNET_WEIGHTS, "unet/diffusion_pytorch_model.bin"),
    ],
)
def test_pickles_are_refused_unless_allowed_and_never_run_code(
    originals, tmp_path, capsys, marker, kind, safetensors, pickle_name
):
    folder = copy_of(originals, kind, tmp_path)
    (folder / safetensors).unlink()
    write_hostile_pickle(folder / pickle_name, marker)

    with pytest.raises(ModelFileError, match=f"{folder / pickle_name}: weights stored as a pickle"):
        load_saved(folder)
    app = load_app_module()
    loader = app.load_segmenter if kind == "segmenter" else app.load_ddpm
    with pytest.raises(app.ModelLoadError, match="weights stored as a pickle"):
        loader(str(folder))
    if kind == "ddpm":
        status, stderr = cli(["sample", str(folder), str(tmp_path / "out.png")], capsys)
        assert status == 2 and "weights stored as a pickle" in one_error_line(stderr)
        status, stderr = cli(["sample", str(folder), str(tmp_path / "out.png"), "--allow_pickle"], capsys)
        assert status == 2 and str(folder) in one_error_line(stderr)

    with pytest.raises(ModelFileError, match="could not load the"):  # opted in: torch.load(weights_only=True)
        load_saved(folder, allow_pickle=True)
    assert not marker.exists()


def test_the_libraries_own_loaders_never_run_a_pickle_payload(originals, tmp_path, marker):
    """transformers and diffusers read .bin files with torch.load(weights_only=True): the payload fails to load."""
    segmenter = copy_of(originals, "segmenter", tmp_path)
    (segmenter / SEGMENTER_WEIGHTS).unlink()
    write_hostile_pickle(segmenter / "pytorch_model.bin", marker)
    with pytest.raises(Exception, match="(?i)weights only load failed"):
        SwinFPNForSegmentation.from_pretrained(segmenter)
    ddpm = copy_of(originals, "ddpm", tmp_path)
    (ddpm / UNET_WEIGHTS).unlink()
    write_hostile_pickle(ddpm / "unet" / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(OSError):
        DDPMPaperPipeline.from_pretrained(ddpm)
    assert not marker.exists()


def test_a_pickle_beside_safetensors_is_ignored(originals, tmp_path, marker):
    folder = copy_of(originals, "segmenter", tmp_path)
    write_hostile_pickle(folder / "pytorch_model.bin", marker)
    check_model_folder(folder)
    model, _ = load_saved(folder)
    assert isinstance(model, SwinFPNForSegmentation) and not marker.exists()


def test_no_trust_remote_code_true_anywhere_in_the_package_or_the_space():
    """No call passes trust_remote_code=True and no function defaults it to True (docstrings may mention it)."""
    offenders = []
    for path in [*PACKAGE_DIR.rglob("*.py"), SPACE_APP]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    offenders.append(f"{path.name}:{node.value.lineno}")
            if isinstance(node, ast.arguments):
                names = [a.arg for a in node.args[len(node.args) - len(node.defaults) :] + node.kwonlyargs]
                defaults = [*node.defaults, *node.kw_defaults]
                for name, default in zip(names, defaults):
                    if name == "trust_remote_code" and not (isinstance(default, ast.Constant) and not default.value):
                        offenders.append(f"{path.name}: default of {name}")
    assert offenders == []


# ------------------------------------------------------------------------------------------------ training resume

TINY_DDPM_RUN = flags(
    dataset_name="digits",
    model_config="tiny",
    resolution=8,
    train_batch_size=8,
    max_train_samples=16,
    eval_bpd_timesteps=0,
    ddpm_num_inference_steps=2,
    ddpm_num_steps=10,
    num_sample_images=2,
    save_images_steps=1000,
    lr_warmup_steps=1,
    report_to="none",
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """checkpoint-2 of a 2-step tiny DDPM run (EMA on)."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = [*TINY_DDPM_RUN, *flags(output_dir=output_dir, max_train_steps=2, checkpointing_steps=2)]
        assert train_ddpm.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return output_dir / "checkpoint-2"


def resume(checkpoint_dir: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    """Resume a 3-step run from `checkpoint_dir` (copied into a fresh output folder) in-process."""
    output_dir = tmp_path / "resumed"
    copied = Path(shutil.copytree(checkpoint_dir, output_dir / checkpoint_dir.name))
    args = [*TINY_DDPM_RUN, *flags(output_dir=output_dir, max_train_steps=3, resume_from_checkpoint=str(copied))]
    status = train_ddpm.main(args)
    return status, capsys.readouterr().err


def damaged_checkpoint(checkpoint: Path, tmp_path: Path, change) -> Path:
    folder = Path(shutil.copytree(checkpoint, tmp_path / "source" / checkpoint.name))
    change(folder)
    return folder


def test_checkpoints_hold_no_unpickled_custom_objects_and_a_manifest(checkpoint):
    names = {path.name for path in checkpoint.iterdir()}
    assert {
        checkpoints.MANIFEST_FILE,
        checkpoints.TRAINING_STATE_FILE,
        checkpoints.EMA_WEIGHTS_FILE,
        "model.safetensors",
    } <= names
    assert not [name for name in names if name.startswith("custom_checkpoint")]
    manifest = json.loads((checkpoint / checkpoints.MANIFEST_FILE).read_text())["files"]
    assert set(manifest) == names - {checkpoints.MANIFEST_FILE}


def test_an_intact_checkpoint_resumes(checkpoint, tmp_path, capsys):
    status, stderr = resume(checkpoint, tmp_path, capsys)
    assert status == 0, stderr
    assert json.loads((tmp_path / "resumed" / "all_results.json").read_text())["global_step"] == 3


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda folder: (folder / "model.safetensors").unlink(), "has no model.safetensors"),
        (lambda folder: (folder / "optimizer.bin").unlink(), "optimizer.bin is missing from the checkpoint"),
        (lambda folder: truncate(folder / "optimizer.bin"), "optimizer.bin is truncated or altered"),
        (lambda folder: flip_middle_byte(folder / "model.safetensors"), "model.safetensors is altered"),
        (lambda folder: flip_middle_byte(folder / checkpoints.EMA_WEIGHTS_FILE), "ema_weights.safetensors is altered"),
        (
            lambda folder: (folder / checkpoints.TRAINING_STATE_FILE).write_text("{}"),
            "training_state.json is truncated",
        ),
        (lambda folder: (folder / checkpoints.MANIFEST_FILE).unlink(), "has no checkpoint_manifest.json"),
        (lambda folder: (folder / checkpoints.MANIFEST_FILE).write_text("[1"), "checkpoint_manifest.json is damaged"),
    ],
)
def test_a_damaged_checkpoint_is_refused_naming_the_file(checkpoint, tmp_path, capsys, change, message):
    folder = damaged_checkpoint(checkpoint, tmp_path, change)
    status, stderr = resume(folder, tmp_path, capsys)
    assert status == 2
    line = one_error_line(stderr)
    assert "--resume_from_checkpoint" in line and message in line, line


def test_a_hostile_pickle_in_a_checkpoint_never_runs(checkpoint, tmp_path, capsys, marker):
    """An attacker who also rewrites the manifest gets as far as accelerate, which reads its pickles with
    weights_only=True; a custom_checkpoint pickle is never read at all."""

    def plant(folder: Path) -> None:
        write_hostile_pickle(folder / "optimizer.bin", marker)
        write_hostile_pickle(folder / "custom_checkpoint_0.pkl", marker)
        checkpoints.write_manifest(folder)

    status, stderr = resume(damaged_checkpoint(checkpoint, tmp_path, plant), tmp_path, capsys)
    assert status == 2 and "could not be loaded" in one_error_line(stderr)
    assert not marker.exists()


def test_a_stray_custom_checkpoint_pickle_is_refused_unread(checkpoint, tmp_path, capsys, marker):
    """accelerate counts custom_checkpoint pickles against the registered objects (none) before reading any."""

    def plant(folder: Path) -> None:
        write_hostile_pickle(folder / "custom_checkpoint_0.pkl", marker)

    status, stderr = resume(damaged_checkpoint(checkpoint, tmp_path, plant), tmp_path, capsys)
    assert status == 2 and "custom checkpoints" in one_error_line(stderr)
    assert not marker.exists()
