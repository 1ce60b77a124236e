"""Retrain the two demo models on CPU (``make demo-models``): a DDPM on ``mnist``, a SwinFPN on ``digit_scenes``.

    python -m hf_swin_ddpm.training.demo_models [--output_root demo_models] [--only ddpm|segmentation] [--force]

They land in ``demo_models/ddpm-mnist`` and ``demo_models/swin-fpn-digit-scenes``, where the repository ships them
(so ``make demo`` serves at once). A folder that already holds a complete saved model (weights, configs and
``all_results.json``) is left as it is unless ``--force`` (``make demo-models``), which trains it again from scratch;
an unfinished run, with or without ``--force``, resumes from its latest checkpoint. The recipes below record every
flag and the measured training time of each model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUTPUT_ROOT = Path("demo_models")


@dataclass(frozen=True)
class DemoRecipe:
    """One demo model: its folder name, the training script, its flags, the files that make it complete, the
    measured training time (minutes on the 2-core machine named in docs/benchmarks.md, shared with other jobs: an
    idle machine is faster) and, for a segmenter, the test scale recorded in its image processor."""

    folder: str
    module: str
    flags: tuple[str, ...]
    required_files: tuple[str, ...]
    minutes: int
    test_scale: tuple[int, int] | None = None

    def flag(self, name: str) -> str:
        """The value of the recipe's ``--name=value`` flag."""
        return next(flag.split("=", 1)[1] for flag in self.flags if flag.startswith(f"--{name}="))


DEMO_RECIPES: dict[str, DemoRecipe] = {
    "ddpm": DemoRecipe(
        folder="ddpm-mnist",
        module="hf_swin_ddpm.training.train_ddpm",
        flags=(
            "--dataset_name=mnist",
            "--model_config=tiny",
            "--resolution=28",  # 28 -> 14 -> 7: three levels, attention at 14x14
            "--train_batch_size=32",
            "--max_train_steps=38000",  # FID/floor by training step in docs/benchmarks.md
            "--learning_rate=5e-4",
            "--lr_scheduler=warmup_stable_decay",  # constant to step 30,000, then a cosine decay to 0
            "--lr_warmup_steps=200",
            "--lr_decay_steps=8000",
            "--dropout=0.0",
            "--ema_decay=0.9995",
            "--eval_bpd_timesteps=100",
            "--eval_batch_size=50",
            "--save_images_steps=6000",
            "--ddpm_num_inference_steps=1000",
            "--checkpointing_steps=1000",
            "--checkpoints_total_limit=1",
            "--logging_steps=50",
        ),
        required_files=("model_index.json", "unet/config.json", "scheduler/scheduler_config.json", "all_results.json"),
        minutes=165,
    ),
    "segmentation": DemoRecipe(
        folder="swin-fpn-digit-scenes",
        module="hf_swin_ddpm.training.train_segmentation",
        flags=(
            "--dataset_name=digit_scenes",
            "--model_config=tiny-48",
            "--resolution=96",
            "--train_batch_size=16",
            "--max_train_steps=7000",
            "--learning_rate=2e-3",
            "--scale_range",  # digits from 18 to 72 pixels: wider than the canvases' 24-48
            "0.75",
            "1.5",
            "--eval_batch_size=50",
            "--checkpointing_steps=1000",
            "--checkpoints_total_limit=1",
            "--logging_steps=50",
        ),
        required_files=("config.json", "model.safetensors", "preprocessor_config.json", "all_results.json"),
        minutes=45,
        # mmseg's test scale (keep-ratio (long, short)): digits 1.25x as large as drawn, chosen on validation canvases
        # (seed 1, the training digits; 200 canvases: mean IoU 0.756 at 96, 0.776 at 108, 0.792 at 120, 0.749 at 132)
        test_scale=(480, 120),
    ),
}


def is_complete(folder: Path, recipe: DemoRecipe) -> bool:
    """Whether ``folder`` holds every file of a finished run of ``recipe`` (weights included)."""
    if not all((folder / name).is_file() for name in recipe.required_files):
        return False
    weights = ("unet/diffusion_pytorch_model.safetensors",) if recipe.folder.startswith("ddpm") else ()
    return all((folder / name).is_file() for name in weights)


def _script_main(module: str) -> Callable[[Sequence[str]], int]:
    """The ``main`` of a training script module."""
    import importlib

    return importlib.import_module(module).main


def train_demo(name: str, output_root: Path, force: bool = False) -> Path:
    """Train demo model ``name`` into ``output_root/<folder>`` unless it is already complete; returns the folder.

    With ``force`` a complete model is trained again from scratch; an unfinished earlier run resumes from its latest
    checkpoint either way.
    """
    recipe = DEMO_RECIPES[name]
    folder = output_root / recipe.folder
    if is_complete(folder, recipe):
        if not force:
            print(f"{folder}: already trained, skipping (use --force to retrain)")
            return folder
        shutil.rmtree(folder)
    print(f"Training {folder} (it took {recipe.minutes} minutes on 2 shared CPU cores) ...", flush=True)
    start = time.perf_counter()
    argv = [*recipe.flags, f"--output_dir={folder}", "--resume_from_checkpoint=latest"]
    status = _script_main(recipe.module)(argv)
    if status != 0:
        raise SystemExit(status)
    if recipe.test_scale is not None:
        record_test_scale(folder, recipe)
    print(f"{folder}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def record_test_scale(folder: Path, recipe: DemoRecipe) -> None:
    """Record ``recipe.test_scale`` in the segmenter's image processor (the default scale of ``evaluate-seg``; its
    short side becomes the processor's square resize, which the Space and ``pipeline()`` use), then
    evaluate the test split at it with ``evaluate-seg --update_card``: the card gets the per-class table."""
    from ..cli import main as cli_main
    from ..swin_fpn import SwinFPNImageProcessor

    processor = SwinFPNImageProcessor.from_pretrained(folder)
    processor.test_scale = list(recipe.test_scale)
    short_side = min(recipe.test_scale)  # the fixed-size resize of the processor (the Space, pipelines) likewise
    processor.size = {"height": short_side, "width": short_side}
    processor.save_pretrained(folder)
    dataset = recipe.flag("dataset_name")
    output = folder / "test_results.json"
    argv = ["evaluate-seg", str(folder), f"--dataset_name={dataset}", "--split=test", f"--output={output}"]
    status = cli_main([*argv, "--update_card"])
    if status != 0:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Train the demo models that are not trained yet (all of them with ``--force``)."""
    parser = argparse.ArgumentParser(prog="demo_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_root", type=Path, default=DEFAULT_OUTPUT_ROOT)
    parser.add_argument("--only", choices=sorted(DEMO_RECIPES), help="Train only this model.")
    parser.add_argument("--force", action="store_true", help="Retrain even if the model is there.")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(DEMO_RECIPES)
    for name in names:
        train_demo(name, args.output_root, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
