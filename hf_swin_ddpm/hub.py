"""Publishing to the Hugging Face Hub: folders that load with or without this package, model cards, uploads.

    from hf_swin_ddpm.hub import push_to_hub, save_for_hub

    save_for_hub(model, "swin-fpn-ade", image_processor=processor, datasets=["scene_parse_150"], mean_iou=0.41)
    push_to_hub(pipeline, "me/ddpm-cifar10", datasets=["cifar10"], bits_per_dim=3.75)

A folder written by `save_for_hub` holds safetensors weights, configs, the code files that `trust_remote_code=True`
runs where this package is not installed, an example image and `README.md`, the model card rendered from the
templates in `model_cards/`. `push_to_hub` uploads exactly such a folder. Tokens are resolved by huggingface_hub
(`token=`, `HF_TOKEN`, the login cache) and never appear in cards, logs or error messages.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .imaging import image_grid

logger = logging.getLogger(__name__)

SEGMENTATION = "swin_fpn"
DDPM = "ddpm"
MODEL_KINDS = (SEGMENTATION, DDPM)
PROJECT_TAG = "hf-swin-ddpm"
TEMPLATES_DIR = Path(__file__).with_name("model_cards")
CARD_FILE = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENS_URL = "https://huggingface.co/settings/tokens"
SAMPLE_GRID_SIZE = 8
SAMPLE_GRID_SEED = 0
_LABELS_SHOWN = 50


@dataclass(frozen=True)
class ModelKind:
    """What the Hub metadata says about one kind of model."""

    library_name: str
    pipeline_tag: str
    tags: tuple[str, ...]
    task_name: str
    metric_field: str  # the card field holding the headline result
    metric_name: str
    image_file: str


KINDS: dict[str, ModelKind] = {
    SEGMENTATION: ModelKind(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=(PROJECT_TAG, "swin", "fpn", "semantic-segmentation", "vision"),
        task_name="Semantic segmentation",
        metric_field="mean_iou",
        metric_name="Mean IoU",
        image_file="example_prediction.png",
    ),
    DDPM: ModelKind(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=(PROJECT_TAG, "ddpm", "diffusion", "unconditional-image-generation"),
        task_name="Unconditional image generation",
        metric_field="bits_per_dim",
        metric_name="NLL (bits/dim)",
        image_file="sample_grid.png",
    ),
}

# Fields `render_model_card` takes; `save_for_hub` and `push_to_hub` fill the model's facts (architecture,
# num_parameters, labels, image_file, ...) themselves and take the rest from their caller.
CARD_FIELDS = (
    "repo_id",
    "model_name",
    "datasets",
    "training_data",
    "license",
    "base_model",
    "tags",
    "hyperparameters",
    "mean_iou",
    "bits_per_dim",
    "eval_dataset",
    "eval_split",
    "limitations",
    "architecture",
    "num_parameters",
    "labels",
    "started_from_checkpoint",
    "sample_size",
    "num_train_timesteps",
    "image_file",
    "image_caption",
)
# Fields only `save_for_hub` / `push_to_hub` take: how to make the example image, and the processor.
SAVE_FIELDS = ("image_processor", "example_image", "example_input", "sample_steps", "results_from")


class HubPublishError(ValueError):
    """Publishing to the Hub failed; the message says why and what to do. It never contains a token.

    `transient` is True for failures worth retrying: the Hub unreachable, a timeout, 429 or a 5xx answer.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# ---------------------------------------------------------------------------------------------- model cards


