"""One entry point for the training scripts' data: embedded datasets, Hub datasets and local folders.

:func:`load_image_dataset` returns a ``datasets.Dataset`` (or ``IterableDataset`` when streaming) whose columns are
normalised to ``image`` (generation) or ``image`` + ``annotation`` (segmentation); :func:`load_evaluation_split` the
held-out split an evaluation reads. Every problem the user can cause
(a missing folder, an unknown dataset, missing columns) raises ``ValueError`` with one line naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import datasets

from .embedded import EMBEDDED_DATASETS, GENERATED_DATASETS, embedded_dataset

Task = Literal["generation", "segmentation"]
TASKS: tuple[str, ...] = ("generation", "segmentation")
IMAGE_COLUMN_ALIASES = ("image", "img", "pixel_values", "images", "picture")
ANNOTATION_COLUMN_ALIASES = (
    "annotation",
    "label",
    "mask",
    "segmentation",
    "semantic_map",
    "seg_map",
    "labels",
    "masks",
    "annotations",
)
IMAGE_DIR_NAMES = ("images", "image", "img", "imgs")
MASK_DIR_NAMES = ("annotations", "masks", "labels", "annotation", "mask", "segmentations")
SPLIT_DIR_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid"),
    "test": ("test", "testing"),
}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
TABLE_SUFFIXES = frozenset({".parquet", ".arrow"})
EVALUATION_SPLITS = ("validation", "test")  # the held-out splits, in order of preference

AnyDataset = datasets.Dataset | datasets.IterableDataset


def _first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _as_split(
    loaded: AnyDataset | datasets.DatasetDict | datasets.IterableDatasetDict, split: str, source: str
) -> AnyDataset:
    """Pick ``split`` out of a dataset dict (a single dataset is returned as is)."""
    if isinstance(loaded, datasets.DatasetDict | datasets.IterableDatasetDict):
        if split not in loaded:
            raise ValueError(f"dataset {source} has no split {split!r}; its splits: {', '.join(loaded)}")
        return loaded[split]
    return loaded


def _maybe_streaming(dataset: AnyDataset, streaming: bool) -> AnyDataset:
    """Turn an in-memory ``Dataset`` into an ``IterableDataset`` when streaming, keeping its description."""
    if not streaming or isinstance(dataset, datasets.IterableDataset):
        return dataset
    iterable = dataset.to_iterable_dataset()
    iterable.info.description = dataset.info.description
    return iterable


def _is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _has_table_files(path: Path) -> bool:
    """Whether any file under ``path`` is a parquet or arrow table."""
    return any(child.suffix in TABLE_SUFFIXES for child in path.rglob("*") if child.is_file())


def _load_hub_or_path(
    path: str, config: str | None, split: str, streaming: bool, cache_dir: str | None, **kwargs: object
) -> AnyDataset:
    """``datasets.load_dataset`` with its not-found errors turned into one-line ``ValueError``s."""
    try:
        return datasets.load_dataset(path, config, split=split, streaming=streaming, cache_dir=cache_dir, **kwargs)
    except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError, ConnectionError) as error:
        raise ValueError(f"could not load dataset {path!r}: {_first_line(error)}") from error


def _load_local(path: Path, config: str | None, split: str, streaming: bool, cache_dir: str | None) -> AnyDataset:
    """A local file or folder: ``save_to_disk`` output, a parquet/arrow file, or anything ``load_dataset`` reads."""
    if path.is_dir() and _is_saved_dataset(path):
        dataset = _as_split(datasets.load_from_disk(str(path)), split, str(path))
        return _maybe_streaming(dataset, streaming)
    if path.is_file() and path.suffix in TABLE_SUFFIXES:
        files = {split: str(path)}
        return _load_hub_or_path(path.suffix[1:], None, split, streaming, cache_dir, data_files=files)
    return _load_hub_or_path(str(path), config, split, streaming, cache_dir)


def _split_dir_names(split: str) -> tuple[str, ...]:
    """The folder names that may hold ``split`` (``train`` → ``train``, ``training``)."""
    return SPLIT_DIR_ALIASES.get(split, (split,))


def _segmentation_folder_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Candidate (images folder, masks folder) pairs for ``split`` under ``root``, in order of preference:
    ``<split>/images`` + ``<split>/annotations``; ``images/<split>`` + ``annotations/<split>`` (the ADE20K layout);
    for ``train`` also ``images`` + ``annotations`` at the root. Mask folders may also be named ``masks``/``labels``."""
    pairs = []
    for split_name in _split_dir_names(split):
        for image_name in IMAGE_DIR_NAMES:
            for mask_name in MASK_DIR_NAMES:
                pairs.append((root / split_name / image_name, root / split_name / mask_name))
                pairs.append((root / image_name / split_name, root / mask_name / split_name))
    if split == "train":
        pairs += [
            (root / image_name, root / mask_name) for image_name in IMAGE_DIR_NAMES for mask_name in MASK_DIR_NAMES
        ]
    return pairs


