"""The code files a saved folder ships so that `trust_remote_code=True` loads it where this package is not installed.

transformers copies them itself for SwinFPN (`register_for_auto_class` in `swin_fpn/__init__.py`: the defining files
and, recursively, the sibling files they import relatively, with `auto_map` in the configs). For the DDPM pipeline,
`save_diffusers_remote_code` lays out what diffusers' loader reads: the pipeline's file (and its relative imports) at
the root, the scheduler's beside `scheduler/scheduler_config.json`, named in `model_index.json` as `[file, class]`.
Either way the shipped files may import installed libraries and each other, never `hf_swin_ddpm`.
"""

from __future__ import annotations

import ast
import inspect
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGE = __name__.split(".")[0]


def save_transformers_remote_code(model: Any, processor: Any, folder: Path) -> None:
    """Saves a model and its image processor with `save_pretrained`, then checks that `config.json` names the classes
    in `auto_map` (the image processor's too: `SwinFPNConfig.to_dict` says why) and that the code files transformers
    copied load alone."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    if not {"AutoModelForSemanticSegmentation", "AutoImageProcessor"} <= set(config.get("auto_map", {})):
        raise ValueError(
            "The saved configs have no `auto_map`: import hf_swin_ddpm.swin_fpn (it registers the classes for remote "
            "code) before saving."
        )
    check_self_contained(sorted(folder.glob("*.py")))


def save_diffusers_remote_code(pipeline: Any, folder: Path) -> list[Path]:
    """Saves a pipeline with `save_pretrained` (safetensors) and copies its code for diffusers' remote-code loader.

    `model_index.json` then names the pipeline and a scheduler from outside diffusers as `[file, class]` pairs, so
    `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads them from the copied files; the UNet
    must be one of diffusers' own classes. `_name_or_path` (often a local path) is removed from the configs.

    Returns:
        `list[Path]`: the copied code files.
    """
    unet_class = type(getattr(pipeline.unet, "_orig_mod", pipeline.unet))
    if unet_class.__module__.split(".")[0] != "diffusers":
        raise ValueError(
            f"The UNet is a {unet_class.__name__} from {unet_class.__module__}; only diffusers' own UNet classes can "
            "be loaded where this package is not installed."
        )
    pipeline.save_pretrained(folder, safe_serialization=True)
    model_index = json.loads((folder / "model_index.json").read_text())
    pipeline_files = copy_code_files(type(pipeline), folder)
    model_index["_class_name"] = [pipeline_files[0].stem, type(pipeline).__name__]
    code_files = list(pipeline_files)
    scheduler_class = type(pipeline.scheduler)
    if scheduler_class.__module__.split(".")[0] != "diffusers":
        scheduler_files = copy_code_files(scheduler_class, folder / "scheduler")
        model_index["scheduler"] = [scheduler_files[0].stem, scheduler_class.__name__]
        code_files += scheduler_files
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2, sort_keys=True) + "\n")
    check_self_contained(code_files)
    _drop_load_paths([folder / "model_index.json", *folder.glob("*/*config.json")])
    return code_files


def copy_code_files(cls: type, destination: Path) -> list[Path]:
    """Copies into `destination` the file that defines `cls`, then the sibling files it imports relatively
    (recursively, as the remote-code loaders of transformers and diffusers fetch them). Returns the copies, the
    defining file first."""
    from diffusers.utils.dynamic_modules_utils import get_relative_import_files

    source = inspect.getsourcefile(cls)
    if source is None:
        raise ValueError(f"Cannot find the source file of {cls.__name__} to ship as remote code.")
    destination.mkdir(parents=True, exist_ok=True)
    sources = [source, *sorted(set(get_relative_import_files(source)) - {source})]
    copied = []
    for path in map(Path, sources):
        if not path.is_file():
            raise ValueError(f"{Path(source).name} imports {path.stem} relatively, but {path} does not exist.")
        copied.append(Path(shutil.copy(path, destination / path.name)))
    return copied


def check_self_contained(code_files: Sequence[Path]) -> None:
    """Remote code may import installed libraries and the sibling files shipped beside it, never this package."""
    for path in code_files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[0] == PACKAGE for name in names):
                raise ValueError(f"{path.name} imports {PACKAGE}, so it would not load where the package is absent.")
            if isinstance(node, ast.ImportFrom) and node.level:
                _check_sibling_import(path, node)


def _check_sibling_import(path: Path, node: ast.ImportFrom) -> None:
    """A relative import must name a file shipped beside `path` (`from .name import ...`)."""
    modules = [node.module] if node.module else [alias.name for alias in node.names]
    for module in modules:
        if node.level != 1 or not (path.parent / f"{module}.py").is_file():
            raise ValueError(f"{path.name} imports {'.' * node.level}{module}, which is not shipped beside it.")


def _drop_load_paths(config_files: Sequence[Path]) -> None:
    """Removes `_name_or_path` (where the object was loaded from, often a local path) from diffusers configs."""
    for path in config_files:
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
