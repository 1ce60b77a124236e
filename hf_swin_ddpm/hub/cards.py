"""Model cards: rendering a card from its template, and writing evaluation results into a card's `model-index`.

    from hf_swin_ddpm.hub import render_model_card, update_card_results

    card = render_model_card("swin_fpn", repo_id="me/swin-fpn-ade", datasets=["scene_parse_150"], mean_iou=0.41)
    update_card_results("ddpm-folder", {"fid": 3.17, "num_generated": 50000}, dataset="cifar10", split="train")

Every card is parsed back as the Hub parses it before it is saved; the results are `EvalResult`s that the Hub shows
as the `model-index` metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

SEGMENTATION = "swin_fpn"
DDPM = "ddpm"
MODEL_KINDS = (SEGMENTATION, DDPM)
PROJECT_TAG = "hf-swin-ddpm"
TEMPLATES_DIR = Path(__file__).parents[1] / "model_cards"
CARD_FILE = "README.md"
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

# `evaluate-ddpm` result keys -> (metric type, metric name) in the card's `model-index`
SAMPLE_METRICS: dict[str, tuple[str, str]] = {
    "fid": ("fid", "FID"),
    "kid_mean": ("kid", "KID"),
    "inception_score_mean": ("inception_score", "Inception Score"),
    "bits_per_dim": ("bits_per_dim", "NLL (bits/dim)"),
}
# mmseg's summary metrics as `model-index` metric types (mean_iou as the training card writes it).
SEGMENTATION_EVAL_METRICS: dict[str, tuple[str, str]] = {
    "mIoU": ("mean_iou", "mIoU"),
    "aAcc": ("pixel_accuracy", "aAcc"),
    "mAcc": ("mean_accuracy", "mAcc"),
    "mDice": ("mean_dice", "mDice"),
    "mFscore": ("mean_fscore", "mFscore"),
}
EVALUATION_METRICS = {DDPM: SAMPLE_METRICS, SEGMENTATION: SEGMENTATION_EVAL_METRICS}
SEGMENTATION_EVAL_SECTION = ("<!-- segmentation-eval:start -->", "<!-- segmentation-eval:end -->")

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
    "decode_head",
    "num_parameters",
    "labels",
    "started_from_checkpoint",
    "sample_size",
    "num_train_timesteps",
    "image_file",
    "image_caption",
)


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
        architecture (`Mapping[str, Any]`), decode_head (`str`: "semantic_fpn" or "upernet"), num_parameters (`int`),
            labels (`list[str]`), started_from_checkpoint (`bool`), sample_size (`str`), num_train_timesteps (`int`), image_file (`str`), image_caption (`str`):
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
        "decode_head": fields.get("decode_head") or "semantic_fpn",
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
    return [_eval_result(model_kind, dataset, split, (model_kind.metric_field, model_kind.metric_name), value)]


def _eval_result(
    model_kind: ModelKind,
    dataset: str,
    split: str | None,
    metric: tuple[str, str],
    value: Any,
    config: str | None = None,
    dataset_config: str | None = None,
) -> EvalResult:
    """One `model-index` entry: `metric` (type, name) of a `model_kind` model measured on `dataset`'s `split`."""
    metric_type, metric_name = metric
    return EvalResult(
        task_type=model_kind.pipeline_tag,
        task_name=model_kind.task_name,
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=split,
        dataset_config=dataset_config,
        metric_type=metric_type,
        metric_name=metric_name,
        metric_value=round(float(value), 6),
        metric_config=config,
    )


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


# ------------------------------------------------------------------------------------- evaluation results


