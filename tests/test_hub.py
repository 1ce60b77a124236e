"""Publishing to the Hub: model cards, folders that load as remote code, and push / download / load over real HTTP.

The Hub is a loopback server (tests/hub_server.py) speaking the part of the Hub API that huggingface_hub uses; the
client side runs in subprocesses with HF_ENDPOINT pointing at it, a fake token and fresh caches.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DiffusionPipeline, UNet2DModel
from hub_server import FakeHub
from huggingface_hub import ModelCard
from PIL import Image
from remote_code_support import BLOCK_PACKAGE

from hf_swin_ddpm import (
    DDPMPaperPipeline,
    DDPMPaperScheduler,
    SwinFPNConfig,
    SwinFPNForSegmentation,
    SwinFPNImageProcessor,
)
from hf_swin_ddpm.hub import HubPublishError, is_repo_id, push_to_hub, render_model_card, save_for_hub
from hf_swin_ddpm.hub.folders import _check_weights
from hf_swin_ddpm.hub.remote_code import check_self_contained, copy_code_files
from hf_swin_ddpm.imaging import class_colours

pytestmark = pytest.mark.usefixtures("one_thread")

FAKE_TOKEN = "hf_LoopbackFakeToken4Tests0123456789abcdef"
REJECTED_TOKEN = "hf_RejectedToken4Tests9876543210fedcba"
USER = "alice"
SEG_REPO = f"{USER}/tiny-swin-fpn"
DDPM_REPO = f"{USER}/tiny-ddpm"
FOREIGN_REPO = "bob/their-model"
SAMPLING_STEPS = 4
GRID_STEPS = 2
SEG_FILES = {
    "README.md",
    "config.json",
    "configuration_swin_fpn.py",
    "modeling_swin_fpn.py",
    "convert_swin_fpn.py",
    "cpu_kernels_swin_fpn.py",
    "loss_swin_fpn.py",
    "pooling_swin_fpn.py",
    "image_processing_swin_fpn.py",
    "preprocessor_config.json",
    "model.safetensors",
    "example_prediction.png",
}
DDPM_FILES = {
    "README.md",
    "model_index.json",
    "pipeline_ddpm_paper.py",
    "sample_grid.png",
    "scheduler/scheduler_config.json",
    "scheduler/scheduling_ddpm_paper.py",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
}


# Runs in the subprocesses: outputs of the loaded models, compared with those of the originals saved by the tests.
COMPARE_OUTPUTS = """
import json, torch
torch.set_num_threads(1)

def compare(model, processor, pipeline):
    with torch.no_grad():
        logits = model.eval()(**processor(torch.load("image.pt"), return_tensors="pt")).logits
    pipeline.set_progress_bar_config(disable=True)
    output = pipeline(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS,
                      output_type="pt", return_trajectory=True)
    return {
        "logits_equal": torch.equal(logits, torch.load("logits.pt")),
        "samples_equal": torch.equal(output.images, torch.load("samples.pt")),
        "trajectory_equal": torch.equal(output.trajectory_samples, torch.load("trajectory.pt")),
        "model_module": type(model).__module__,
        "processor_class": type(processor).__name__,
        "pipeline_module": type(pipeline).__module__,
        "scheduler_module": type(pipeline.scheduler).__module__,
    }