def render_model_card(kind: str, **card_fields: Any) -> ModelCard:
    """
    Renders the model card of a `kind` ("swin_fpn" or "ddpm") model from its template in `model_cards/`.

    Card fields (all optional):
        repo_id (`str`): the repository, used in the loading examples.
        model_name (`str`): the title; defaults to the repository name.
        datasets (`str` or `list[str]`): Hub ids of the training datasets.
        training_data (`str`): a sentence on the data (splits, preprocessing, resolution).
        license (`str`): defaults to "apache-2.0".
        base_model (`str`): the Hub id the weights started from.
        tags (`list[str]`): tags added to the kind's own.
        hyperparameters (`Mapping[str, Any]`): training hyperparameters, shown as a table.
        mean_iou (`float`, segmentation) / bits_per_dim (`float`, DDPM): the measured result, recorded as
            `model-index` metadata; mean IoU as a fraction in [0, 1].
        eval_dataset (`str`): where the result was measured; defaults to the first of `datasets`.
        eval_split (`str`): the split it was measured on; defaults to "validation" ("test" for bits/dim).
        limitations (`str`): a sentence added to the limitations.
        architecture (`Mapping[str, Any]`), num_parameters (`int`), labels (`list[str]`), started_from_checkpoint
            (`bool`), sample_size (`str`), num_train_timesteps (`int`), image_file (`str`), image_caption (`str`):
            the model's facts and the example image's file name, which `save_for_hub` fills in.

    Raises:
        `ValueError`: an unknown kind or field, or a result that is out of range or lacks its dataset.
    """
    model_kind = _model_kind_info(kind)
    unknown = sorted(set(card_fields) - set(CARD_FIELDS))
    if unknown:
        raise ValueError(f"Unknown model card fields {unknown}; valid fields: {', '.join(CARD_FIELDS)}.")
    fields = dict(card_fields)
    repo_id = fields.get("repo_id") or "your-username/your-model"
    model_name = fields.get("model_name") or repo_id.rsplit("/", 1)[-1]
    datasets = _as_list(fields.get("datasets"))
    base_model = fields.get("base_model")
    results = _eval_results(kind, model_kind, model_name, fields, datasets)
    card_data = ModelCardData(
        library_name=model_kind.library_name,
        pipeline_tag=model_kind.pipeline_tag,
        tags=[*model_kind.tags, *_as_list(fields.get("tags"))],
        datasets=datasets or None,
        license=fields.get("license") or "apache-2.0",
        base_model=base_model,
        model_name=model_name,
        eval_results=results or None,
    )
    template_kwargs = {
        "model_name": model_name,
        "repo_id": repo_id,
        "datasets": datasets,
        "training_data": fields.get("training_data"),
        "base_model": base_model,
        "hyperparameters": _rows(fields.get("hyperparameters")),
        "results": [_result_row(result) for result in results],
        "limitations": fields.get("limitations"),
        "architecture": _rows(fields.get("architecture")),
        "num_parameters": _format_count(fields.get("num_parameters")),
        "labels": _as_list(fields.get("labels"))[:_LABELS_SHOWN],
        "started_from_checkpoint": bool(fields.get("started_from_checkpoint")),
        "sample_size": fields.get("sample_size") or "",
        "num_train_timesteps": fields.get("num_train_timesteps") or 1000,
        "image_file": fields.get("image_file"),
        "image_caption": fields.get("image_caption") or "Example",
    }
    template = TEMPLATES_DIR / f"{kind}_card.md"
    card = ModelCard.from_template(card_data, template_path=str(template), **template_kwargs)
    _check_card_parses(card)
    return card


def write_model_card(folder: str | Path, kind: str, **card_fields: Any) -> Path:
    """Renders the card of a `kind` model (`render_model_card`'s fields) into `folder/README.md`; returns its path."""
    path = Path(folder) / CARD_FILE
    render_model_card(kind, **card_fields).save(path)
    return path