def update_card_results(
    folder: str | Path,
    results: Mapping[str, Any],
    *,
    dataset: str,
    split: str | None = None,
    kind: str = DDPM,
    dataset_config: str | None = None,
) -> Path:
    """
    Puts the results of an evaluation command into the `model-index` of `folder/README.md`, replacing earlier values
    of the same metric on the same dataset and split and keeping every other result and the card's text. A folder
    without a card gets a minimal one. The card must parse back as the Hub parses it.

    Args:
        folder (`str` or `Path`): the local model folder.
        results (`Mapping`): the command's JSON. For `kind="ddpm"`, `hf-swin-ddpm evaluate-ddpm`'s sample quality:
            `fid`, `kid_mean`, `inception_score_mean`, `bits_per_dim` (with `features`, `num_generated` and
            `num_inference_steps` recorded as the metrics' config). For `kind="swin_fpn"`, `hf-swin-ddpm evaluate-seg`'s
            mmseg metrics as fractions: `mIoU`, `aAcc`, `mAcc`, `mDice`, `mFscore`; the protocol is recorded as their
            config, and a marked "Evaluation" section with the per-class IoU is written into the card's text.
        dataset (`str`), split (`str`, *optional*), dataset_config (`str`, *optional*): where they were measured.
        kind (`str`): "ddpm" (the default) or "swin_fpn".

    Returns:
        `Path`: the card file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; --update_card needs a local model folder.")
    model_kind = _model_kind_info(kind)
    new = [
        _eval_result(
            model_kind, dataset, split, metric, results[key], _measured_how(kind, key, results), dataset_config
        )
        for key, metric in EVALUATION_METRICS[kind].items()
        if results.get(key) is not None
    ]
    if not new:
        names = list(EVALUATION_METRICS[kind])
        raise ValueError(f"the results hold no {', '.join(names[:-1])} or {names[-1]} to record.")
    path = folder / CARD_FILE
    card = ModelCard.load(path) if path.is_file() else _minimal_card(model_kind, folder.resolve().name)
    kept = [old for old in (card.data.eval_results or []) if not any(_same_metric(old, entry) for entry in new)]
    card.data.eval_results = [*kept, *new]
    card.data.model_name = card.data.model_name or folder.resolve().name
    if kind == SEGMENTATION:
        card.text = _with_eval_section(card.text, results, dataset, split)
    _check_card_parses(card)
    card.save(path)
    return path


def update_segmentation_card_results(
    folder: str | Path, results: Mapping[str, Any], dataset: str, split: str, dataset_config: str | None = None
) -> Path:
    """`update_card_results` for the results of `hf-swin-ddpm evaluate-seg` (`kind="swin_fpn"`)."""
    return update_card_results(
        folder, results, dataset=dataset, split=split, kind=SEGMENTATION, dataset_config=dataset_config
    )


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


def _minimal_card(model_kind: ModelKind, name: str) -> ModelCard:
    """The card of a folder that has none: the kind's library and task, and the folder's name as the title."""
    data = ModelCardData(
        library_name=model_kind.library_name, pipeline_tag=model_kind.pipeline_tag, tags=[PROJECT_TAG]
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {name}\n")


def _same_metric(first: EvalResult, second: EvalResult) -> bool:
    keys = ("task_type", "dataset_type", "dataset_split", "metric_type")
    return all(getattr(first, key) == getattr(second, key) for key in keys)


def _measured_how(kind: str, key: str, results: Mapping[str, Any]) -> str:
    """The metric config of result `key`: the segmentation protocol, or the sampling settings of a sample statistic
    (the features, the number of samples and of steps)."""
    if kind == SEGMENTATION:
        return _protocol_summary(results)
    if key == "bits_per_dim":
        return "bound on the reference images"
    settings = f"{results.get('features', 'features')}, N={results.get('num_generated')}"
    return settings + f", {results.get('num_inference_steps')} steps"


def _protocol_summary(results: Mapping[str, Any]) -> str:
    """One line naming the protocol of `evaluate-seg`'s results (mmseg's resize, inference mode and TTA)."""
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


def _with_eval_section(text: str, results: Mapping[str, Any], dataset: str, split: str | None) -> str:
    """The card body with its marked segmentation evaluation section written (replacing an earlier one)."""
    start, end = SEGMENTATION_EVAL_SECTION
    metrics = SEGMENTATION_EVAL_METRICS
    summary = " | ".join(_percent_or_na(results.get(key)) for key in metrics)
    rows = [
        f"| {name} | {_percent_or_na(values.get('IoU'))} | {_percent_or_na(values.get('Acc'))} |"
        for name, values in list(results.get("per_class", {}).items())[:_LABELS_SHOWN]
    ]
    section = "\n".join(
        [
            start,
            f"## Evaluation on {dataset} ({split})",
            "",
            f"Protocol: {_protocol_summary(results)}; {results.get('num_images', '?')} images.",
            "",
            "| " + " | ".join(metrics) + " |",
            "|" + "---|" * len(metrics),
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