""".replace("STEPS", str(SAMPLING_STEPS))

LOAD_WITH_THE_PACKAGE = f"""
from hf_swin_ddpm import DDPMPaperPipeline, SwinFPNForSegmentation, SwinFPNImageProcessor
loaded = compare(
    SwinFPNForSegmentation.from_pretrained("{SEG_REPO}"),
    SwinFPNImageProcessor.from_pretrained("{SEG_REPO}"),
    DDPMPaperPipeline.from_pretrained("{DDPM_REPO}"),
)
"""


@pytest.fixture(scope="module")
def tiny_segmentation() -> tuple[SwinFPNForSegmentation, SwinFPNImageProcessor]:
    """A SwinFPN model trained for a few steps on random images, with its processor."""
    torch.manual_seed(0)
    config = SwinFPNConfig(
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=5,
        image_size=48,
        fpn_hidden_size=16,
        head_hidden_size=8,
        head_num_groups=4,
        id2label={0: "background", 1: "thing"},
    )
    model = SwinFPNForSegmentation(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        loss = model(pixel_values=torch.randn(2, 3, 48, 48), labels=torch.randint(0, 2, (2, 48, 48))).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), SwinFPNImageProcessor(size={"height": 48, "width": 48})


@pytest.fixture(scope="module")
def tiny_pipeline() -> DDPMPaperPipeline:
    """A DDPMPaperPipeline whose UNet was trained for a few steps (L_simple) on random 8x8 images."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        mid_block_type=None,
        norm_num_groups=4,
    )
    scheduler = DDPMPaperScheduler()
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3)
    for _ in range(3):
        images, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
        timesteps = torch.randint(0, 1000, (4,))
        loss = (unet(scheduler.add_noise(images, noise, timesteps), timesteps).sample - noise).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    pipeline = DDPMPaperPipeline(unet=unet.eval(), scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def example_image() -> Image.Image:
    return Image.fromarray(torch.randint(0, 256, (30, 40, 3), dtype=torch.uint8).numpy())


def sample(pipeline: DDPMPaperPipeline):
    generator = torch.Generator().manual_seed(0)
    return pipeline(
        batch_size=2,
        generator=generator,
        num_inference_steps=SAMPLING_STEPS,
        output_type="pt",
        return_trajectory=True,
    )


# --------------------------------------------------------------------------------------------- model cards


@pytest.mark.parametrize(
    "kind, result, library, task",
    [
        ("swin_fpn", {"mean_iou": 0.4123}, "transformers", "image-segmentation"),
        ("ddpm", {"bits_per_dim": 3.75}, "diffusers", "unconditional-image-generation"),
    ],
)
def test_model_card_metadata_parses_back(tmp_path, kind, result, library, task):
    card = render_model_card(
        kind,
        repo_id="alice/my-model",
        datasets=["scene_parse_150"],
        base_model="microsoft/swin-tiny-patch4-window7-224",
        hyperparameters={"learning_rate": 6e-5, "batch_size": 16},
        tags=["ade20k"],
        **result,
    )
    card.save(tmp_path / "README.md")
    for parsed in (ModelCard(str(card)), ModelCard.load(tmp_path / "README.md")):
        data = parsed.data
        assert data.library_name == library and data.pipeline_tag == task and data.license == "apache-2.0"
        assert {"hf-swin-ddpm", "ade20k", "swin" if kind == "swin_fpn" else "ddpm"} <= set(data.tags)
        assert data.datasets == ["scene_parse_150"]
        assert data.base_model == "microsoft/swin-tiny-patch4-window7-224"
        (evaluation,) = data.eval_results
        assert evaluation.metric_type == next(iter(result)) and evaluation.metric_value == next(iter(result.values()))
        assert evaluation.dataset_name == "scene_parse_150" and evaluation.task_type == task
        assert data.model_name == "my-model"
    text = card.text
    arxiv = "arxiv.org/abs/2103.14030" if kind == "swin_fpn" else "arxiv.org/abs/2006.11239"
    assert arxiv in text and 'from_pretrained("alice/my-model")' in text
    assert 'from_pretrained("alice/my-model", trust_remote_code=True)' in text
    assert "| learning_rate | 6e-05 |" in text and "## Limitations" in text


def test_model_card_without_results_has_no_model_index():
    card = render_model_card("swin_fpn", repo_id="alice/my-model")
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "No evaluation results were recorded" in card.text
    assert "The training hyperparameters were not recorded" in card.text


@pytest.mark.parametrize(
    "kind, fields, message",
    [
        ("swin_fpn", {"mean_iou": 44.5, "datasets": "ade"}, "fraction in"),
        ("swin_fpn", {"mean_iou": 0.4}, "needs the dataset"),
        ("swin_fpn", {"bits_per_dim": 3.7, "datasets": "ade"}, "does not apply"),
        ("ddpm", {"bits_per_dim": -1.0, "datasets": "cifar10"}, "positive"),
        ("ddpm", {"learning_rate": 1e-4}, "Unknown model card fields"),
        ("gan", {}, "Unknown model kind"),
    ],
)
def test_model_card_rejects_bad_fields(kind, fields, message):
    with pytest.raises(ValueError, match=message):
        render_model_card(kind, **fields)


def test_templates_are_shipped_inside_the_package():
    root = Path(__file__).parents[1]
    package_templates = root / "hf_swin_ddpm" / "model_cards"
    assert (root / "model_cards").resolve() == package_templates.resolve()
    for name in ("swin_fpn_card.md", "ddpm_card.md"):
        assert (package_templates / name).is_file()
    assert '"model_cards/*.md"' in (root / "pyproject.toml").read_text()  # package data of hf_swin_ddpm


# ----------------------------------------------------------------------------------------- save_for_hub


def files_in(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_segmentation_folder(tmp_path, tiny_segmentation):
    model, processor = tiny_segmentation
    folder = save_for_hub(
        model, tmp_path / "seg", image_processor=processor, example_input=example_image(), datasets="ade"
    )
    assert files_in(folder) == SEG_FILES
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_swin_fpn.SwinFPNForSegmentation"
    assert "hf_swin_ddpm" not in "".join(path.read_text() for path in folder.glob("*.py"))
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and "](example_prediction.png)" in card.text
    assert "| Classes | 2 |" in card.text and "`background`, `thing`" in card.text
    assert Image.open(folder / "example_prediction.png").size == (80, 30)

    pixel_values = processor(example_image(), return_tensors="pt")["pixel_values"]
    loaded = SwinFPNForSegmentation.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).logits, model(pixel_values).logits)


