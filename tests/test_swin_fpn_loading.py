"""Loading SwinFPN: from transformers Swin checkpoints (v5 and legacy names, Hub cache layout) and as remote code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from released_checkpoints import LEGACY_SWIN_NAMES as LEGACY_NAMES
from remote_code_support import BLOCK_PACKAGE
from safetensors.torch import save_file
from transformers import SwinBackbone, SwinConfig, SwinForImageClassification, SwinModel

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor

GEOMETRY = dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=5, patch_size=4)
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def swin_backbone() -> SwinBackbone:
    return randomised(SwinBackbone(SwinConfig(**GEOMETRY, out_features=STAGES, drop_path_rate=0.0)))


def assert_backbone_matches(model: SwinFPNForSegmentation, reference: SwinBackbone) -> None:
    pixel_values = torch.randn(2, 3, 45, 62)
    with torch.no_grad():
        expected = reference(pixel_values).feature_maps
        actual = model.eval().backbone(pixel_values)
    for e, a in zip(expected, actual):
        assert (e - a).abs().max().item() < 1e-4


def test_from_swin_backbone_checkpoint(tmp_path, swin_backbone):
    swin_backbone.save_pretrained(tmp_path)
    model = SwinFPNForSegmentation.from_pretrained_backbone(tmp_path, num_labels=4)
    assert model.config.num_labels == 4 and model.config.window_size == 5 and model.config.embed_dim == 16
    assert model.config.backbone_checkpoint == str(tmp_path)
    assert_backbone_matches(model, swin_backbone)


def test_from_legacy_key_names(tmp_path, swin_backbone):
    state_dict = {}
    for key, tensor in swin_backbone.state_dict().items():
        for new, old in LEGACY_NAMES:
            key = key.replace(new, old)
        state_dict[key] = tensor.contiguous()
    assert any("attention.self.query" in key for key in state_dict)
    save_file(state_dict, tmp_path / "model.safetensors", metadata={"format": "pt"})
    swin_backbone.config.save_pretrained(tmp_path)
    model = SwinFPNForSegmentation.from_pretrained_backbone(tmp_path, num_labels=2)
    assert_backbone_matches(model, swin_backbone)


@pytest.mark.parametrize("checkpoint_class", [SwinModel, SwinForImageClassification])
def test_from_checkpoints_without_stage_norms(tmp_path, checkpoint_class):
    source = randomised(checkpoint_class(SwinConfig(**GEOMETRY)))
    source.save_pretrained(tmp_path)
    model = SwinFPNForSegmentation.from_pretrained_backbone(tmp_path, num_labels=2)
    swin = source if checkpoint_class is SwinModel else source.swin
    torch.testing.assert_close(
        model.backbone.stages[1].blocks[1].attn.qkv.weight,
        torch.cat([getattr(swin.encoder.layers[1].blocks[1].attention, f"{n}_proj").weight for n in "qkv"]),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        model.backbone.patch_embed.projection.weight, swin.embeddings.patch_embeddings.projection.weight
    )
    for norm in model.backbone.stage_norms:  # fresh LayerNorms: the checkpoint has none
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_geometry_overrides_that_contradict_the_checkpoint_raise(tmp_path, swin_backbone):
    swin_backbone.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="window_size"):
        SwinFPNForSegmentation.from_pretrained_backbone(tmp_path, window_size=7)


def test_convolutional_stem_cannot_take_a_checkpoint_s_linear_embedding(tmp_path, swin_backbone):
    swin_backbone.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="linear patch embedding"):
        SwinFPNForSegmentation.from_pretrained_backbone(tmp_path, patch_embedding_type="convolutional")


def test_non_swin_checkpoint_raises(tmp_path):
    SwinFPNConfig(num_labels=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="expected a transformers Swin"):
        SwinFPNForSegmentation.from_pretrained_backbone(tmp_path)


def make_hub_cache_snapshot(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay `folder` out as huggingface_hub's cache does for `repo_id` at revision main."""
    revision = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def run_python(code: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_from_hub_repo_id_in_the_offline_cache(tmp_path, swin_backbone):
    swin_backbone.save_pretrained(tmp_path / "checkpoint")
    make_hub_cache_snapshot(tmp_path / "cache", "microsoft/swin-tiny-patch4-window7-224", tmp_path / "checkpoint")
    torch.manual_seed(1)
    pixel_values = torch.randn(1, 3, 37, 41)
    torch.save(pixel_values, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(swin_backbone(pixel_values).feature_maps[-1], tmp_path / "expected.pt")
    output = run_python(
        """
        import torch
        from hf_swin_ddpm import SwinFPNForSegmentation
        model = SwinFPNForSegmentation.from_pretrained_backbone("microsoft/swin-tiny-patch4-window7-224", num_labels=3)
        with torch.no_grad():
            actual = model.eval().backbone(torch.load("x.pt"))[-1]
        print((actual - torch.load("expected.pt")).abs().max().item(), model.config.backbone_checkpoint)
        """,
        {"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"},
        tmp_path,
    )
    difference, checkpoint = output.split()
    assert float(difference) < 1e-4
    assert checkpoint == "microsoft/swin-tiny-patch4-window7-224"


def test_saved_folder_loads_as_remote_code_without_the_package(tmp_path):
    torch.manual_seed(0)
    config = SwinFPNConfig(
        **GEOMETRY, fpn_hidden_size=16, head_hidden_size=8, head_num_groups=4, id2label={0: "bg", 1: "thing"}
    )
    model = SwinFPNForSegmentation(config).eval()
    processor = SwinFPNImageProcessor(size={"height": 48, "width": 48})
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_swin_fpn.SwinFPNForSegmentation"
    for name in (
        "configuration_swin_fpn.py",
        "modeling_swin_fpn.py",
        "image_processing_swin_fpn.py",
        "convert_swin_fpn.py",
        "cpu_kernels_swin_fpn.py",
    ):
        assert (folder / name).exists(), name
        assert "hf_swin_ddpm" not in (folder / name).read_text()

    image = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    torch.save(image, tmp_path / "image.pt")
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).logits
    torch.save(expected, tmp_path / "expected.pt")
    output = run_python(
        BLOCK_PACKAGE
        + """
import torch
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
try:
    import hf_swin_ddpm
    raise SystemExit("the package should not be importable here")
except ImportError:
    pass
model = AutoModelForSemanticSegmentation.from_pretrained("model", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("model", trust_remote_code=True)
with torch.no_grad():
    logits = model(**processor(torch.load("image.pt"), return_tensors="pt")).logits
print(type(model).__module__, type(processor).__name__, torch.equal(logits, torch.load("expected.pt")))
""",
        {},
        tmp_path,
    )
    module, processor_name, equal = output.split()
    assert "hf_swin_ddpm" not in module and module.startswith("transformers_modules")
    assert processor_name == "SwinFPNImageProcessor"
    assert equal == "True"


def test_hidden_states_and_attentions_are_swin_backbones(tmp_path, swin_backbone):
    """transformers' conventions: the embedding + each stage before merging, and each stage's last-block attention."""
    swin_backbone.save_pretrained(tmp_path)
    model = SwinFPNForSegmentation.from_pretrained_backbone(tmp_path, num_labels=4).eval()
    pixel_values = torch.randn(2, 3, 40, 62)  # padded to whole patches and windows, then cropped, in both
    swin_backbone.set_attn_implementation("eager")  # both record attention probabilities with the eager kernel
    try:
        with torch.no_grad():
            expected = swin_backbone(pixel_values, output_hidden_states=True, output_attentions=True)
    finally:
        swin_backbone.set_attn_implementation("sdpa")
    with torch.no_grad():
        actual = model(pixel_values, output_hidden_states=True, output_attentions=True)
    assert len(actual.hidden_states) == len(expected.hidden_states) == model.config.num_hidden_layers + 1
    for e, a in zip(expected.hidden_states, actual.hidden_states):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
    assert len(actual.attentions) == len(expected.attentions) == model.config.num_hidden_layers
    for e, a in zip(expected.attentions, actual.attentions):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