def _model_kind_info(kind: str) -> ModelKind:
    if kind not in KINDS:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of {list(MODEL_KINDS)}.")
    return KINDS[kind]


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _rows(mapping: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A mapping as (name, value) table rows, values formatted for Markdown."""
    return [(str(name), _format_value(value)) for name, value in (mapping or {}).items()]


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(item) for item in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _format_count(count: int | None) -> str:
    if count is None:
        return "not recorded"
    if count >= 1_000_000:
        return f"{count / 1e6:.1f}M ({count:,})"
    return f"{count:,}"


def _eval_results(
    kind: str, model_kind: ModelKind, model_name: str, fields: Mapping[str, Any], datasets: list[str]
) -> list[EvalResult]:
    """The measured result as `model-index` metadata, checked for range and dataset."""
    other_kind_metric = {KINDS[other].metric_field for other in MODEL_KINDS if other != kind}
    given_elsewhere = [name for name in other_kind_metric if fields.get(name) is not None]
    if given_elsewhere:
        raise ValueError(f"{given_elsewhere[0]} does not apply to a {kind} model; use {model_kind.metric_field}.")
    value = fields.get(model_kind.metric_field)
    if value is None:
        return []
    value = float(value)
    if kind == SEGMENTATION and not 0.0 <= value <= 1.0:
        raise ValueError(f"mean_iou must be a fraction in [0, 1], got {value} (divide a percentage by 100).")
    if kind == DDPM and not value > 0.0:
        raise ValueError(f"bits_per_dim must be positive, got {value}.")
    dataset = fields.get("eval_dataset") or (datasets[0] if datasets else None)
    if not dataset:
        raise ValueError(
            f"{model_kind.metric_field} needs the dataset it was measured on: pass datasets=[...] or eval_dataset=..."
        )
    split = fields.get("eval_split") or ("test" if kind == DDPM else "validation")
    result = EvalResult(
        task_type=model_kind.pipeline_tag,
        task_name=model_kind.task_name,
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=split,
        metric_type=model_kind.metric_field,
        metric_name=model_kind.metric_name,
        metric_value=round(value, 6),
    )
    return [result]


def _result_row(result: EvalResult) -> dict[str, str]:
    return {
        "name": result.metric_name or result.metric_type,
        "value": _format_value(result.metric_value),
        "dataset": result.dataset_name,
        "split": result.dataset_split or "",
    }


def _check_card_parses(card: ModelCard) -> None:
    """Parses the rendered card back as the Hub client does: metadata and `model-index` must round-trip."""
    parsed = ModelCard(str(card))
    if parsed.data.to_dict() != card.data.to_dict():
        raise ValueError("The rendered model card's metadata does not parse back to itself; check the card fields.")


# ----------------------------------------------------------------------------------------------- saving


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
    """Saves the model and its processor (transformers copies their code files and writes `auto_map`)."""
    processor = save_fields.get("image_processor") or _default_image_processor(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    if "AutoModelForSemanticSegmentation" not in config.get("auto_map", {}) or "auto_map" not in preprocessor:
        raise ValueError(
            "The saved configs have no `auto_map`: import hf_swin_ddpm.swin_fpn (it registers the classes for remote "
            "code) before saving."
        )
    _check_self_contained(sorted(folder.glob("*.py")))
    facts = _segmentation_facts(model)
    example = _segmentation_example(model, processor, save_fields)
    if example is not None:
        facts["image_file"] = KINDS[SEGMENTATION].image_file
        example.save(folder / facts["image_file"])
        facts["image_caption"] = "An input image (left) and the classes the model predicts for it (right)."
    return facts


def _default_image_processor(model: Any) -> Any:
    from .swin_fpn import SwinFPNImageProcessor

    size = model.config.image_size
    logger.warning(f"No image_processor given: saving a default SwinFPNImageProcessor at {size}x{size}.")
    return SwinFPNImageProcessor(size={"height": size, "width": size})


def _segmentation_facts(model: Any) -> dict[str, Any]:
    config = model.config
    checkpoint = config.backbone_checkpoint
    architecture = {
        "Backbone": f"Swin, patch {config.patch_size}, window {config.window_size}, embed dim {config.embed_dim}",
        "Depths / heads": f"{tuple(config.depths)} / {tuple(config.num_heads)}",
        "FPN / head channels": f"{config.fpn_hidden_size} / {config.head_hidden_size}",
        "Training resolution": f"{config.image_size}x{config.image_size}",
        "Classes": config.num_labels,
    }
    facts: dict[str, Any] = {
        "architecture": architecture,
        "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "labels": [config.id2label[index] for index in sorted(config.id2label)],
        "started_from_checkpoint": checkpoint is not None,
    }
    if checkpoint and _looks_like_repo_id(checkpoint):
        facts["base_model"] = checkpoint
    return facts


def _looks_like_repo_id(name: str) -> bool:
    """`namespace/name` as on the Hub (a local path is not metadata the Hub accepts, and would leak a path)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not name.endswith((".", "-"))


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
    return _side_by_side(image, _colour_classes(classes.cpu().numpy(), model.config.num_labels))


def _colour_classes(classes: Any, num_labels: int) -> Any:
    """A class map as an RGB image, one fixed colour per class."""
    import numpy as np
    from PIL import Image

    palette = np.random.default_rng(0).integers(0, 256, size=(max(num_labels, 1), 3), dtype=np.uint8)
    return Image.fromarray(palette[classes.clip(0, num_labels - 1)])


def _side_by_side(left: Any, right: Any) -> Any:
    from PIL import Image

    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def _open_image(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return opened.copy()
    return image


def _save_ddpm(pipeline: Any, folder: Path, save_fields: dict[str, Any]) -> dict[str, Any]:
    """Saves the pipeline laid out as diffusers remote code: pipeline file at the root, scheduler file beside its config.

    `model_index.json` names the pipeline and the scheduler as `[file, class]` pairs, so
    `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads them from the copied files.
    """
    unet_class = type(getattr(pipeline.unet, "_orig_mod", pipeline.unet))
    if unet_class.__module__.split(".")[0] != "diffusers":
        raise ValueError(
            f"The UNet is a {unet_class.__name__} from {unet_class.__module__}; only diffusers' own UNet classes can "
            "be loaded where this package is not installed."
        )
    pipeline.save_pretrained(folder, safe_serialization=True)
    pipeline_file = _copy_source(type(pipeline), folder)
    scheduler_class = type(pipeline.scheduler)
    model_index = json.loads((folder / "model_index.json").read_text())
    model_index["_class_name"] = [pipeline_file.stem, type(pipeline).__name__]
    code_files = [pipeline_file]
    if scheduler_class.__module__.split(".")[0] != "diffusers":
        scheduler_file = _copy_source(scheduler_class, folder / "scheduler")
        model_index["scheduler"] = [scheduler_file.stem, scheduler_class.__name__]
        code_files.append(scheduler_file)
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n")
    _check_self_contained(code_files)
    _drop_load_paths([folder / "model_index.json", *folder.glob("*/*config.json")])

    facts = _ddpm_facts(pipeline)
    example = _ddpm_example(pipeline, save_fields)
    if example is not None:
        image, caption = example
        facts["image_file"] = KINDS[DDPM].image_file
        facts["image_caption"] = caption
        image.save(folder / facts["image_file"])
    return facts


def _drop_load_paths(config_files: Sequence[Path]) -> None:
    """Removes `_name_or_path` (where the object was loaded from, often a local path) from diffusers configs."""
    for path in config_files:
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _copy_source(cls: type, destination: Path) -> Path:
    """Copies the file that defines `cls` into `destination`."""
    source = inspect.getsourcefile(cls)
    if source is None:
        raise ValueError(f"Cannot find the source file of {cls.__name__} to ship as remote code.")
    destination.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, destination / Path(source).name))


