"""The `hf-swin-ddpm` command line.

    hf-swin-ddpm convert-swin SWIN_CHECKPOINT OUTPUT_DIR [--num_labels N | --id2label FILE.json] [--image_size S]
    hf-swin-ddpm convert-upernet UPERNET_REPO OUTPUT_DIR [--allow_pickle]
    hf-swin-ddpm sample MODEL OUTPUT.png [--num_samples N] [--num_inference_steps S] [--sampler paper|ddpm|ddim|
        dpmsolver++|euler] [--variance fixed_large|fixed_small] [--seed K] [--bf16]
    hf-swin-ddpm inpaint MODEL IMAGE MASK OUTPUT.png [--num_inference_steps S] [--jump_length J] [--jump_n_sample R]
    hf-swin-ddpm img2img MODEL IMAGE OUTPUT.png [--strength 0.5] [--num_inference_steps S]
    hf-swin-ddpm train-ddpm --dataset_name digits --output_dir DIR [...]   (the flags of train_ddpm --help)
    hf-swin-ddpm train-seg --dataset_name shapes --output_dir DIR [...]    (the flags of train_segmentation --help)
    hf-swin-ddpm evaluate-seg MODEL --dataset_name NAME | --train_data_dir DIR [--split S] [--scale 2048 512]
        [--mode whole|slide --crop_size 512 --stride 341] [--tta | --scales R ... --flip] [--do_reduce_labels]
        [--output eval_results.json] [--update_card]
    hf-swin-ddpm segment MODEL IMAGE OUT.png [--crop_size 512 --stride 341] [--window_batch_size B] [--max_pixels N]
    hf-swin-ddpm push FOLDER REPO_ID [--private] [--commit_message MESSAGE] [--card_fields FILE.json]
        [--example_image IMAGE] [--num_inference_steps S]
    hf-swin-ddpm evaluate-ddpm MODEL --reference DATASET[:SPLIT] | FOLDER | STATS.npz --num_samples N
        --num_inference_steps S --features classifier|inception [--inception_weights PATH_OR_REPO] --batch_size B
        --seed K [--bf16] --output eval_results.json [--update_card] [--samples_dir DIR [--overwrite]]
    hf-swin-ddpm evaluate-ddpm --from_samples DIR_OR_NPZ --reference ...   (score images made by anything)
    hf-swin-ddpm sweep-ddpm MODEL --reference ... --num_inference_steps 10 20 50 --sampler ddim dpmsolver++
        [--num_samples N] [--output_dir sweep]
    hf-swin-ddpm rate-distortion MODEL --dataset DATASET[:SPLIT] --max_eval_samples N [--output_dir DIR]
    hf-swin-ddpm export-onnx MODEL_DIR OUT_DIR [--opset 18]

Every flag is snake_case and means the same in every command: `--num_samples` images are generated,
`--max_eval_samples` images of a dataset are evaluated, `--num_inference_steps` sampling steps are taken,
`--allow_pickle` also reads pickled weights. The spellings of earlier releases (`--num-images`, `--steps`,
`--allow-pickle`, ...) are still accepted, hidden from --help.
Bad arguments or files print one line naming the problem and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .imaging import image_grid
from .safe_loading import check_model_folder, named_loading_errors, safetensors_only
from .training.arguments import KEEP_RATIO_SCALE

ALLOW_PICKLE_HELP = "also read pickled .bin weights (with torch.load(weights_only=True)); default: safetensors only"
BF16_HELP = "run the UNet under bfloat16 autocast (faster on CPUs with bf16)"


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
        raise CLIError(f"--num_labels: expected an integer >= 1, got {args.num_labels}.")
    return {i: f"class_{i}" for i in range(args.num_labels)}


def convert_swin(args: argparse.Namespace) -> None:
    """Start a SwinFPN segmentation model from a transformers Swin checkpoint and save it with its processor."""
    from . import SwinFPNForSegmentation, SwinFPNImageProcessor

    id2label = _load_id2label(args)
    if args.image_size is not None and args.image_size < 1:
        raise CLIError(f"--image_size: expected an integer >= 1, got {args.image_size}.")
    _check_model_source(args.checkpoint, "checkpoint")
    if Path(args.checkpoint).is_dir():
        check_model_folder(args.checkpoint, allow_pickle=args.allow_pickle)
    with named_loading_errors(args.checkpoint, "Swin checkpoint"):
        model = SwinFPNForSegmentation.from_pretrained_backbone(
            args.checkpoint, allow_pickle=args.allow_pickle, id2label=id2label
        )
    size = args.image_size or model.config.image_size
    output = Path(args.output_dir)
    model.save_pretrained(output)
    SwinFPNImageProcessor(size={"height": size, "width": size}).save_pretrained(output)
    print(f"Saved SwinFPNForSegmentation ({len(id2label)} classes) and its image processor to {output}")


def convert_upernet(args: argparse.Namespace) -> None:
    """Convert a transformers UperNetForSemanticSegmentation with a Swin backbone (folder or Hub repo id, e.g.
    openmmlab/upernet-swin-tiny) into a SwinFPN folder (UperNet head, remote code, model card) that loads without
    conversion."""
    from . import SwinFPNForSegmentation, SwinFPNImageProcessor
    from .hub import save_for_hub

    _check_model_source(args.repo, "REPO")
    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise CLIError(f"OUT_DIR: {output} is not an empty folder; give a new folder.")
    if Path(args.repo).is_dir():
        check_model_folder(args.repo, allow_pickle=args.allow_pickle)
    try:
        with named_loading_errors(args.repo, "UperNet checkpoint"):
            model = SwinFPNForSegmentation.from_pretrained_upernet(args.repo, allow_pickle=args.allow_pickle).eval()
            processor = SwinFPNImageProcessor.from_pretrained(args.repo)
    except (OSError, ValueError) as error:  # transformers' OSError, as named_loading_errors' ModelFileError
        if args.allow_pickle or "use_safetensors" not in str(error):
            raise
        raise CLIError(
            f"{args.repo}: no safetensors weights (the openmmlab/upernet-swin-* repos keep only pytorch_model.bin on "
            "main); add --allow_pickle to read the .bin with torch.load(weights_only=True)."
        ) from None
    save_for_hub(
        model,
        output,
        image_processor=processor,
        model_name=f"{args.repo.rstrip('/').rsplit('/', 1)[-1]} (SwinFPN)",
        training_data=f"The weights of `{args.repo}` (transformers' UperNetForSemanticSegmentation), converted "
        "unchanged to SwinFPNForSegmentation with its UperNet head by `hf-swin-ddpm convert-upernet`.",
        **_source_card_fields(args.repo),
    )
    print(
        f"Saved SwinFPNForSegmentation (UperNet head, {model.config.num_labels} classes) from {args.repo} to {output}"
    )


def _source_card_fields(repo: str) -> dict:
    """The source repository's licence (from its card's metadata, when it has a card) for the converted model's card."""
    from huggingface_hub import ModelCard, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    card_file = Path(repo) / "README.md"
    if not Path(repo).is_dir():
        try:
            card_file = Path(hf_hub_download(repo, "README.md"))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return {}
    if not card_file.is_file():
        return {}
    licence = ModelCard.load(card_file).data.license
    return {"license": licence} if isinstance(licence, str) else {}