def test_ddpm_folder_is_laid_out_as_remote_code(tmp_path, tiny_pipeline):
    folder = save_for_hub(tiny_pipeline, tmp_path / "ddpm", sample_steps=GRID_STEPS, datasets=["cifar10"])
    assert files_in(folder) == DDPM_FILES
    model_index = json.loads((folder / "model_index.json").read_text())
    assert model_index["_class_name"] == ["pipeline_ddpm_paper", "DDPMPaperPipeline"]
    assert model_index["scheduler"] == ["scheduling_ddpm_paper", "DDPMPaperScheduler"]
    assert model_index["unet"] == ["diffusers", "UNet2DModel"]
    assert Image.open(folder / "sample_grid.png").size == (4 * 8, 2 * 8)
    assert f"8 samples (seed 0, {GRID_STEPS} sampling steps)" in (folder / "README.md").read_text()

    loaded = DDPMPaperPipeline.from_pretrained(folder)  # the installed classes, not the folder's copies
    assert type(loaded) is DDPMPaperPipeline and type(loaded.scheduler) is DDPMPaperScheduler
    loaded.set_progress_bar_config(disable=True)
    expected, actual = sample(tiny_pipeline), sample(loaded)
    assert torch.equal(actual.images, expected.images)
    assert torch.equal(actual.trajectory_samples, expected.trajectory_samples)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(folder)


class ScaledUNet(UNet2DModel):
    """A UNet class from outside diffusers: a clean interpreter could not load it."""


def test_save_for_hub_refuses_what_would_not_load(tmp_path, tiny_pipeline):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        save_for_hub(tiny_pipeline, tmp_path / "used")
    custom = DDPMPaperPipeline(unet=ScaledUNet(**tiny_pipeline.unet.config), scheduler=DDPMPaperScheduler())
    with pytest.raises(ValueError, match="only diffusers' own UNet classes"):
        save_for_hub(custom, tmp_path / "custom")
    with pytest.raises(ValueError, match="expected a SwinFPNForSegmentation or a DDPMPaperPipeline"):
        save_for_hub(torch.nn.Linear(2, 2), tmp_path / "linear")
    with pytest.raises(ValueError, match="Unknown model card fields"):
        save_for_hub(tiny_pipeline, tmp_path / "typo", dataset="cifar10")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="pickle files"):
        _check_weights(tmp_path / "pickled")


