"""Model folders for the Hub: `save_for_hub` writes what `push_to_hub` uploads, `load_saved` reads a saved folder back.

    from hf_swin_ddpm.hub import save_for_hub

    save_for_hub(model, "swin-fpn-ade", image_processor=processor, datasets=["scene_parse_150"], mean_iou=0.41)

A folder holds safetensors weights, configs, the code files that `trust_remote_code=True` runs where this package is
not installed (`remote_code`), an example image and `README.md`, the model card (`cards`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from ..imaging import class_colours, colour_classes, image_grid, side_by_side
from ..safe_loading import PICKLE_SUFFIXES, check_model_folder, named_loading_errors, safetensors_only
from .cards import CARD_FIELDS, CARD_FILE, DDPM, KINDS, SEGMENTATION, carry_card_results, render_model_card
from .remote_code import save_diffusers_remote_code, save_transformers_remote_code
from .repo_id import is_repo_id

logger = logging.getLogger(__name__)

# Fields only `save_for_hub` / `push_to_hub` take: how to make the example image, and the processor.
SAVE_FIELDS = ("image_processor", "example_image", "example_input", "sample_steps", "results_from")
SAMPLE_GRID_SIZE = 8
SAMPLE_GRID_SEED = 0


def save_for_hub(obj: Any, folder: str | Path, **card_fields: Any) -> Path:
    """
    Writes into `folder` exactly what `push_to_hub` uploads: weights (safetensors only), configs, the code files that
    let the folder load with `trust_remote_code=True` where `hf_swin_ddpm` is not installed, an example image, and
    `README.md`, the model card.

    Args:
        obj (`SwinFPNForSegmentation` or `DDPMPaperPipeline`):
            The model. A segmentation model is saved with `image_processor=` (a `SwinFPNImageProcessor`); without
            one, a default processor at `config.image_size` is saved.
        folder (`str` or `Path`):
            A new or empty folder.
        card_fields:
            The fields of `render_model_card`, and:
            image_processor: the segmentation model's processor.
            example_image (PIL image or path, or `False`): the card's image. By default a DDPM card shows a grid of
                8 samples (seed 0) and a segmentation card shows the prediction for `example_input`, if given.
            example_input (PIL image or path): an input image for the segmentation example.
            sample_steps (`int`): steps of the DDPM sample grid; defaults to the scheduler's full chain.
            results_from (`str` or `Path`): a model folder whose card's results the new card keeps (see
                `carry_card_results`): what `update_card_results` or `update_segmentation_card_results` wrote
                there (FID, KID, IS; mmseg's metrics and the evaluation section) after its card was rendered.

    Returns:
        `Path`: the folder.

    Raises:
        `ValueError`: an unsupported object, a non-empty folder, bad card fields, or code files that would not load
            without this package.
    """
    kind = model_kind(obj)
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} is not an empty folder; save_for_hub writes a fresh folder, so pick a new one.")
    save_fields = {name: card_fields.pop(name) for name in SAVE_FIELDS if name in card_fields}
    unknown = sorted(set(card_fields) - set(CARD_FIELDS))
    if unknown:
        raise ValueError(f"Unknown model card fields {unknown}; valid fields: {', '.join(CARD_FIELDS + SAVE_FIELDS)}.")
    if not card_fields.get("repo_id"):
        card_fields.setdefault("model_name", folder.name)
    render_model_card(kind, **card_fields)  # check the fields before the slow work
    folder.mkdir(parents=True, exist_ok=True)
    if kind == SEGMENTATION:
        facts = _save_segmentation(obj, folder, save_fields)
    else:
        facts = _save_ddpm(obj, folder, save_fields)
    _check_weights(folder)
    card = render_model_card(kind, **{**facts, **card_fields})
    card.save(folder / CARD_FILE)
    if save_fields.get("results_from"):
        carry_card_results(folder / CARD_FILE, save_fields["results_from"])
    return folder


def model_kind(obj: Any) -> str:
    """`"swin_fpn"` for a SwinFPN segmentation model, `"ddpm"` for a DDPM pipeline (also when loaded as remote code)."""
    config = getattr(obj, "config", None)
    if getattr(config, "model_type", None) == SEGMENTATION and hasattr(obj, "save_pretrained"):
        return SEGMENTATION
    if all(hasattr(obj, name) for name in ("unet", "scheduler", "save_pretrained")):
        return DDPM
    raise ValueError(
        f"Cannot publish a {type(obj).__name__}: expected a SwinFPNForSegmentation or a DDPMPaperPipeline."
    )


def _save_segmentation(model: Any, folder: Path, save_fields: dict[str, Any]) -> dict[str, Any]:
    """Saves the model and its processor as transformers remote code (`save_transformers_remote_code`)."""
    processor = save_fields.get("image_processor") or _default_image_processor(model)
    save_transformers_remote_code(model, processor, folder)
    facts = _segmentation_facts(model)
    example = _segmentation_example(model, processor, save_fields)
    if example is not None:
        facts["image_file"] = KINDS[SEGMENTATION].image_file
        example.save(folder / facts["image_file"])
        facts["image_caption"] = "An input image (left) and the classes the model predicts for it (right)."
    return facts


def _default_image_processor(model: Any) -> Any:
    from ..swin_fpn import SwinFPNImageProcessor

    size = model.config.image_size
    logger.warning(f"No image_processor given: saving a default SwinFPNImageProcessor at {size}x{size}.")
    return SwinFPNImageProcessor(size={"height": size, "width": size})


def _segmentation_facts(model: Any) -> dict[str, Any]:
    config = model.config
    checkpoint = config.backbone_checkpoint
    architecture = {
        "Backbone": f"Swin, patch {config.patch_size}, window {config.window_size}, embed dim {config.embed_dim}",
        "Depths / heads": f"{tuple(config.depths)} / {tuple(config.num_heads)}",
        **(
            {"UperNet channels / pool scales": f"{config.upernet_hidden_size} / {tuple(config.pool_scales)}"}
            if config.decode_head_type == "upernet"
            else {"FPN / head channels": f"{config.fpn_hidden_size} / {config.head_hidden_size}"}
        ),
        "Training resolution": f"{config.image_size}x{config.image_size}",
        "Classes": config.num_labels,
    }
    facts: dict[str, Any] = {
        "architecture": architecture,
        "decode_head": config.decode_head_type,
        "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "labels": [config.id2label[index] for index in sorted(config.id2label)],
        "started_from_checkpoint": checkpoint is not None,
    }
    if checkpoint and is_repo_id(checkpoint, namespaced=True):  # a local path is no metadata, and would leak a path
        facts["base_model"] = checkpoint
    return facts


def _segmentation_example(model: Any, processor: Any, save_fields: dict[str, Any]) -> Any:
    """The card's image: `example_image`, or `example_input` beside the predicted classes, or None."""
    example_image = save_fields.get("example_image")
    if example_image is False:
        return None
    if example_image is not None:
        return _open_image(example_image)
    if save_fields.get("example_input") is None:
        return None
    import torch

    image = _open_image(save_fields["example_input"]).convert("RGB")
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt").to(model.device))
    classes = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
    return side_by_side(image, colour_classes(classes.cpu().numpy(), class_colours(model.config.id2label)))


def _open_image(image: Any) -> Any:
    """A PIL image, or the image at a path (read whole, the file closed)."""
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return opened.copy()
    return image


def _save_ddpm(pipeline: Any, folder: Path, save_fields: dict[str, Any]) -> dict[str, Any]:
    """Saves the pipeline with its code laid out as diffusers remote code (`save_diffusers_remote_code`)."""
    save_diffusers_remote_code(pipeline, folder)
    facts = _ddpm_facts(pipeline)
    example = _ddpm_example(pipeline, save_fields)
    if example is not None:
        image, caption = example
        facts["image_file"] = KINDS[DDPM].image_file
        facts["image_caption"] = caption
        image.save(folder / facts["image_file"])
    return facts


def _ddpm_facts(pipeline: Any) -> dict[str, Any]:
    unet, scheduler = pipeline.unet.config, pipeline.scheduler.config
    height, width = (unet.sample_size, unet.sample_size) if isinstance(unet.sample_size, int) else unet.sample_size
    attention = [index for index, name in enumerate(unet.down_block_types) if "Attn" in name]
    architecture = {
        "UNet": f"{unet.in_channels} image channels, widths {tuple(unet.block_out_channels)}",
        "Residual blocks per level": unet.layers_per_block,
        "Self-attention at levels": ", ".join(map(str, attention)) or "none",
        "Dropout": unet.get("dropout", 0.0),
        "Diffusion steps T": scheduler.num_train_timesteps,
        "Noise schedule": f"{scheduler.get('beta_schedule', 'linear')} betas "
        f"{scheduler.get('beta_start')} to {scheduler.get('beta_end')}",
        "Sampler variance": scheduler.get("variance_type", "fixed_large"),
        "Prediction": scheduler.get("prediction_type", "epsilon"),
    }
    return {
        "architecture": architecture,
        "num_parameters": sum(parameter.numel() for parameter in pipeline.unet.parameters()),
        "sample_size": f"{height}x{width}",
        "num_train_timesteps": scheduler.num_train_timesteps,
    }


def _ddpm_example(pipeline: Any, save_fields: dict[str, Any]) -> tuple[Any, str] | None:
    """The card's image and caption: `example_image`, or a grid of samples drawn with a fixed seed."""
    example_image = save_fields.get("example_image")
    if example_image is False:
        return None
    if example_image is not None:
        return _open_image(example_image), "Samples from the model."
    import torch

    steps = int(save_fields.get("sample_steps") or pipeline.scheduler.config.num_train_timesteps)
    generator = torch.Generator().manual_seed(SAMPLE_GRID_SEED)
    images = pipeline(batch_size=SAMPLE_GRID_SIZE, generator=generator, num_inference_steps=steps).images
    caption = f"{SAMPLE_GRID_SIZE} samples (seed {SAMPLE_GRID_SEED}, {steps} sampling steps)."
    return image_grid(images, columns=SAMPLE_GRID_SIZE // 2), caption


def _check_weights(folder: Path) -> None:
    """Weights are safetensors only: no pickle files, which run code when loaded."""
    pickles = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"Refusing to publish pickle files {pickles}; save the weights as safetensors.")
    if not any(folder.rglob("*.safetensors")):
        raise ValueError(f"No safetensors weights were written to {folder}.")


def load_saved(folder: str | Path, allow_pickle: bool = False) -> tuple[Any, dict[str, Any]]:
    """
    Loads a saved model folder for publishing: a `DDPMPaperPipeline` (a `model_index.json`), or a SwinFPN model with
    its image processor (a `config.json` of model type "swin_fpn").

    The folder is checked first (`safe_loading.check_model_folder`): configs must parse, safetensors files must be
    whole, and weights are read from safetensors only unless `allow_pickle=True` (then `.bin` files are read with
    `torch.load(weights_only=True)`, never running code). No remote code is run.

    Returns:
        `(obj, save_fields)`: the model and the extra arguments `push_to_hub` needs for it (`image_processor`).

    Raises:
        `ValueError` (`safe_loading.ModelFileError` for a bad file): naming the folder or file and the problem.
    """
    folder = Path(folder)
    check_model_folder(folder, allow_pickle=allow_pickle)
    if (folder / "model_index.json").is_file():
        from ..diffusion import DDPMPaperPipeline

        with named_loading_errors(folder, "DDPMPaperPipeline"):
            return DDPMPaperPipeline.from_pretrained(folder, **safetensors_only(allow_pickle)), {}
    config_file = folder / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    if model_type != SEGMENTATION:
        raise ValueError(
            f"{folder}: neither a DDPMPaperPipeline folder (model_index.json) nor a SwinFPN model folder (config.json "
            f'with "model_type": "swin_fpn", got {model_type!r}).'
        )
    from ..swin_fpn import SwinFPNForSegmentation, SwinFPNImageProcessor

    save_fields = {}
    with named_loading_errors(folder, "SwinFPN model"):
        if (folder / "preprocessor_config.json").is_file():
            save_fields["image_processor"] = SwinFPNImageProcessor.from_pretrained(folder)
        return SwinFPNForSegmentation.from_pretrained(folder, **safetensors_only(allow_pickle)), save_fields