def sample(args: argparse.Namespace) -> None:
    """Draw samples from a DDPM (a saved DDPMPaperPipeline or any DDPMPipeline: folder or Hub repo id) and save them as
    one image grid; `--sampler paper` runs the paper's Algorithm 2."""
    import torch

    if not 1 <= args.num_samples <= 256:
        raise CLIError(f"--num_samples: expected 1..256, got {args.num_samples}.")
    if args.num_inference_steps < 1:
        raise CLIError(f"--num_inference_steps: expected an integer >= 1, got {args.num_inference_steps}.")
    _check_image_output(Path(args.output))
    pipeline = _load_pipeline(args.pipeline_dir, args.allow_pickle, args.sampler, args.variance)
    _check_num_inference_steps(pipeline, args.num_inference_steps)
    generator = torch.Generator().manual_seed(args.seed)
    autocast_dtype = torch.bfloat16 if args.bf16 else None
    images = pipeline(
        batch_size=args.num_samples,
        generator=generator,
        num_inference_steps=args.num_inference_steps,
        autocast_dtype=autocast_dtype,
    ).images
    _save_grid(images, Path(args.output))
    steps = args.num_inference_steps
    sampler = type(pipeline.scheduler).__name__
    print(
        f"Saved {len(images)} samples ({sampler}, {steps} steps{', bf16 autocast' if args.bf16 else ''}) to {args.output}"
    )


def inpaint(args: argparse.Namespace) -> None:
    """Regenerate the black region of MASK in IMAGE with a DDPM: RePaint (Lugmayr et al. 2022, Algorithm 1)."""
    import torch

    pipeline = _load_editing_pipeline(args)
    image = _read_image(args.image, "IMAGE")
    _check_channels(image, pipeline, "IMAGE")
    mask = _read_image(args.mask, "MASK")
    if mask.size != image.size:
        raise CLIError(
            f"MASK: {args.mask} is {mask.size[0]}x{mask.size[1]} but IMAGE is {image.size[0]}x{image.size[1]}; give a "
            "mask of the image's size."
        )
    if any(64 <= value < 192 for value in set(mask.convert("L").getdata())):
        raise CLIError(f"MASK: {args.mask} must be black (regenerate) and white (keep) only, with no grey pixels.")
    _check_image_output(Path(args.output))
    try:
        output = pipeline.inpaint(
            image,  # `preprocess` converts it to the model's channels and resolution
            _mask_at_model_size(mask, pipeline),
            num_inference_steps=args.num_inference_steps,
            jump_length=args.jump_length,
            jump_n_sample=args.jump_n_sample,
            generator=torch.Generator().manual_seed(args.seed),
        )
    except ValueError as error:
        raise CLIError(str(error)) from None
    _save_grid(output.images, Path(args.output))
    print(f"Saved the inpainted image ({pipeline.num_timesteps} steps with resampling) to {args.output}")


def img2img(args: argparse.Namespace) -> None:
    """Re-imagine IMAGE with a DDPM from t0 = strength * T: SDEdit (Meng et al. 2021) with Algorithm 2."""
    import torch

    pipeline = _load_editing_pipeline(args)
    image = _read_image(args.image, "IMAGE")
    _check_channels(image, pipeline, "IMAGE")
    _check_image_output(Path(args.output))
    try:
        output = pipeline.img2img(
            image,  # `preprocess` converts it to the model's channels and resolution
            strength=args.strength,
            num_inference_steps=args.num_inference_steps,
            generator=torch.Generator().manual_seed(args.seed),
        )
    except ValueError as error:
        raise CLIError(f"--strength: {error}" if "strength" in str(error) else str(error)) from None
    _save_grid(output.images, Path(args.output))
    print(f"Saved the edited image ({pipeline.num_timesteps} steps from strength {args.strength}) to {args.output}")


def _load_editing_pipeline(args: argparse.Namespace):
    if args.num_inference_steps < 1:
        raise CLIError(f"--num_inference_steps: expected an integer >= 1, got {args.num_inference_steps}.")
    pipeline = _load_pipeline(args.model, args.allow_pickle)
    _check_num_inference_steps(pipeline, args.num_inference_steps)
    return pipeline


def _read_image(path: str, what: str):
    """An image file, fully decoded, or a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise CLIError(f"{what}: {path} is not a file; give an image file (PNG, JPEG, ...).")
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise CLIError(
            f"{what}: {path} is not a readable image ({type(error).__name__}); give a PNG or JPEG."
        ) from None


def _check_channels(image, pipeline, what: str) -> None:
    """The image's channels (1 for grayscale, also an RGB image whose channels are equal; 3 for colour) must be the
    model's."""
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    channels = 1 if image.mode in ("1", "L", "LA", "I", "I;16", "F") or np.ptp(pixels, axis=2).max() == 0 else 3
    expected = pipeline.unet.config.in_channels
    if channels != expected:
        kinds = {1: "grayscale (1 channel)", 3: "colour (3 channels)"}
        raise CLIError(
            f"{what}: the image is {kinds[channels]} but the model takes {kinds.get(expected, expected)} images; "
            f"convert it first."
        )


def _mask_at_model_size(mask, pipeline):
    """The grayscale mask resized (nearest) to the model's resolution, as `preprocess` resizes the image."""
    from PIL import Image

    side = pipeline.unet.config.sample_size
    height, width = (side, side) if isinstance(side, int) else side
    return mask.convert("L").resize((width, height), Image.Resampling.NEAREST)


def _check_num_inference_steps(pipeline, num_inference_steps: int) -> None:
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    if num_inference_steps > num_train_timesteps:
        raise CLIError(
            f"--num_inference_steps: expected at most the model's T = {num_train_timesteps}, got "
            f"{num_inference_steps}."
        )


def export_onnx(args: argparse.Namespace) -> None:
    """Export a SwinFPN folder, or a DDPM pipeline folder's UNet, to ONNX with dynamic batch, height and width (for
    onnxruntime; needs the `onnx` extra)."""
    from .export import export_onnx as export

    if args.opset < 18:
        raise CLIError(f"--opset: expected 18 or higher (torch's ONNX exporter), got {args.opset}.")
    for path in export(args.model_dir, args.out_dir, opset=args.opset):
        print(f"Wrote {path}")