def _check_self_contained(code_files: Sequence[Path]) -> None:
    """Remote code may import installed libraries and (transformers) its sibling files, never this package."""
    for path in code_files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[0] == "hf_swin_ddpm" for name in names):
                raise ValueError(
                    f"{path.name} imports hf_swin_ddpm, so it would not load where the package is absent."
                )
            if isinstance(node, ast.ImportFrom) and node.level and not (path.parent / f"{node.module}.py").is_file():
                raise ValueError(f"{path.name} imports .{node.module}, which is not shipped beside it.")


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
    from .safe_loading import check_model_folder, named_loading_errors, safetensors_only

    folder = Path(folder)
    check_model_folder(folder, allow_pickle=allow_pickle)
    if (folder / "model_index.json").is_file():
        from .diffusion import DDPMPaperPipeline

        with named_loading_errors(folder, "DDPMPaperPipeline"):
            return DDPMPaperPipeline.from_pretrained(folder, **safetensors_only(allow_pickle)), {}
    config_file = folder / "config.json"
    model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    if model_type != SEGMENTATION:
        raise ValueError(
            f"{folder}: neither a DDPMPaperPipeline folder (model_index.json) nor a SwinFPN model folder (config.json "
            f'with "model_type": "swin_fpn", got {model_type!r}).'
        )
    from .swin_fpn import SwinFPNForSegmentation, SwinFPNImageProcessor

    save_fields = {}
    with named_loading_errors(folder, "SwinFPN model"):
        if (folder / "preprocessor_config.json").is_file():
            save_fields["image_processor"] = SwinFPNImageProcessor.from_pretrained(folder)
        return SwinFPNForSegmentation.from_pretrained(folder, **safetensors_only(allow_pickle)), save_fields


