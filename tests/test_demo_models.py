"""The demo models that ship in demo_models/: complete, small, trained by their recorded recipe, and trained."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_swin_ddpm import DDPMPaperPipeline, SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.data import DIGIT_SCENES_ID2LABEL, embedded_dataset
from hf_swin_ddpm.diffusion.unets import paper_unet, paper_unet_config
from hf_swin_ddpm.evaluation import evaluate_segmentation
from hf_swin_ddpm.training.demo_models import DEMO_RECIPES, is_complete

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ROOT = REPO_ROOT / "demo_models"
MAX_SHIPPED_BYTES = 25 * 2**20
SCRIPT_NAMES = {
    "hf_swin_ddpm.training.train_ddpm": "train_ddpm",
    "hf_swin_ddpm.training.train_segmentation": "train_segmentation",
}


def _shipped_files(folder: Path) -> list[Path]:
    """The files git tracks in a demo folder (checkpoints, logs and intermediate samples stay local)."""
    ignored = ("checkpoint-", "logs", "samples")
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(ignored) for part in path.relative_to(folder).parts)
    ]


def _as_json(config: dict) -> dict:
    """A config with its tuples as the lists a saved config.json holds."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()}


@pytest.mark.parametrize("name", sorted(DEMO_RECIPES))
def test_shipped_demo_model_is_complete_and_was_trained_by_its_recipe(name):
    recipe = DEMO_RECIPES[name]
    folder = DEMO_ROOT / recipe.folder
    assert is_complete(folder, recipe), f"{folder} is incomplete: run make demo-models"
    card = (folder / "README.md").read_text()
    command = re.search(r"^\| command \| (.+) \|$", card, flags=re.MULTILINE).group(1)
    expected = [*recipe.flags, f"--output_dir=demo_models/{recipe.folder}", "--resume_from_checkpoint=latest"]
    assert command.split() == [SCRIPT_NAMES[recipe.module], *expected]
    assert f"| optimizer steps | {recipe.flag('max_train_steps')} |" in card


def test_shipped_demo_models_fit_the_size_budget():
    total = sum(
        path.stat().st_size for recipe in DEMO_RECIPES.values() for path in _shipped_files(DEMO_ROOT / recipe.folder)
    )
    assert 0 < total <= MAX_SHIPPED_BYTES


def test_demo_ddpm_is_a_28x28_mnist_model_that_denoises_better_than_its_initialisation():
    recipe = DEMO_RECIPES["ddpm"]
    pipeline = DDPMPaperPipeline.from_pretrained(DEMO_ROOT / recipe.folder)
    unet = pipeline.unet.eval()
    resolution = int(recipe.flag("resolution"))
    preset = recipe.flag("model_config")
    expected = paper_unet_config(preset, sample_size=resolution, dropout=float(recipe.flag("dropout")))
    assert _as_json({key: unet.config[key] for key in expected}) == _as_json(expected)
    digits = embedded_dataset("mnist", "test", num_examples=64)
    x0 = (
        torch.from_numpy(np.stack([np.asarray(image) for image in digits["image"]])).float().div(127.5).sub(1)[:, None]
    )
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.tensor([50, 250, 500] * 22)[: len(x0)]
    noisy = pipeline.scheduler.add_noise(x0, noise, timesteps)  # Eq. 4
    torch.manual_seed(0)
    untrained = paper_unet(preset, sample_size=resolution).eval()
    with torch.no_grad():
        trained_loss = torch.mean((unet(noisy, timesteps).sample - noise) ** 2).item()
        untrained_loss = torch.mean((untrained(noisy, timesteps).sample - noise) ** 2).item()
    assert trained_loss < 0.25 * untrained_loss, (trained_loss, untrained_loss)
    images = pipeline(batch_size=2, num_inference_steps=2, generator=generator, output_type="np").images
    assert images.shape == (2, resolution, resolution, 1)


def test_demo_segmenter_reads_held_out_digit_scenes():
    recipe = DEMO_RECIPES["segmentation"]
    folder = DEMO_ROOT / recipe.folder
    model = SwinFPNForSegmentation.from_pretrained(folder).eval()
    processor = SwinFPNImageProcessor.from_pretrained(folder)
    assert model.config.id2label == DIGIT_SCENES_ID2LABEL
    assert model.config.image_size == int(recipe.flag("resolution"))
    assert processor.test_scale == list(recipe.test_scale) and processor.size["height"] == min(recipe.test_scale)
    scenes = embedded_dataset("digit_scenes", "test", num_examples=40)
    with torch.no_grad():
        results = evaluate_segmentation(
            model,
            scenes,
            scale=processor.test_scale,
            mean=processor.image_mean,
            std=processor.image_std,
            progress=False,
        )
    assert results["mIoU"] >= 0.7, results["mIoU"]  # the bar on the whole test split is 0.75 (docs/benchmarks.md)
