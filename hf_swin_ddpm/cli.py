"""The `hf-swin-ddpm` command line.

    hf-swin-ddpm convert-swin SWIN_CHECKPOINT OUTPUT_DIR [--num-labels N | --id2label FILE.json] [--image-size S]
    hf-swin-ddpm sample PIPELINE_DIR OUTPUT.png [--num-images N] [--steps S] [--seed K]
    hf-swin-ddpm train-ddpm --dataset_name digits --output_dir DIR [...]   (the flags of train_ddpm --help)
    hf-swin-ddpm train-seg --dataset_name shapes --output_dir DIR [...]    (the flags of train_segmentation --help)

Bad arguments or files print one line naming the problem and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _load_id2label(args: argparse.Namespace) -> dict[int, str]:
    if args.id2label:
        path = Path(args.id2label)
        if not path.is_file():
            raise CLIError(f'--id2label: file {path} does not exist; give a JSON object such as {{"0": "road"}}.')
        try:
            mapping = json.loads(path.read_text())
            return {int(k): str(v) for k, v in mapping.items()}
        except (ValueError, AttributeError) as error:
            raise CLIError(f"--id2label: {path} is not a JSON object of class id -> name ({error}).") from None
    if args.num_labels < 1:
        raise CLIError(f"--num-labels: expected an integer >= 1, got {args.num_labels}.")
    return {i: f"class_{i}" for i in range(args.num_labels)}


def convert_swin(args: argparse.Namespace) -> None:
    """Start a SwinFPN segmentation model from a transformers Swin checkpoint and save it with its processor."""
    from . import SwinFPNForSegmentation, SwinFPNImageProcessor

    id2label = _load_id2label(args)
    model = SwinFPNForSegmentation.from_pretrained_backbone(args.checkpoint, id2label=id2label)
    size = args.image_size or model.config.image_size
    output = Path(args.output_dir)
    model.save_pretrained(output)
    SwinFPNImageProcessor(size={"height": size, "width": size}).save_pretrained(output)
    print(f"Saved SwinFPNForSegmentation ({len(id2label)} classes) and its image processor to {output}")


def sample(args: argparse.Namespace) -> None:
    """Draw samples from a saved DDPMPaperPipeline (Algorithm 2) and save them as one image grid."""
    import torch

    from . import DDPMPaperPipeline

    folder = Path(args.pipeline_dir)
    if not (folder / "model_index.json").is_file():
        raise CLIError(f"{folder}: no model_index.json; expected a folder saved by DDPMPaperPipeline.save_pretrained.")
    if not 1 <= args.num_images <= 256:
        raise CLIError(f"--num-images: expected 1..256, got {args.num_images}.")
    pipeline = DDPMPaperPipeline.from_pretrained(folder)
    generator = torch.Generator().manual_seed(args.seed)
    images = pipeline(batch_size=args.num_images, generator=generator, num_inference_steps=args.steps).images
    _save_grid(images, Path(args.output))
    print(f"Saved {len(images)} samples ({args.steps} steps) to {args.output}")


def _save_grid(images: list, path: Path) -> None:
    from PIL import Image

    columns = min(len(images), 8)
    rows = (len(images) + columns - 1) // columns
    width, height = images[0].size
    grid = Image.new(images[0].mode, (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image, ((index % columns) * width, (index // columns) * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


# Subcommands that hand the rest of the command line to a training script's `main`.
TRAINING_COMMANDS: dict[str, str] = {
    "train-ddpm": "hf_swin_ddpm.training.train_ddpm",
    "train-seg": "hf_swin_ddpm.training.train_segmentation",
}


def run_training_command(command: str, argv: Sequence[str]) -> int:
    """Run the training script of `command` with the rest of the command line; returns its exit status."""
    return importlib.import_module(TRAINING_COMMANDS[command]).main(list(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-swin-ddpm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert-swin", help=convert_swin.__doc__)
    convert.add_argument("checkpoint", help="transformers Swin checkpoint: Hub id or folder")
    convert.add_argument("output_dir")
    convert.add_argument("--num-labels", type=int, default=2)
    convert.add_argument("--id2label", help="JSON file mapping class ids to names (overrides --num-labels)")
    convert.add_argument("--image-size", type=int, default=None)
    convert.set_defaults(handler=convert_swin)

    sampler = commands.add_parser("sample", help=sample.__doc__)
    sampler.add_argument("pipeline_dir")
    sampler.add_argument("output")
    sampler.add_argument("--num-images", type=int, default=16)
    sampler.add_argument("--steps", type=int, default=1000)
    sampler.add_argument("--seed", type=int, default=0)
    sampler.set_defaults(handler=sample)
    for name, module in TRAINING_COMMANDS.items():
        commands.add_parser(name, add_help=False, help=f"train with accelerate (python -m {module}; {name} --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TRAINING_COMMANDS:
        return run_training_command(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except (CLIError, ValueError, OSError) as error:
        print(f"hf-swin-ddpm {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