# ---------------------------------------------------------------------------------------------- pushing


def push_to_hub(
    obj: Any,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    **card_fields: Any,
) -> str:
    """
    Creates `repo_id` on the Hub if needed and uploads a `save_for_hub` folder of `obj` to it.

    Args:
        obj: a `SwinFPNForSegmentation` (pass its processor as `image_processor=`) or a `DDPMPaperPipeline`.
        repo_id (`str`): "namespace/name", or "name" for your own namespace.
        private (`bool`): create the repository private (an existing repository keeps its visibility).
        token (`str`, *optional*): defaults to `HF_TOKEN` or the token saved by `hf auth login`.
        commit_message (`str`, *optional*): defaults to "Upload <kind> model with hf-swin-ddpm".
        card_fields: as for `save_for_hub`; `repo_id` defaults to this repository.

    Returns:
        `str`: the URL of the commit.

    Raises:
        `HubPublishError`: no token, a token the Hub rejects or that cannot write to the repository, an unreachable
            Hub or offline mode; one line saying what to do.
    """
    kind = model_kind(obj)
    token = require_token(token)
    api = HfApi(token=token)
    with _explained_hub_errors(repo_id, api.endpoint, token):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # "name" -> "namespace/name"
    card_fields.setdefault("repo_id", repo_id)
    with tempfile.TemporaryDirectory(prefix="hf-swin-ddpm-push-") as temporary:
        folder = save_for_hub(obj, Path(temporary) / "repo", **card_fields)
        with _explained_hub_errors(repo_id, api.endpoint, token):
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {kind} model with {PROJECT_TAG}",
            )
    logger.info(f"Pushed to {commit.commit_url}")
    return commit.commit_url


def require_token(token: str | None = None) -> str:
    """The token to write with: `token`, else `HF_TOKEN` or the login cache; a `HubPublishError` if there is none."""
    token = token or get_token()
    if not token:
        raise HubPublishError(
            "No Hugging Face token found: log in with `hf auth login`, or set HF_TOKEN to a token with write access "
            f"({TOKENS_URL})."
        )
    return token


@contextmanager
def _explained_hub_errors(repo_id: str, endpoint: str, token: str) -> Iterator[None]:
    """Turns the errors a user meets into one `HubPublishError` line saying what to do (with the token redacted)."""
    try:
        yield
    except OfflineModeIsEnabled:
        raise HubPublishError("HF_HUB_OFFLINE is set, so nothing can be pushed: unset it and try again.") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        transient = status is not None and (status == 429 or status >= 500)
        raise HubPublishError(_redact(_http_error_message(error, repo_id), token), transient=transient) from None
    except _transport_errors() as error:
        reason = _redact(_one_line(str(error)) or type(error).__name__, token)
        raise HubPublishError(
            transient=True,
            message=f"Could not reach the Hugging Face Hub at {endpoint} ({reason}): check your network connection"
            " (and HF_ENDPOINT if you set it), then try again.",
        ) from None


def _http_error_message(error: HfHubHTTPError, repo_id: str) -> str:
    status = error.response.status_code if error.response is not None else None
    server = _one_line(error.server_message or "")
    detail = f" (the Hub said: {server})" if server else ""
    if status == 401:
        return (
            f"The Hub rejected the token (401 Unauthorized){detail}: log in again with `hf auth login` or set HF_TOKEN "
            f"to a valid token with write access ({TOKENS_URL})."
        )
    if status == 403:
        return (
            f"No write access to {repo_id} (403 Forbidden){detail}: push to a repository in your own namespace or an "
            f"organization you can write to, or use a token with write permission ({TOKENS_URL})."
        )
    if status == 404:
        return f"Repository {repo_id} not found (404){detail}: check the name and that your token can see it."
    return f"The Hub answered {status} while pushing to {repo_id}{detail}; try again later."


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The connection errors of the HTTP libraries huggingface_hub may use."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        error = getattr(module, "TransportError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


# ------------------------------------------------------------------------------------- sample-quality results