def evaluate_seg(args: argparse.Namespace) -> None:
    """Evaluate a SwinFPN segmenter with mmsegmentation's protocol: keep-ratio resize, whole/slide inference,
    optional multi-scale + flip TTA, metrics at each label map's own size (aAcc, mIoU, mAcc, mDice, mFscore). Under
    `accelerate launch` each process evaluates a shard and the class counts are summed (the one-process metrics)."""
    from .data import load_evaluation_split
    from .evaluation.segmentation import evaluate_segmentation, format_results_table

    _check_evaluate_seg_arguments(args)
    model, processor = _load_segmenter(args.model, args.allow_pickle)
    state = _distributed_state()
    with state.main_process_first() if state is not None else contextlib.nullcontext():  # one writes the cache
        dataset, split = load_evaluation_split(
            args.dataset_name, args.dataset_config_name, args.train_data_dir, args.split, task="segmentation"
        )
    if args.max_eval_samples is not None:
        dataset = dataset.select(range(min(args.max_eval_samples, len(dataset))))
    settings = _segmentation_settings(args, model, processor)
    if state is not None:
        model.to(state.device)
    results = evaluate_segmentation(model, dataset, **settings, accelerator=state)
    if state is not None and not state.is_main_process:
        return  # the main process writes the results
    source = args.dataset_name or str(args.train_data_dir)
    results.update(model=str(args.model), dataset=source, split=split, reduce_labels=settings["reduce_labels"])
    _write_results(results, Path(args.output), format_results_table(results))
    if args.update_card:
        from .hub import update_segmentation_card_results

        card = update_segmentation_card_results(args.model, results, source, split, args.dataset_config_name)
        print(f"Updated the model-index of {card}")


# bytes per pixel that `segment` holds for the whole image: the decoded image (up to 4 bands), its RGB array (3) and
# the label map (1, 2 above 256 classes)
SEGMENT_BYTES_PER_PIXEL = 9