def _is_one_set(root: Path) -> bool:
    """``root`` holds ``images/`` + ``annotations/`` (or their other names) and no split folders."""
    has_pair = any(
        (root / image_name).is_dir() and (root / mask_name).is_dir()
        for image_name in IMAGE_DIR_NAMES
        for mask_name in MASK_DIR_NAMES
    )
    split_names = {name for split in ("train", *EVALUATION_SPLITS) for name in _split_dir_names(split)}
    nested = any((root / name).is_dir() for name in split_names) or any(
        (root / folder / name).is_dir() for folder in (*IMAGE_DIR_NAMES, *MASK_DIR_NAMES) for name in split_names
    )
    return has_pair and not nested


def _image_files_by_stem(folder: Path) -> dict[str, Path]:
    """The image files directly in ``folder``, by file name without extension."""
    return {path.stem: path for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES}


def segmentation_folder_dataset(root: Path, split: str = "train") -> datasets.Dataset:
    """Pair the images and masks of a folder layout (see ``_segmentation_folder_pairs``) by file stem.

    Files are read lazily; the dataset keeps the paths. Every image needs a mask with the same stem.
    """
    for image_dir, mask_dir in _segmentation_folder_pairs(root, split):
        if not (image_dir.is_dir() and mask_dir.is_dir()):
            continue
        images, masks = _image_files_by_stem(image_dir), _image_files_by_stem(mask_dir)
        if not images:
            continue
        missing = sorted(set(images) - set(masks))
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(images)} images in {image_dir} have no mask of the same name in "
                f"{mask_dir} (e.g. {images[missing[0]].name})"
            )
        stems = sorted(images)
        features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
        mapping = {"image": [str(images[s]) for s in stems], "annotation": [str(masks[s]) for s in stems]}
        return datasets.Dataset.from_dict(mapping, features=features, split=split)
    raise ValueError(
        f"no {split!r} images with masks in {root}: expected images/ and annotations/ (or masks/) folders with "
        f"matching file names, optionally under {split}/, or parquet/arrow files with image and annotation columns"
    )


def _load_train_data_dir(root: Path, split: str, streaming: bool, task: Task, cache_dir: str | None) -> AnyDataset:
    """A local training folder: saved dataset, parquet/arrow files, an image folder or images + masks folders."""
    if not root.is_dir():
        raise ValueError(f"train_data_dir {str(root)!r} does not exist or is not a folder")
    if _is_saved_dataset(root) or _has_table_files(root):
        return _load_local(root, None, split, streaming, cache_dir)
    if task == "segmentation":
        return _maybe_streaming(segmentation_folder_dataset(root, split), streaming)
    return _load_hub_or_path("imagefolder", None, split, streaming, cache_dir, data_dir=str(root))


def _column_names(dataset: AnyDataset) -> list[str]:
    """The dataset's columns; for a stream without known features, the keys of its first example."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())


def _is_label_map_feature(feature: object) -> bool:
    """Whether a column's feature can hold segmentation masks (an image or an array; unknown counts as yes)."""
    return not isinstance(feature, datasets.ClassLabel | datasets.Value)


def _find_column(
    columns: list[str], aliases: tuple[str, ...], accept: Callable[[str], bool] = lambda name: True
) -> str | None:
    """The first column (case-insensitive) named by ``aliases`` that ``accept`` takes; None if none."""
    lowered = {column.lower(): column for column in columns}
    for alias in aliases:
        if alias in lowered and accept(lowered[alias]):
            return lowered[alias]
    return None