# `evaluate-ddpm` result keys -> (metric type, metric name) in the card's `model-index`
SAMPLE_METRICS: dict[str, tuple[str, str]] = {
    "fid": ("fid", "FID"),
    "kid_mean": ("kid", "KID"),
    "inception_score_mean": ("inception_score", "Inception Score"),
    "bits_per_dim": ("bits_per_dim", "NLL (bits/dim)"),
}


def _sample_metric_results(results: Mapping[str, Any], dataset: str, split: str | None) -> list[EvalResult]:
    """The measured values of `results` as `EvalResult`s, the sampling settings in each metric's config."""
    kind = KINDS[DDPM]
    settings = f"{results.get('features', 'features')}, N={results.get('num_generated')}"
    settings += f", {results.get('num_inference_steps')} steps"
    entries = []
    for key, (metric_type, metric_name) in SAMPLE_METRICS.items():
        value = results.get(key)
        if value is None:
            continue
        config = "bound on the reference images" if key == "bits_per_dim" else settings
        entries.append(
            EvalResult(
                task_type=kind.pipeline_tag,
                task_name=kind.task_name,
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split,
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=round(float(value), 6),
                metric_config=config,
            )
        )
    return entries


def _same_metric(first: EvalResult, second: EvalResult) -> bool:
    keys = ("task_type", "dataset_type", "dataset_split", "metric_type")
    return all(getattr(first, key) == getattr(second, key) for key in keys)


def update_card_results(
    folder: str | Path, results: Mapping[str, Any], *, dataset: str, split: str | None = None
) -> Path:
    """
    Puts sample-quality results (`hf-swin-ddpm evaluate-ddpm`'s JSON: `fid`, `kid_mean`, `inception_score_mean`,
    `bits_per_dim`) into the `model-index` of `folder/README.md`, replacing earlier values of the same metric on the
    same dataset and split and keeping every other result and the card's text. A folder without a card gets a
    minimal DDPM card. The card must parse back as the Hub parses it.

    Returns:
        `Path`: the card file.
    """
    path = Path(folder) / CARD_FILE
    if not Path(folder).is_dir():
        raise ValueError(f"{folder} is not a folder; --update_card needs a local model folder.")
    new = _sample_metric_results(results, dataset, split)
    if not new:
        raise ValueError("the results hold no fid, kid_mean, inception_score_mean or bits_per_dim to record.")
    if path.is_file():
        card = ModelCard.load(path)
    else:
        data = ModelCardData(library_name=KINDS[DDPM].library_name, pipeline_tag=KINDS[DDPM].pipeline_tag)
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {Path(folder).resolve().name}\n")
    kept = [old for old in (card.data.eval_results or []) if not any(_same_metric(old, entry) for entry in new)]
    card.data.eval_results = [*kept, *new]
    if not card.data.model_name:
        card.data.model_name = Path(folder).resolve().name
    _check_card_parses(card)
    card.save(path)
    return path


# ------------------------------------------------------------------------- segmentation evaluation results

# mmseg's summary metrics as `model-index` metric types (mean_iou as the training card writes it).
SEGMENTATION_EVAL_METRICS: dict[str, tuple[str, str]] = {
    "mIoU": ("mean_iou", "mIoU"),
    "aAcc": ("pixel_accuracy", "aAcc"),
    "mAcc": ("mean_accuracy", "mAcc"),
    "mDice": ("mean_dice", "mDice"),
    "mFscore": ("mean_fscore", "mFscore"),
}
SEGMENTATION_EVAL_SECTION = ("<!-- segmentation-eval:start -->", "<!-- segmentation-eval:end -->")


def _protocol_summary(results: Mapping[str, Any]) -> str:
    """One line naming the protocol of `segmentation_eval.evaluate_segmentation` results."""
    protocol = results.get("protocol", {})
    parts = [f"keep-ratio resize to {tuple(results.get('scale', ()))}", f"{protocol.get('mode', 'whole')} inference"]
    if protocol.get("mode") == "slide":
        parts.append(
            f"crop {protocol.get('crop_size') or 'image_size'}, stride {protocol.get('stride') or '2/3 crop'}"
        )
    scales = protocol.get("scales") or [1.0]
    if list(scales) != [1.0] or protocol.get("flip"):
        parts.append(f"TTA scales {list(scales)}" + (" + flip" if protocol.get("flip") else ""))
    parts.append("scored at the label maps' size")
    return ", ".join(parts)