def segment(args: argparse.Namespace) -> None:
    """Segment one image of any size by slide inference in memory bounded by a band of rows (`segment_large`) and
    write its label map as a PNG of class ids (8-bit, 16-bit above 256 classes)."""
    from PIL import Image

    from .evaluation.segmentation_inference import segment_large

    crop_size, stride = _int_or_pair(args.crop_size), _int_or_pair(args.stride)
    for name, value in (("crop_size", crop_size), ("stride", stride), ("window_batch_size", args.window_batch_size)):
        values = value if isinstance(value, tuple) else (value,)
        if value is not None and min(values) < 1:
            raise CLIError(
                f"--{name}: expected positive integers, got {value if isinstance(value, int) else list(value)}."
            )
    max_pixels = args.max_pixels if args.max_pixels is not None else _available_memory() // SEGMENT_BYTES_PER_PIXEL
    if max_pixels < 1:
        raise CLIError(f"--max_pixels: expected an integer >= 1, got {max_pixels}.")
    output = Path(args.output)
    if output.is_dir() or output.suffix.lower() != ".png":
        raise CLIError(f"OUT: {output} is not a .png file name; give one such as labels.png (class ids need PNG).")
    model, processor = _load_segmenter(args.model, args.allow_pickle)
    crop = _pair_of(crop_size or model.config.image_size)
    pixels = _read_large_image(args.image, max_pixels, args.max_pixels is None, crop)
    labels = segment_large(
        model,
        pixels,
        crop_size,
        stride,
        args.window_batch_size,
        mean=processor.image_mean if processor is not None else None,
        std=processor.image_std if processor is not None else None,
        progress_bar=True,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        Image.fromarray(labels).save(partial, format="PNG")
        partial.replace(output)  # an earlier OUT.png stays whole until the new one is
    finally:
        partial.unlink(missing_ok=True)
    print(
        f"Wrote the {labels.shape[0]}x{labels.shape[1]} label map ({labels.dtype}, {model.config.num_labels} classes) to {output}"
    )


def _pair_of(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def _available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux: /proc/meminfo MemAvailable, else free pages)."""
    import os

    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _read_large_image(path: str, max_pixels: int, from_memory: bool, crop: tuple[int, int]):
    """An image of any number of pixels as a uint8 RGB array (height, width, 3): Pillow's decompression-bomb limit
    is lifted for this read only (restored after); the size in its header, checked before decoding, must be at most
    `max_pixels` and at least the `crop` (height, width)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise CLIError(f"IMAGE: {path} is not a file; give an image file (PNG, JPEG, TIFF, ...).")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                source = "the memory available now" if from_memory else "--max_pixels"
                raise CLIError(
                    f"IMAGE: {path} is {width}x{height} = {width * height:,} pixels decoded, more than {max_pixels:,} "
                    f"({source}); free memory or give a larger --max_pixels, or split the image."
                )
            if crop[0] > height or crop[1] > width:
                raise CLIError(
                    f"--crop_size: {crop[0]}x{crop[1]} is larger than IMAGE ({height}x{width}); give a crop of at "
                    "most the image's height and width."
                )
            opened.load()
            return np.asarray(opened if opened.mode == "RGB" else opened.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CLIError(
            f"IMAGE: {path} is not a readable image ({type(error).__name__}: {_one_line(error)}); give a whole PNG, "
            "JPEG or TIFF."
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _distributed_state():
    """accelerate's ``PartialState`` when the command runs in several processes (``accelerate launch``), else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as accelerate's AcceleratorState reads it


def _check_evaluate_seg_arguments(args: argparse.Namespace) -> None:
    if (args.dataset_name is None) == (args.train_data_dir is None):
        raise CLIError("give exactly one of --dataset_name and --train_data_dir.")
    if args.scales and any(not scale > 0 for scale in args.scales):
        raise CLIError(f"--scales: expected positive ratios such as 0.5 0.75 1.0, got {list(args.scales)}.")
    for name in ("crop_size", "stride", "max_eval_samples"):
        value = getattr(args, name)
        if value is not None and any(v < 1 for v in (value if isinstance(value, list) else [value])):
            raise CLIError(f"--{name}: expected positive integers, got {value}.")
    if args.scale is not None and min(args.scale) < 1:
        raise CLIError(f"--scale: expected two positive sizes such as 2048 512, got {args.scale}.")
    if (args.crop_size or args.stride) and args.mode != "slide":
        raise CLIError("--crop_size and --stride apply to --mode slide; add --mode slide or leave them out.")
    if args.update_card and not Path(args.model).is_dir():
        raise CLIError(f"--update_card: {args.model} is not a local model folder; the card is updated in place.")
    if Path(args.output).is_dir():
        raise CLIError(f"--output: {args.output} is a folder; give a file name such as eval_results.json.")


def _segmentation_settings(args: argparse.Namespace, model, processor) -> dict:
    """`evaluate_segmentation`'s keyword arguments: the flags, else the image processor's values, else the model's
    (its image size) and ImageNet's normalisation. The default scale is the one the model was trained for, as mmseg
    tests: the image processor's ``test_scale`` (recorded by train-seg), else the short side at the training
    resolution (the processor's size, else the model's image size; `short_side_scale`)."""
    from .data import IMAGENET_MEAN, IMAGENET_STD
    from .evaluation.segmentation import MMSEG_TTA_SCALES, InferenceProtocol

    protocol = InferenceProtocol(
        mode=args.mode,
        crop_size=_int_or_pair(args.crop_size) or (model.config.image_size if args.mode == "slide" else None),
        stride=_int_or_pair(args.stride),
        scales=tuple(args.scales) if args.scales else (MMSEG_TTA_SCALES if args.tta else (1.0,)),
        flip=args.flip or args.tta,
    )
    return {
        "scale": args.scale or _default_test_scale(processor, model),
        "protocol": protocol,
        "mean": processor.image_mean if processor is not None else IMAGENET_MEAN,
        "std": processor.image_std if processor is not None else IMAGENET_STD,
        "reduce_labels": args.do_reduce_labels or bool(processor is not None and processor.do_reduce_labels),
        "ignore_index": model.config.semantic_loss_ignore_index,
    }


def _default_test_scale(processor, model) -> list[int]:
    from .data import short_side_scale

    recorded = getattr(processor, "test_scale", None)
    if recorded:
        return [int(recorded[0]), int(recorded[1])]
    size = processor.size if processor is not None else None
    resolution = min(size["height"], size["width"]) if size else model.config.image_size
    return list(short_side_scale(resolution))


def _write_results(results: dict, output: Path, table: str) -> None:
    """Print the results table and write the results as JSON to `output`."""
    print(table)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {output}")


def _int_or_pair(value: list[int] | None) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if len(value) not in (1, 2):
        raise CLIError(f"expected one size or HEIGHT WIDTH, got {value}.")
    return value[0] if len(value) == 1 else (value[0], value[1])


def _load_segmenter(name: str, allow_pickle: bool):
    """The SwinFPN model (eval mode) and its image processor (None when the folder has none)."""
    from . import SwinFPNForSegmentation, SwinFPNImageProcessor

    _check_model_source(name, "MODEL")
    if Path(name).is_dir():
        check_model_folder(name, allow_pickle=allow_pickle)
    with named_loading_errors(name, "SwinFPN model"):
        model = SwinFPNForSegmentation.from_pretrained(name, **safetensors_only(allow_pickle)).eval()
    processor = None
    if not Path(name).is_dir() or (Path(name) / "preprocessor_config.json").is_file():
        with named_loading_errors(name, "SwinFPN image processor"):
            processor = SwinFPNImageProcessor.from_pretrained(name)
    return model, processor


def _check_model_source(name: str, what: str) -> None:
    """`name` must be an existing folder or look like a Hub repo id (`name` or `namespace/name`)."""
    from .hub import is_repo_id

    if Path(name).is_dir() or (not Path(name).exists() and is_repo_id(name)):
        return
    reason = "is a file, not a folder" if Path(name).exists() else "is neither an existing folder nor a Hub repo id"
    raise CLIError(f"{what}: {name} {reason}.")


def _check_image_output(path: Path) -> None:
    """The output must be a file name with an image extension PIL can write (.png, .jpg, ...)."""
    from PIL import Image

    if path.is_dir():
        raise CLIError(f"output: {path} is a folder; give an image file name such as samples.png.")
    if path.suffix.lower() not in Image.registered_extensions():
        raise CLIError(f"output: {path} has no image extension PIL can write; give a name such as samples.png.")


def push(args: argparse.Namespace) -> None:
    """Push a saved SwinFPN model (with its image processor) or DDPMPaperPipeline folder to the Hub, with a model card."""
    from .hub import load_saved, push_to_hub, require_token

    folder = Path(args.folder)
    if not folder.is_dir():
        raise CLIError(f"{folder} is not a folder; give a folder saved with save_pretrained or save_for_hub.")
    token = require_token()  # fail before the slow loading
    card_fields = _load_card_fields(args.card_fields)
    if args.example_image:
        card_fields["example_image"] = Path(args.example_image)
    if args.num_inference_steps:
        card_fields["sample_steps"] = args.num_inference_steps
    obj, save_fields = load_saved(folder, allow_pickle=args.allow_pickle)
    save_fields["results_from"] = folder  # the results evaluate-ddpm / evaluate-seg --update_card wrote there
    url = push_to_hub(
        obj,
        args.repo_id,
        private=args.private,
        token=token,
        commit_message=args.commit_message,
        **save_fields,
        **card_fields,
    )
    print(f"Pushed {folder} to {args.repo_id}: {url}")


def _load_card_fields(path_name: str | None) -> dict:
    if not path_name:
        return {}
    path = Path(path_name)
    if not path.is_file():
        raise CLIError(f'--card_fields: file {path} does not exist; give a JSON object such as {{"mean_iou": 0.41}}.')
    try:
        fields = json.loads(path.read_text())
    except ValueError as error:
        raise CLIError(f"--card_fields: {path} is not valid JSON ({error}).") from None
    if not isinstance(fields, dict):
        raise CLIError(f"--card_fields: {path} must hold a JSON object of model card fields.")
    return fields


def _load_pipeline(name: str, allow_pickle: bool, sampler: str | None = None, variance: str | None = None):
    """A `DDPMPaperPipeline` from a folder (checked first) or a Hub repo id; with `sampler`, that sampler's scheduler
    (`hf_swin_ddpm.diffusion.samplers`), else the model's own."""
    from . import DDPMPaperPipeline
    from .diffusion.samplers import sampler_scheduler

    if variance is not None and sampler not in ("paper", "ddpm"):
        raise CLIError("--variance: applies to --sampler paper or ddpm; give one of them too.")
    _check_model_source(name, "MODEL")
    folder = Path(name)
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise CLIError(
                f"{folder}: no model_index.json; expected a folder saved by DDPMPaperPipeline.save_pretrained."
            )
        check_model_folder(folder, allow_pickle=allow_pickle)
        _check_unet_weights(folder, allow_pickle)
    with named_loading_errors(name, "DDPMPaperPipeline"):
        pipeline = DDPMPaperPipeline.from_pretrained(name, **safetensors_only(allow_pickle))
    if sampler is not None:
        pipeline.scheduler = sampler_scheduler(sampler, pipeline.scheduler, variance)
    return pipeline


def _check_unet_weights(folder: Path, allow_pickle: bool) -> None:
    unet = folder / "unet"
    patterns = ("*.safetensors", "*.bin") if allow_pickle else ("*.safetensors",)
    if not any(any(unet.glob(pattern)) for pattern in patterns):
        kind = "safetensors or .bin" if allow_pickle else "safetensors"
        raise CLIError(f"{folder}: no {kind} weights in {unet}; save the pipeline again with save_pretrained.")


def _check_evaluate_arguments(args: argparse.Namespace) -> None:
    if (args.model is None) == (args.from_samples is None):
        raise CLIError("give MODEL (to sample it) or --from_samples DIR_OR_NPZ (to score those images), one of them.")
    if args.from_samples and (args.samples_dir or args.update_card):
        raise CLIError("--from_samples scores existing images; leave out --samples_dir and --update_card.")
    if args.samples_dir and Path(args.samples_dir).is_file():
        raise CLIError(f"--samples_dir: {args.samples_dir} is a file; give a folder.")
    if args.num_samples < 2:
        raise CLIError(f"--num_samples: expected an integer >= 2 (FID needs a covariance), got {args.num_samples}.")
    if args.num_inference_steps < 1:
        raise CLIError(f"--num_inference_steps: expected an integer >= 1, got {args.num_inference_steps}.")
    if args.batch_size < 1:
        raise CLIError(f"--batch_size: expected an integer >= 1, got {args.batch_size}.")
    if args.bpd_timesteps < 0 or args.bpd_images < 0:
        raise CLIError("--bpd_timesteps and --bpd_images must be >= 0 (0 skips bits/dim).")
    if Path(args.output).is_dir():
        raise CLIError(f"--output: {args.output} is a folder; give a file name such as eval_results.json.")


def _classifier_dataset(args: argparse.Namespace, reference) -> str:
    from .evaluation import CLASSIFIER_DATASETS

    if args.classifier_dataset:
        return args.classifier_dataset
    if reference.is_dataset and reference.source in CLASSIFIER_DATASETS:
        return reference.source
    if args.features == "classifier":
        raise CLIError(
            f"--classifier_dataset: the reference is not {' or '.join(CLASSIFIER_DATASETS)}; name the dataset whose "
            "digit classifier gives the features."
        )
    return "mnist"


def _reference_bits_per_dim(pipeline, reference, args: argparse.Namespace) -> float | None:
    """The variational bound (bits/dim) of the pipeline on the first `--bpd_images` reference images."""
    import torch

    from .evaluation import mean_bits_per_dim, reference_batches
    from .evaluation.sampling import pipeline_resolution

    if not reference.is_dataset or not args.bpd_images or not args.bpd_timesteps:
        return None
    side, channels = pipeline_resolution(pipeline)
    generator = torch.Generator().manual_seed(args.seed)
    timesteps = min(args.bpd_timesteps, pipeline.scheduler.config.num_train_timesteps - 1)
    batches = reference_batches(reference, side, channels, args.batch_size, args.bpd_images)
    bound = mean_bits_per_dim(pipeline.unet, pipeline.scheduler, batches, generator=generator, num_timesteps=timesteps)
    return float(bound["total_bpd"]) if bound else None


def evaluate_ddpm(args: argparse.Namespace) -> None:
    """Sample a DDPMPaperPipeline (or read --from_samples) and measure FID, KID and Inception Score against a reference
    (and bits/dim); under `accelerate launch` the samples are shared out over the processes."""
    import torch

    from .evaluation import parse_reference
    from .evaluation.sample_folder import load_sample_images
    from .evaluation.sampling import evaluate_samples, generate_samples

    _check_evaluate_arguments(args)
    reference = parse_reference(args.reference)
    if args.from_samples:
        metrics = _sample_metrics(args, reference)
        samples = load_sample_images(args.from_samples)
        results = {"samples": str(args.from_samples), "reference": args.reference}
        results.update(evaluate_samples(metrics, reference, samples, cache_dir=args.cache_dir))
        results["bits_per_dim"] = None
        _write_results(results, Path(args.output), _results_table(results))
        return
    state = _processes()
    with state.main_process_first():  # the main process trains and caches the classifier when it is not cached
        metrics = _sample_metrics(args, reference)  # before loading the model: a missing package or file fails fast
    pipeline = _load_pipeline(args.model, args.allow_pickle, args.sampler, args.variance).to(state.device)
    _check_num_inference_steps(pipeline, args.num_inference_steps)
    autocast_dtype = torch.bfloat16 if args.bf16 else None
    folder = _samples_folder(args, pipeline, autocast_dtype, state)
    samples, counts = generate_samples(
        pipeline,
        args.num_samples,
        args.num_inference_steps,
        seed=args.seed,
        batch_size=args.batch_size,
        samples_dir=folder,
        state=state,
        autocast_dtype=autocast_dtype,
    )
    if not state.is_main_process:
        return
    if folder is not None:
        reused = args.num_samples - counts["samples_made"]
        print(
            f"{args.samples_dir}: {counts['samples_made']} samples made ({counts['samples_repaired']} of them "
            f"repaired: truncated or unreadable files), {reused} already there"
        )
    results = {"model": str(args.model), "reference": args.reference}
    results.update(evaluate_samples(metrics, reference, samples, cache_dir=args.cache_dir))
    results.update(counts)
    results["num_inference_steps"] = args.num_inference_steps
    results["bits_per_dim"] = _reference_bits_per_dim(pipeline, reference, args)
    if results["bits_per_dim"] is not None:
        results["bits_per_dim_images"] = min(args.bpd_images, results["num_real"])
        results["bits_per_dim_timesteps"] = args.bpd_timesteps
    _write_results(results, Path(args.output), _results_table(results))
    if args.update_card:
        from .hub import update_card_results

        dataset, split = (reference.source, reference.split) if reference.is_dataset else (args.reference, None)
        card = update_card_results(args.model, results, dataset=dataset, split=split)
        print(f"Updated the model-index of {card}")


def _processes():
    """This run's processes: an `Accelerator` (one process, or those of `accelerate launch`, CPU ones over gloo with
    ACCELERATE_USE_CPU); mixed precision stays "no" (`--bf16` is the pipeline's own autocast)."""
    from accelerate import Accelerator

    from .training.runtime import forget_other_mixed_precision

    forget_other_mixed_precision("no")
    return Accelerator(mixed_precision="no")


def _sample_metrics(args: argparse.Namespace, reference):
    from .evaluation import SampleMetrics

    return SampleMetrics(
        args.features,
        classifier_dataset=_classifier_dataset(args, reference),
        seed=args.seed,
        inception_weights=args.inception_weights,
        cache_dir=args.cache_dir,
    )


def _samples_folder(args: argparse.Namespace, pipeline, autocast_dtype, state):
    """The `--samples_dir` of this run, its manifest checked (and written by the main process), or None."""
    from .evaluation.sample_folder import SampleFolder
    from .evaluation.sampling import pipeline_resolution

    if not args.samples_dir:
        return None
    side, channels = pipeline_resolution(pipeline)
    model = str(Path(args.model).resolve()) if Path(args.model).is_dir() else str(args.model)
    manifest = {
        "model": model,
        "seed": args.seed,
        "num_inference_steps": args.num_inference_steps,
        "sampler": args.sampler or f"model's own ({type(pipeline.scheduler).__name__})",
        "variance": args.variance,
        "autocast_dtype": "bfloat16" if autocast_dtype is not None else None,
        "resolution": side,
        "channels": channels,
    }
    folder = SampleFolder(args.samples_dir, manifest)
    folder.prepare(overwrite=args.overwrite, write=False)  # every process: a contradiction stops all of them
    if state.is_main_process:
        folder.prepare(overwrite=args.overwrite, write=True)
    state.wait_for_everyone()
    return folder


def sweep_ddpm(args: argparse.Namespace) -> None:
    """FID, KID and IS of a DDPMPaperPipeline for every sampler and number of steps: a CSV and a PNG of the trade-off."""
    import torch

    from .evaluation import parse_reference
    from .evaluation.sweep import plot_sweep, sweep_samplers, write_sweep_csv

    if args.num_samples < 2:
        raise CLIError(f"--num_samples: expected an integer >= 2 (FID needs a covariance), got {args.num_samples}.")
    if args.batch_size < 1:
        raise CLIError(f"--batch_size: expected an integer >= 1, got {args.batch_size}.")
    if min(args.num_inference_steps) < 1:
        raise CLIError(f"--num_inference_steps: expected integers >= 1, got {min(args.num_inference_steps)}.")
    if Path(args.output_dir).is_file():
        raise CLIError(f"--output_dir: {args.output_dir} is a file; give a folder.")
    reference = parse_reference(args.reference)
    metrics = _sample_metrics(args, reference)
    _check_num_inference_steps(_load_pipeline(args.model, args.allow_pickle), max(args.num_inference_steps))
    rows = sweep_samplers(
        lambda sampler: _load_pipeline(args.model, args.allow_pickle, sampler).to(_processes().device),
        metrics,
        reference,
        list(dict.fromkeys(args.sampler)),
        sorted(set(args.num_inference_steps)),
        args.num_samples,
        seed=args.seed,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        autocast_dtype=torch.bfloat16 if args.bf16 else None,
    )
    output = Path(args.output_dir)
    table = write_sweep_csv(rows, output / "sweep.csv")
    figure = plot_sweep(
        rows, output / "sweep.png", title=f"{args.model}: N = {args.num_samples} against {args.reference}"
    )
    for row in rows:
        print(
            f"{row['sampler']:>11} {row['steps']:>5} steps  {row['seconds']:>8.2f} s  FID {row['fid']:.4f}  "
            f"IS {row['inception_score']:.3f}"
        )
    print(f"Wrote {table} and {figure}")


def _results_table(results: dict) -> str:
    def number(value, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [
        ("FID", number(results["fid"])),
        ("KID", f"{number(results['kid_mean'], 5)} +- {number(results['kid_std'], 5)}"),
        (
            "Inception Score",
            f"{number(results['inception_score_mean'], 3)} +- {number(results['inception_score_std'], 3)}",
        ),
        ("bits/dim (reference)", number(results.get("bits_per_dim"))),
        ("samples N", str(results["num_generated"])),
        ("steps S", str(results.get("num_inference_steps", "n/a"))),
        ("reference images", str(results["num_real"])),
        ("features", results["features"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def rate_distortion(args: argparse.Namespace) -> None:
    """Rate-distortion of progressive coding (Sec. 4.3, Fig. 5): a CSV and a PNG of RMSE against bits/dim."""
    from .evaluation import parse_reference, reference_batches
    from .evaluation.rate_distortion import plot_rate_distortion, rate_distortion_curve, write_rate_distortion_csv
    from .evaluation.sampling import pipeline_resolution

    if args.max_eval_samples < 1:
        raise CLIError(f"--max_eval_samples: expected an integer >= 1, got {args.max_eval_samples}.")
    if args.batch_size < 1:
        raise CLIError(f"--batch_size: expected an integer >= 1, got {args.batch_size}.")
    reference = parse_reference(args.dataset, default_split="test")
    if not reference.is_dataset and reference.kind != "folder":
        raise CLIError(f"--dataset: {args.dataset} is a statistics file; give a dataset or an image folder.")
    pipeline = _load_pipeline(args.model, args.allow_pickle)
    side, channels = pipeline_resolution(pipeline)
    batches = reference_batches(reference, side, channels, args.batch_size, args.max_eval_samples)
    curve = rate_distortion_curve(
        pipeline.unet, pipeline.scheduler, batches, seed=args.seed, num_timesteps=args.bpd_timesteps
    )
    output_dir = Path(args.output_dir)
    csv_path = write_rate_distortion_csv(curve, output_dir / "rate_distortion.csv")
    png_path = plot_rate_distortion(curve, output_dir / "rate_distortion.png", title=f"{args.model} on {args.dataset}")
    print(f"{curve['num_images']} images: {curve['total_bpd']:.3f} bits/dim in all; wrote {csv_path} and {png_path}")


def _save_grid(images: list, path: Path) -> None:
    grid = image_grid(images, columns=min(len(images), 8))
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
    """The `hf-swin-ddpm` parser: one subcommand per task, each built by its own `_add_*_command` below."""
    parser = argparse.ArgumentParser(prog="hf-swin-ddpm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, help="the task to run")
    _add_convert_swin_command(commands)
    _add_convert_upernet_command(commands)
    _add_sample_command(commands)
    _add_inpaint_command(commands)
    _add_img2img_command(commands)
    _add_evaluate_seg_command(commands)
    _add_segment_command(commands)
    _add_push_command(commands)
    _add_evaluate_ddpm_command(commands)
    _add_sweep_ddpm_command(commands)
    _add_rate_distortion_command(commands)
    _add_export_onnx_command(commands)
    _add_training_commands(commands)
    return parser


def _add_flag(parser: argparse.ArgumentParser, flag: str, *old_spellings: str, **options) -> None:
    """Add the snake_case `flag` and, hidden from --help, its earlier spellings (the same destination), so that
    command lines written for an older release still run."""
    action = parser.add_argument(flag, **options)
    hidden = {**options, "dest": action.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    hidden.pop("required", None)
    for old in old_spellings:
        parser.add_argument(old, **hidden)


def _add_allow_pickle(parser: argparse.ArgumentParser) -> None:
    _add_flag(parser, "--allow_pickle", "--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)


def _add_convert_swin_command(commands) -> None:
    convert = commands.add_parser("convert-swin", help=convert_swin.__doc__)
    convert.add_argument("checkpoint", help="transformers Swin checkpoint: Hub id or folder")
    convert.add_argument("output_dir", help="where the SwinFPN model and its image processor are saved")
    _add_flag(convert, "--num_labels", "--num-labels", type=int, default=2, help="number of classes")
    convert.add_argument("--id2label", help="JSON file mapping class ids to names (overrides --num_labels)")
    image_size_help = "the image processor's input size (default: the checkpoint's image_size)"
    _add_flag(convert, "--image_size", "--image-size", type=int, default=None, help=image_size_help)
    _add_allow_pickle(convert)
    convert.set_defaults(handler=convert_swin)


def _add_convert_upernet_command(commands) -> None:
    converter = commands.add_parser("convert-upernet", help=convert_upernet.__doc__)
    converter.set_defaults(handler=convert_upernet)
    converter.add_argument("repo", help="transformers UperNet + Swin checkpoint: Hub id or folder")
    converter.add_argument("output_dir", help="a new folder for the SwinFPN model, its image processor and card")
    _add_allow_pickle(converter)


def _add_sample_command(commands) -> None:
    sampler = commands.add_parser("sample", help=sample.__doc__)
    sampler.add_argument("pipeline_dir", help="a DDPMPaperPipeline or DDPMPipeline: folder or Hub repo id")
    sampler.add_argument("output", help="the image file of the sample grid, e.g. samples.png")
    _add_flag(
        sampler, "--num_samples", "--num_images", "--num-images", type=int, default=16, help="images drawn N, 1..256"
    )
    _add_flag(sampler, "--num_inference_steps", "--steps", type=int, default=1000, help="sampling steps S")
    _add_sampler_arguments(sampler)
    sampler.add_argument("--seed", type=int, default=0, help="seed of the initial noise and of every step's noise")
    sampler.add_argument("--bf16", action="store_true", help=BF16_HELP)
    _add_allow_pickle(sampler)
    sampler.set_defaults(handler=sample)


def _add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """`--sampler` and `--variance`: which reverse process draws the samples."""
    from .diffusion.samplers import SAMPLERS, VARIANCE_TYPES

    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help="paper: Algorithm 2 as the paper runs it (DDPMPaperScheduler, no clipping); the others: diffusers' "
        "schedulers from the model's config (default: the model's own scheduler)",
    )
    parser.add_argument(
        "--variance",
        choices=VARIANCE_TYPES,
        default=None,
        help="sigma_t^2 of the paper and ddpm samplers: fixed_large = beta_t, fixed_small = beta-tilde_t",
    )


def _add_edit_arguments(parser: argparse.ArgumentParser, inputs: dict[str, str], steps: int, steps_help: str) -> None:
    """What `inpaint` and `img2img` share: the model, the input files, the output, the steps, the seed."""
    parser.add_argument("model", help="a DDPMPaperPipeline or DDPMPipeline: folder or Hub repo id")
    for name, help_text in inputs.items():
        parser.add_argument(name, help=help_text)
    parser.add_argument("--num_inference_steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--seed", type=int, default=0, help="seed of all the noise")
    _add_allow_pickle(parser)


def _add_inpaint_command(commands) -> None:
    painter = commands.add_parser("inpaint", help=inpaint.__doc__)
    inputs = {
        "image": "the image to edit (resized to the model's resolution)",
        "mask": "a grayscale image of the image's size: white = keep, black = regenerate",
        "output": "the inpainted image file, e.g. inpainted.png",
    }
    _add_edit_arguments(painter, inputs, 250, "steps of the respaced chain")
    painter.add_argument("--jump_length", type=int, default=10, help="RePaint's resampling: steps back up per jump")
    painter.add_argument("--jump_n_sample", type=int, default=10, help="RePaint's resampling: passes per jump")
    painter.set_defaults(handler=inpaint)


def _add_img2img_command(commands) -> None:
    editor = commands.add_parser("img2img", help=img2img.__doc__)
    inputs = {"image": "the image to edit (resized to the model's resolution)", "output": "the edited image file"}
    _add_edit_arguments(editor, inputs, 50, "steps of a full (strength 1) chain")
    editor.add_argument("--strength", type=float, default=0.5, help="t0 / T in [0, 1]: 0 keeps the image")
    editor.set_defaults(handler=img2img)


def _add_export_onnx_command(commands) -> None:
    exporter = commands.add_parser("export-onnx", help=export_onnx.__doc__)
    exporter.add_argument("model_dir", help="a saved SwinFPN folder, DDPM pipeline folder or UNet2DModel folder")
    exporter.add_argument("out_dir", help="the folder for the .onnx file(s) and the copied configs")
    exporter.add_argument("--opset", type=int, default=18, help="the ONNX opset")
    exporter.set_defaults(handler=export_onnx)


def _add_evaluate_seg_command(commands) -> None:
    evaluator = commands.add_parser("evaluate-seg", help=evaluate_seg.__doc__)
    evaluator.add_argument("model", help="a SwinFPN model: folder or Hub id")
    _add_evaluation_data_arguments(evaluator)
    _add_inference_protocol_arguments(evaluator)
    evaluator.add_argument("--output", default="eval_results.json", help="the results JSON file")
    evaluator.add_argument("--update_card", action="store_true", help="write the results into MODEL/README.md")
    _add_allow_pickle(evaluator)
    evaluator.set_defaults(handler=evaluate_seg)


def _add_segment_command(commands) -> None:
    segmenter = commands.add_parser("segment", help=segment.__doc__)
    segmenter.add_argument("model", help="a SwinFPN model: folder or Hub id")
    segmenter.add_argument("image", help="the image to segment, any size (read at its own resolution)")
    segmenter.add_argument("output", help="the label map PNG of class ids, e.g. labels.png")
    segmenter.add_argument(
        "--crop_size", type=int, nargs="+", help="slide window: SIZE or HEIGHT WIDTH (default: the model's image size)"
    )
    segmenter.add_argument("--stride", type=int, nargs="+", help="slide stride: SIZE or HEIGHT WIDTH (2/3 crop)")
    segmenter.add_argument("--window_batch_size", type=int, default=1, help="windows per forward")
    segmenter.add_argument(
        "--max_pixels",
        type=int,
        default=None,
        help=f"refuse larger images (default: the available memory / {SEGMENT_BYTES_PER_PIXEL} bytes per pixel)",
    )
    _add_allow_pickle(segmenter)
    segmenter.set_defaults(handler=segment)


def _add_evaluation_data_arguments(evaluator: argparse.ArgumentParser) -> None:
    """`evaluate-seg`'s data: the flags of the training scripts, and the split."""
    evaluator.add_argument("--dataset_name", help="embedded (shapes), Hub dataset id or local dataset file/folder")
    evaluator.add_argument("--dataset_config_name", help="the configuration of the Hub dataset")
    evaluator.add_argument("--train_data_dir", help="a folder of images/ and annotations/ (optionally per split)")
    evaluator.add_argument("--split", help="the split to evaluate (default: validation, else test)")
    evaluator.add_argument("--do_reduce_labels", action="store_true", help="label 0 -> ignore, c -> c - 1 (ADE20K)")
    evaluator.add_argument("--max_eval_samples", type=int, help="evaluate only the first N images")


def _add_inference_protocol_arguments(evaluator: argparse.ArgumentParser) -> None:
    """`evaluate-seg`'s mmseg inference protocol: the resize, whole or slide inference, and test-time augmentation."""
    evaluator.add_argument(
        "--scale",
        **KEEP_RATIO_SCALE,
        help="keep-ratio resize scale, e.g. 2048 512 for ADE20K (default: the model's training scale, its image "
        "processor's test_scale, else 4*size size: the short side at the training resolution)",
    )
    evaluator.add_argument(
        "--mode", choices=("whole", "slide"), default="whole", help="whole-image or sliding-window inference"
    )
    evaluator.add_argument("--crop_size", type=int, nargs="+", help="slide window: SIZE or HEIGHT WIDTH")
    evaluator.add_argument("--stride", type=int, nargs="+", help="slide stride: SIZE or HEIGHT WIDTH (2/3 crop)")
    evaluator.add_argument("--tta", action="store_true", help="mmseg's TTA: scales 0.5-1.75 and flip")
    evaluator.add_argument("--scales", type=float, nargs="+", help="TTA resize ratios (default 1.0; --tta: mmseg's)")
    evaluator.add_argument("--flip", action="store_true", help="add horizontally flipped views")


def _add_push_command(commands) -> None:
    pusher = commands.add_parser("push", help=push.__doc__)
    pusher.add_argument("folder", help="a folder saved by save_pretrained / save_for_hub")
    pusher.add_argument("repo_id", help="namespace/name on the Hub")
    pusher.add_argument("--private", action="store_true", help="create the repository private")
    _add_flag(pusher, "--commit_message", "--commit-message", default=None, help="the commit message on the Hub")
    _add_flag(
        pusher,
        "--card_fields",
        "--card-fields",
        help="JSON file of model card fields (datasets, mean_iou, hyperparameters...)",
    )
    _add_flag(pusher, "--example_image", "--example-image", help="image to show in the model card")
    _add_flag(
        pusher,
        "--num_inference_steps",
        "--sample-steps",
        "--sample_steps",
        type=int,
        default=None,
        help="sampling steps S of the DDPM card's sample grid",
    )
    _add_allow_pickle(pusher)
    pusher.set_defaults(handler=push)


def _add_evaluate_ddpm_command(commands) -> None:
    evaluator = commands.add_parser("evaluate-ddpm", help=evaluate_ddpm.__doc__)
    evaluator.add_argument("model", nargs="?", help="a DDPMPaperPipeline folder or Hub repo id")
    evaluator.add_argument("--reference", required=True, help="DATASET[:SPLIT], an image FOLDER or a STATS.npz")
    evaluator.add_argument("--num_samples", type=int, default=1000, help="generated images N (>= 2)")
    evaluator.add_argument(
        "--samples_dir", default=None, help="write the samples there as PNGs; a rerun makes only the missing ones"
    )
    evaluator.add_argument(
        "--overwrite", action="store_true", help="replace --samples_dir's samples made with other arguments"
    )
    evaluator.add_argument(
        "--from_samples", default=None, help="score these images instead of sampling MODEL: a folder or an arr_0 .npz"
    )
    evaluator.add_argument("--num_inference_steps", type=int, default=250, help="sampling steps S")
    _add_sampler_arguments(evaluator)
    _add_sample_metric_arguments(evaluator)
    evaluator.add_argument("--batch_size", type=int, default=64, help="images per UNet call and per feature batch")
    evaluator.add_argument("--seed", type=int, default=0, help="seed of the samples and of the bits/dim terms")
    evaluator.add_argument("--bf16", action="store_true", help=BF16_HELP)
    evaluator.add_argument("--output", default="eval_results.json", help="the results JSON file")
    evaluator.add_argument("--update_card", action="store_true", help="put the results into MODEL/README.md")
    evaluator.add_argument("--bpd_images", type=int, default=100, help="reference images for bits/dim (0: skip)")
    evaluator.add_argument("--bpd_timesteps", type=int, default=100, help="KL terms sampled for bits/dim")
    evaluator.add_argument("--cache_dir", default=None, help="classifier and statistics cache (default: hub cache)")
    _add_allow_pickle(evaluator)
    evaluator.set_defaults(handler=evaluate_ddpm)


def _add_sweep_ddpm_command(commands) -> None:
    from .diffusion.samplers import SAMPLERS

    sweeper = commands.add_parser("sweep-ddpm", help=sweep_ddpm.__doc__)
    sweeper.add_argument("model", help="a DDPMPaperPipeline folder or Hub repo id")
    sweeper.add_argument("--reference", required=True, help="DATASET[:SPLIT], an image FOLDER or a STATS.npz")
    _add_flag(
        sweeper,
        "--num_inference_steps",
        "--steps",
        type=int,
        nargs="+",
        default=[10, 20, 50, 100, 250, 1000],
        help="the sampling step counts S to try",
    )
    sweeper.add_argument(
        "--sampler", choices=SAMPLERS, nargs="+", default=["paper", "ddim", "dpmsolver++"], help="the samplers to try"
    )
    sweeper.add_argument("--num_samples", type=int, default=1000, help="generated images N per cell (>= 2)")
    _add_sample_metric_arguments(sweeper)
    sweeper.add_argument("--batch_size", type=int, default=64, help="images per UNet call")
    sweeper.add_argument("--seed", type=int, default=0, help="seed of the samples (the same in every cell)")
    sweeper.add_argument("--bf16", action="store_true", help=BF16_HELP)
    sweeper.add_argument("--output_dir", default="sweep", help="where sweep.csv and sweep.png are written")
    sweeper.add_argument("--cache_dir", default=None, help="classifier and statistics cache (default: hub cache)")
    _add_allow_pickle(sweeper)
    sweeper.set_defaults(handler=sweep_ddpm)


def _add_sample_metric_arguments(evaluator: argparse.ArgumentParser) -> None:
    """`evaluate-ddpm`'s features of FID, KID and Inception Score."""
    evaluator.add_argument(
        "--features",
        choices=("classifier", "inception"),
        default="classifier",
        help="the digit classifier's features (digits, mnist) or the FID Inception's",
    )
    evaluator.add_argument("--inception_weights", default=None, help="FID Inception weights: a path or REPO[:FILE]")
    evaluator.add_argument(
        "--classifier_dataset", default=None, help="digits or mnist (default: the reference dataset)"
    )


def _add_rate_distortion_command(commands) -> None:
    rd = commands.add_parser("rate-distortion", help=rate_distortion.__doc__)
    rd.add_argument("model", help="a DDPMPaperPipeline folder or Hub repo id")
    rd.add_argument("--dataset", required=True, help="DATASET[:SPLIT] (default split test) or an image FOLDER")
    _add_flag(rd, "--max_eval_samples", "--num_images", type=int, default=100, help="evaluate only the first N images")
    rd.add_argument("--batch_size", type=int, default=50, help="images per UNet call")
    rd.add_argument("--seed", type=int, default=0, help="seed of the noise and of the stratified terms")
    _add_flag(
        rd,
        "--bpd_timesteps",
        "--num_timesteps",
        type=int,
        default=None,
        help="KL terms sampled for bits/dim, stratified (default: all T)",
    )
    rd.add_argument("--output_dir", default="rate_distortion", help="where rate_distortion.csv and .png are written")
    _add_allow_pickle(rd)
    rd.set_defaults(handler=rate_distortion)


def _add_training_commands(commands) -> None:
    """`train-ddpm` and `train-seg`: listed here, parsed by their training script (see `main`)."""
    for name, module in TRAINING_COMMANDS.items():
        commands.add_parser(name, add_help=False, help=f"train with accelerate (python -m {module}; {name} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TRAINING_COMMANDS:
        return run_training_command(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
        _end_processes()
    except (CLIError, ValueError, OSError, ImportError) as error:
        print(f"hf-swin-ddpm {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-swin-ddpm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _end_processes() -> None:
    """Under ``accelerate launch``, once a command is done: every process waits for the others, then the process
    group is destroyed, as accelerate's ``end_training`` does. A process that leaves with the group alive can abort
    in the interpreter's teardown ("terminate called without an active exception", gloo's threads still running)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _one_line(error: BaseException) -> str:
    """The error's message on one line (its type name when empty)."""
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