def test_segmentation_example_uses_the_class_palette(tmp_path, tiny_segmentation):
    model, processor = tiny_segmentation
    folder = save_for_hub(model, tmp_path / "seg", image_processor=processor, example_input=example_image())
    prediction = Image.open(folder / "example_prediction.png").convert("RGB").crop((40, 0, 80, 30))
    colours = {tuple(colour) for colour in class_colours(model.config.id2label).tolist()}
    assert {colour for _, colour in prediction.getcolors()} <= colours  # the Space's and the training images' colours


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def test_remote_code_ships_the_sibling_files_its_classes_import(tmp_path, monkeypatch):
    package = tmp_path / "remote_code_example"
    package.mkdir()
    write_module(package, "__init__", "")
    write_module(package, "pipeline_example", "from .helpers import VALUE\n\n\nclass Example:\n    value = VALUE\n")
    write_module(package, "helpers", "from .constants import NUMBER\n\nVALUE = NUMBER + 1\n")
    write_module(package, "constants", "NUMBER = 1\n")
    write_module(package, "unused", "NUMBER = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from remote_code_example.pipeline_example import Example

    copied = copy_code_files(Example, tmp_path / "shipped")
    assert [path.name for path in copied] == ["pipeline_example.py", "constants.py", "helpers.py"]
    check_self_contained(copied)

    write_module(tmp_path / "shipped", "absolute", "from hf_swin_ddpm.imaging import class_colours\n")
    write_module(tmp_path / "shipped", "missing", "from .not_shipped import VALUE\n")
    write_module(tmp_path / "shipped", "parent", "from ..helpers import VALUE\n")
    for name, message in [("absolute", "imports hf_swin_ddpm"), ("missing", ".not_shipped"), ("parent", "..helpers")]:
        with pytest.raises(ValueError, match=message):
            check_self_contained([tmp_path / "shipped" / f"{name}.py"])


@pytest.mark.parametrize(
    "name, repo_id, namespaced",
    [
        ("alice/my-model", True, True),
        ("my_model.v2", True, False),
        ("/no/such/folder", False, False),
        ("a/b/c", False, False),
        ("alice/model.", False, False),
        ("alice/my--model", False, False),
    ],
)
def test_repo_ids(name, repo_id, namespaced):
    assert is_repo_id(name) == repo_id and is_repo_id(name, namespaced=True) == namespaced


def test_push_without_a_token_says_how_to_log_in(monkeypatch, tiny_pipeline):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("hf_swin_ddpm.hub.upload.get_token", lambda: None)
    with pytest.raises(HubPublishError, match="No Hugging Face token found: log in with `hf auth login`"):
        push_to_hub(tiny_pipeline, DDPM_REPO)


# ---------------------------------------------------------------------------- over HTTP, in subprocesses


def run_python(code: str, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_no_token(result.stdout + result.stderr)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def assert_no_token(text: str) -> None:
    assert FAKE_TOKEN not in text and REJECTED_TOKEN not in text


def last_json_line(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def client_env(home: Path, endpoint: str, token: str | None = FAKE_TOKEN, **extra: str) -> dict[str, str]:
    """A huggingface_hub client environment: its own home (no login cache), cache and module cache."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING_FACE"))}
    env.update(
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        **extra,
    )
    if token:
        env["HF_TOKEN"] = token
    return env


@pytest.fixture(scope="module")
def hub():
    fake_hub = FakeHub({FAKE_TOKEN: USER}).start()
    fake_hub.add_repo(FOREIGN_REPO, owner="bob", files={"README.md": b"---\nlicense: mit\n---\n"})
    yield fake_hub
    fake_hub.stop()


@pytest.fixture(scope="module")
def published(tmp_path_factory, hub, tiny_segmentation, tiny_pipeline) -> SimpleNamespace:
    """Both tiny models saved with save_pretrained, their outputs recorded, then pushed in a subprocess (DDPM with
    `push_to_hub`, segmentation with `hf-swin-ddpm push`) and loaded back from the Hub by repo id with the package."""
    work = tmp_path_factory.mktemp("published")
    model, processor = tiny_segmentation
    model.save_pretrained(work / "seg_source")
    processor.save_pretrained(work / "seg_source")
    tiny_pipeline.save_pretrained(work / "ddpm_source")
    image = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    torch.save(image, work / "image.pt")
    with torch.no_grad():
        torch.save(model(**processor(image, return_tensors="pt")).logits, work / "logits.pt")
    output = sample(tiny_pipeline)
    torch.save(output.images, work / "samples.pt")
    torch.save(output.trajectory_samples, work / "trajectory.pt")
    example_image().save(work / "example_input.png")
    seg_fields = {
        "datasets": ["scene_parse_150"],
        "mean_iou": 0.25,
        "hyperparameters": {"steps": 3},
        "example_input": "example_input.png",
    }
    (work / "seg_card.json").write_text(json.dumps(seg_fields))

    result = run_python(
        COMPARE_OUTPUTS
        + f"""
from hf_swin_ddpm.cli import main
from hf_swin_ddpm.hub import load_saved, push_to_hub, update_segmentation_card_results
from huggingface_hub import snapshot_download

pipeline, _ = load_saved("ddpm_source")
pipeline.set_progress_bar_config(disable=True)
ddpm_url = push_to_hub(pipeline, "{DDPM_REPO}", commit_message="Tiny DDPM", sample_steps={GRID_STEPS},
                       datasets=["cifar10"], bits_per_dim=7.5)
ddpm_url_again = push_to_hub(pipeline, "{DDPM_REPO}", commit_message="Unchanged", sample_steps={GRID_STEPS},
                             datasets=["cifar10"], bits_per_dim=7.5)
bare_url = push_to_hub(pipeline, "tiny-bare", example_image=False)
update_segmentation_card_results("seg_source", {{"mIoU": 0.3, "aAcc": 0.8, "per_class": {{"a": {{"IoU": 0.3}}}},
    "num_images": 2, "scale": [64, 64], "protocol": {{"mode": "whole"}}}}, "scene_parse_150", "test")
cli_status = main(["push", "seg_source", "{SEG_REPO}", "--private", "--card_fields", "seg_card.json",
                   "--commit_message", "Tiny SwinFPN"])
"""
        + LOAD_WITH_THE_PACKAGE
        + f"""
snapshots = [snapshot_download(repo, cache_dir="fresh_cache") for repo in ("{SEG_REPO}", "{DDPM_REPO}")]
print(json.dumps({{"ddpm_url": ddpm_url, "ddpm_url_again": ddpm_url_again, "bare_url": bare_url,
                  "cli_status": cli_status, "loaded": loaded, "snapshots": snapshots}}))
""",
        cwd=work,
        env=client_env(work / "home", hub.endpoint),
    )
    return SimpleNamespace(work=work, result=result, report=last_json_line(result))


def test_push_uploads_the_save_for_hub_folder(published, hub, tmp_path, tiny_pipeline):
    report = published.report
    ddpm_repo, seg_repo = hub.repos[DDPM_REPO], hub.repos[SEG_REPO]
    assert report["ddpm_url"] == f"{hub.endpoint}/{DDPM_REPO}/commit/{ddpm_repo.head.oid}"
    assert report["cli_status"] == 0
    assert report["ddpm_url_again"] == report["ddpm_url"] and len(ddpm_repo.commits) == 2  # nothing changed: no commit
    bare_repo = hub.repos[f"{USER}/tiny-bare"]  # a bare name lands in the token's namespace
    assert report["bare_url"] == f"{hub.endpoint}/{USER}/tiny-bare/commit/{bare_repo.head.oid}"
    assert f'from_pretrained("{USER}/tiny-bare")' in bare_repo.head.files["README.md"].decode()
    assert f"Pushed seg_source to {SEG_REPO}: {hub.endpoint}/{SEG_REPO}/commit/" in published.result.stdout
    assert ddpm_repo.head.message == "Tiny DDPM" and seg_repo.head.message == "Tiny SwinFPN"
    assert seg_repo.private and not ddpm_repo.private
    assert set(ddpm_repo.head.files) == DDPM_FILES | {".gitattributes"}
    assert set(seg_repo.head.files) == SEG_FILES | {".gitattributes"}
    assert hub.unhandled == []

    local = save_for_hub(
        tiny_pipeline,
        tmp_path / "ddpm",
        repo_id=DDPM_REPO,
        sample_steps=GRID_STEPS,
        datasets=["cifar10"],
        bits_per_dim=7.5,
    )
    for name in DDPM_FILES:  # identical although one was saved from the loaded folder, the other from the original
        assert ddpm_repo.head.files[name] == (local / name).read_bytes(), name
    assert b"_name_or_path" not in b"".join(ddpm_repo.head.files[name] for name in DDPM_FILES if name.endswith("json"))

    seg_card = ModelCard(seg_repo.head.files["README.md"].decode())
    assert seg_card.data.eval_results[0].metric_value == 0.25 and seg_card.data.datasets == ["scene_parse_150"]
    # what `evaluate-seg --update_card` wrote into the local card after training is pushed with it
    results = {(entry.metric_type, entry.dataset_split): entry.metric_value for entry in seg_card.data.eval_results}
    assert results == {("mean_iou", "validation"): 0.25, ("mean_iou", "test"): 0.3, ("pixel_accuracy", "test"): 0.8}
    assert "## Evaluation on scene_parse_150 (test)" in seg_card.text
    assert f'from_pretrained("{SEG_REPO}", trust_remote_code=True)' in seg_card.text
    for repo in (ddpm_repo, seg_repo):
        assert not any(path.endswith(".bin") for path in repo.head.files)
        assert_no_token("".join(content.decode("latin-1") for content in repo.head.files.values()))


def test_download_into_a_fresh_cache_gives_the_pushed_bytes(published, hub):
    for snapshot, repo_id in zip(published.report["snapshots"], (SEG_REPO, DDPM_REPO)):
        folder = published.work / snapshot
        assert folder.parts[-3] == "models--" + repo_id.replace("/", "--")
        files = hub.repos[repo_id].head.files
        assert files_in(folder) == set(files)
        for name, content in files.items():
            assert (folder / name).read_bytes() == content, name


def test_loads_by_repo_id_with_the_package(published):
    loaded = published.report["loaded"]
    assert loaded["logits_equal"] and loaded["samples_equal"] and loaded["trajectory_equal"]
    assert loaded["model_module"].startswith("hf_swin_ddpm.") and loaded["processor_class"] == "SwinFPNImageProcessor"
    assert loaded["pipeline_module"] == "hf_swin_ddpm.diffusion.pipeline_ddpm_paper"
    assert loaded["scheduler_module"] == "hf_swin_ddpm.diffusion.scheduling_ddpm_paper"


def test_loads_by_repo_id_as_remote_code_without_the_package(published, hub, tmp_path):
    for name in ("image.pt", "logits.pt", "samples.pt", "trajectory.pt"):
        shutil.copy(published.work / name, tmp_path / name)
    result = run_python(
        BLOCK_PACKAGE
        + COMPARE_OUTPUTS
        + f"""
try:
    import hf_swin_ddpm
    raise SystemExit("the package should not be importable here")
except ImportError:
    pass
from diffusers import DiffusionPipeline
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
loaded = compare(
    AutoModelForSemanticSegmentation.from_pretrained("{SEG_REPO}", trust_remote_code=True),
    AutoImageProcessor.from_pretrained("{SEG_REPO}", trust_remote_code=True),
    DiffusionPipeline.from_pretrained("{DDPM_REPO}", trust_remote_code=True),
)
print(json.dumps(loaded))
""",
        cwd=tmp_path,
        env=client_env(tmp_path / "home", hub.endpoint),
    )
    loaded = last_json_line(result)
    assert loaded["logits_equal"] and loaded["samples_equal"] and loaded["trajectory_equal"]
    assert loaded["model_module"].startswith("transformers_modules.")
    assert loaded["processor_class"] == "SwinFPNImageProcessor"
    assert loaded["pipeline_module"].startswith("diffusers_modules.")
    assert loaded["scheduler_module"].startswith("diffusers_modules.")
    assert hub.unhandled == []


def test_loads_by_repo_id_offline_from_the_cache(published, tmp_path):
    result = run_python(
        COMPARE_OUTPUTS + LOAD_WITH_THE_PACKAGE + "print(json.dumps(loaded))",
        cwd=published.work,
        env=client_env(published.work / "home", "http://127.0.0.1:9", HF_HUB_OFFLINE="1"),
    )
    loaded = last_json_line(result)
    assert loaded["logits_equal"] and loaded["samples_equal"] and loaded["trajectory_equal"]


def one_error_line(stderr: str) -> str:
    """The CLI's error: one line, the last one, no traceback (loading the folder may draw progress bars before it)."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("hf-swin-ddpm push: error: ")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def test_errors_are_one_clear_line_without_the_token(published, hub, tmp_path):
    result = run_python(
        f"""
import contextlib, io, json, os, traceback
from hf_swin_ddpm.cli import main
from hf_swin_ddpm.hub import HubPublishError, load_saved, push_to_hub

def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["push", *args])
    return {{"status": status, "stderr": err.getvalue()}}

report = {{"no_token": cli("ddpm_source", "{USER}/new-model")}}
os.environ["HF_TOKEN"] = "{REJECTED_TOKEN}"
report["rejected_token"] = cli("ddpm_source", "{USER}/new-model")
os.environ["HF_TOKEN"] = "{FAKE_TOKEN}"
report["forbidden"] = cli("ddpm_source", "{FOREIGN_REPO}", "--num_inference_steps", "1")
pipeline, _ = load_saved("ddpm_source")
try:
    push_to_hub(pipeline, "{FOREIGN_REPO}", token="{FAKE_TOKEN}", example_image=False)
except HubPublishError:
    report["traceback"] = traceback.format_exc()
print(json.dumps(report))
""",
        cwd=published.work,
        env=client_env(tmp_path / "home", hub.endpoint, token=None),
    )
    report = last_json_line(result)
    expected = {
        "no_token": "error: No Hugging Face token found: log in with `hf auth login`, or set HF_TOKEN",
        "rejected_token": "error: The Hub rejected the token (401 Unauthorized)",
        "forbidden": f"error: No write access to {FOREIGN_REPO} (403 Forbidden)",
    }
    for case, message in expected.items():
        assert report[case]["status"] == 2, case
        assert message in one_error_line(report[case]["stderr"]), case
    assert "push to a repository in your own namespace" in report["forbidden"]["stderr"]
    assert report["traceback"].count("Traceback") == 1 and "During handling" not in report["traceback"]
    assert len(hub.repos[FOREIGN_REPO].commits) == 1  # nothing was written


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_hub_is_one_clear_line(published, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    command = shutil.which("hf-swin-ddpm", path=str(Path(sys.executable).parent))
    arguments = [command] if command else [sys.executable, "-m", "hf_swin_ddpm.cli"]
    result = subprocess.run(
        [*arguments, "push", "seg_source", SEG_REPO],
        cwd=published.work,
        env=client_env(tmp_path / "home", endpoint),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_no_token(result.stdout + result.stderr)
    assert result.returncode == 2
    error = one_error_line(result.stderr)
    assert f"Could not reach the Hugging Face Hub at {endpoint}" in error and "network connection" in error