def update_segmentation_card_results(
    folder: str | Path, results: Mapping[str, Any], dataset: str, split: str, dataset_config: str | None = None
) -> Path:
    """Write `hf-swin-ddpm evaluate-seg` results into `folder/README.md`: the summary metrics (mIoU, aAcc, mAcc,
    mDice, mFscore, as fractions) in the card's `model-index`, replacing earlier results for the same dataset, split
    and metric, and a marked "Evaluation" section with the protocol and the per-class IoU. A folder without a card
    gets a minimal one. Returns the card's path; the card is checked to parse back."""
    path = Path(folder) / CARD_FILE
    card = (
        ModelCard.load(path)
        if path.is_file()
        else ModelCard.from_template(
            ModelCardData(library_name="transformers", pipeline_tag="image-segmentation", tags=[PROJECT_TAG])
        )
    )
    config_line = _protocol_summary(results)
    new = [
        EvalResult(
            task_type="image-segmentation",
            task_name="Semantic Segmentation",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            dataset_config=dataset_config,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(float(results[key]), 6),
            metric_config=config_line,
        )
        for key, (metric_type, metric_name) in SEGMENTATION_EVAL_METRICS.items()
        if results.get(key) is not None
    ]
    replaced = {(r.dataset_type, r.dataset_split, r.metric_type) for r in new}
    kept = [
        r for r in (card.data.eval_results or []) if (r.dataset_type, r.dataset_split, r.metric_type) not in replaced
    ]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or Path(folder).resolve().name
    card.text = _with_eval_section(card.text, results, dataset, split, config_line)
    _check_card_parses(card)
    card.save(path)
    return path


def _with_eval_section(text: str, results: Mapping[str, Any], dataset: str, split: str, config_line: str) -> str:
    """The card body with its marked evaluation section written (replacing an earlier one)."""
    start, end = SEGMENTATION_EVAL_SECTION
    summary = " | ".join(_percent_or_na(results.get(key)) for key in SEGMENTATION_EVAL_METRICS)
    rows = [
        f"| {name} | {_percent_or_na(values.get('IoU'))} | {_percent_or_na(values.get('Acc'))} |"
        for name, values in list(results.get("per_class", {}).items())[:_LABELS_SHOWN]
    ]
    section = "\n".join(
        [
            start,
            f"## Evaluation on {dataset} ({split})",
            "",
            f"Protocol: {config_line}; {results.get('num_images', '?')} images.",
            "",
            "| " + " | ".join(SEGMENTATION_EVAL_METRICS) + " |",
            "|" + "---|" * len(SEGMENTATION_EVAL_METRICS),
            f"| {summary} |",
            "",
            "| Class | IoU | Acc |",
            "|---|---|---|",
            *rows,
            end,
        ]
    )
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + section + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def _percent_or_na(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def carry_card_results(card_file: str | Path, source_folder: str | Path) -> Path:
    """Add to the card `card_file` the `model-index` results of `source_folder`'s card that it does not have (the
    same task, dataset, split and metric count as had), and its marked segmentation evaluation section: so that a
    card rendered again from its fields, as a push does, keeps what the evaluation commands wrote into the local card.
    A source folder without a card changes nothing. Returns `card_file`; the card is checked to parse back."""
    card_file, source = Path(card_file), Path(source_folder) / CARD_FILE
    if not source.is_file():
        return card_file
    local, card = ModelCard.load(source), ModelCard.load(card_file)
    present = card.data.eval_results or []
    missing = [old for old in (local.data.eval_results or []) if not any(_same_metric(old, new) for new in present)]
    if missing:
        card.data.eval_results = [*present, *missing]
    start, end = SEGMENTATION_EVAL_SECTION
    if start in local.text and end in local.text and start not in card.text:
        section = start + local.text.split(start, 1)[1].split(end, 1)[0] + end
        card.text = card.text.rstrip("\n") + "\n\n" + section + "\n"
    _check_card_parses(card)
    card.save(card_file)
    return card_file