def normalize_columns(dataset: AnyDataset, task: Task, source: str = "the dataset") -> AnyDataset:
    """Rename the image (and, for segmentation, annotation) column to the standard names and drop the others.

    Image columns: ``image``, ``img``, ``pixel_values``, ...; annotation columns: ``annotation``, ``label``,
    ``mask``, ``segmentation``, ... (a class-label column is not a mask). Missing columns raise ``ValueError``.
    """
    columns = _column_names(dataset)
    features = dataset.features or {}
    image_column = _find_column(columns, IMAGE_COLUMN_ALIASES)
    wanted = {"image": image_column}
    needs = f"an image column (one of {', '.join(IMAGE_COLUMN_ALIASES)})"
    if task == "segmentation":
        wanted["annotation"] = _find_column(
            columns, ANNOTATION_COLUMN_ALIASES, lambda name: _is_label_map_feature(features.get(name))
        )
        needs += f" and a label-map column (one of {', '.join(ANNOTATION_COLUMN_ALIASES)})"
    if None in wanted.values():
        raise ValueError(f"{source} has columns [{', '.join(columns)}]; {task} needs {needs}")
    dataset = dataset.select_columns(list(wanted.values()))
    renames = {found: standard for standard, found in wanted.items() if found != standard}
    return dataset.rename_columns(renames) if renames else dataset


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | Path | None = None,
    split: str = "train",
    streaming: bool = False,
    task: Task = "generation",
    cache_dir: str | None = None,
    *,
    seed: int = 0,
    resolution: int | None = None,
) -> AnyDataset:
    """Load the images (generation) or images and label maps (segmentation) a training script needs.

    Exactly one source: ``dataset_name`` is an embedded name (``digits``, ``mnist``, ``digit_scenes``,
    ``shapes``; ``seed`` and ``resolution`` pass on to :func:`embedded_dataset`, ``resolution`` only for the
    generated ``digit_scenes`` and ``shapes``, whose images are made at that size), a local dataset file/folder (parquet, arrow, ``save_to_disk``) or a Hub dataset id
    (``datasets.load_dataset(name, config, split=..., streaming=...)``); ``train_data_dir`` is a local folder:
    for generation an image folder (``imagefolder``), for segmentation ``images/`` + ``annotations/`` (or
    ``masks/``) folders with matching file names, optionally per split, or parquet/arrow files.

    Columns come back as ``image`` (and ``annotation``), others dropped. Raises ``ValueError`` with one line for a
    missing folder, an unknown dataset, split or task, and missing columns.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError("give exactly one of dataset_name and train_data_dir")
    if train_data_dir is not None:
        source = f"train_data_dir {str(train_data_dir)!r}"
        dataset = _load_train_data_dir(Path(train_data_dir), split, streaming, task, cache_dir)
    elif dataset_name in EMBEDDED_DATASETS:
        source = f"embedded dataset {dataset_name!r}"
        generated_resolution = resolution if dataset_name in GENERATED_DATASETS else None
        dataset = embedded_dataset(dataset_name, split, seed=seed, resolution=generated_resolution)
        dataset = _maybe_streaming(dataset, streaming)
    elif Path(dataset_name).exists():
        source = f"dataset {dataset_name!r}"
        dataset = _load_local(Path(dataset_name), dataset_config_name, split, streaming, cache_dir)
    else:
        source = f"dataset {dataset_name!r}"
        dataset = _load_hub_or_path(dataset_name, dataset_config_name, split, streaming, cache_dir)
    return normalize_columns(dataset, task, source)


def load_evaluation_split(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | Path | None = None,
    split: str | None = None,
    task: Task = "segmentation",
) -> tuple[AnyDataset, str]:
    """The split to evaluate and its name: `split` when given (it must exist), else the first of
    :data:`EVALUATION_SPLITS` that exists, else, for a `train_data_dir` of segmentation folders without split
    sub-folders (just ``images/`` and ``annotations/``, the usual shape of an evaluation set), all of it, named
    ``"all"``; the source as :func:`load_image_dataset` takes it."""
    if not split and task == "segmentation" and train_data_dir is not None and _is_one_set(Path(train_data_dir)):
        return segmentation_folder_dataset(Path(train_data_dir), "train"), "all"
    errors = []
    for candidate in (split,) if split else EVALUATION_SPLITS:
        try:
            dataset = load_image_dataset(
                dataset_name=dataset_name,
                dataset_config_name=dataset_config_name,
                train_data_dir=train_data_dir,
                split=candidate,
                task=task,
            )
            return dataset, candidate
        except ValueError as error:
            errors.append(error)
    if split:
        raise errors[0]
    raise ValueError(f"no validation or test split found ({errors[-1]}); name one with --split.")
