"""Generated samples on disk: a `--samples_dir` of PNG files with a manifest, and the sample files of other tools.

- `SampleFolder`: sample i is `DIR/{i:06d}.png` (uint8, grayscale or RGB), written atomically (a temporary file,
  then `os.replace`), so a killed run leaves whole samples or none; `manifest.json` records what made them (model,
  seed, steps, sampler, variance, autocast, resolution, channels). A file that does not decode to an image of the
  recorded size (a truncated write, a stray file) counts as missing and is made again.
- `load_sample_images`: any folder of images, or a sample batch `.npz` as guided-diffusion's evaluator reads it
  (openai/guided-diffusion `evaluations/evaluator.py`: key `arr_0`, uint8 `(N, H, W, C)`), as uint8 `(N, C, H, W)`.
- `save_sample_batch`: our samples as such an `.npz`, for that evaluator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .extractors import EvaluationError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "hf-swin-ddpm samples v1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# what the manifest records; any difference means the samples on disk are of another distribution
MANIFEST_KEYS = (
    "model",
    "seed",
    "num_inference_steps",
    "sampler",
    "variance",
    "autocast_dtype",
    "resolution",
    "channels",
)


def _atomic_write(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """An image file as uint8 (C, H, W); `channels` 1 or 3 converts it (default: 1 for grayscale, else 3)."""
    with Image.open(path) as image:
        image.load()  # decodes everything: a truncated file raises here
        if channels is None:
            channels = 1 if image.mode in ("L", "1", "I", "I;16") else 3
        array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


class SampleFolder:
    """The samples of one (model, seed, steps, sampler, ...) in a folder, sample i in `{i:06d}.png`."""

    def __init__(self, folder: str | Path, manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.manifest = {key: manifest[key] for key in MANIFEST_KEYS}

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.png"

    def prepare(self, overwrite: bool = False, write: bool = True) -> None:
        """Check the folder's manifest against ours (a difference raises `EvaluationError` naming it, unless
        `overwrite`, which deletes the folder's samples) and write ours when `write` (the main process)."""
        stored = self.stored_manifest()
        if stored is not None:
            differences = [key for key in MANIFEST_KEYS if stored.get(key) != self.manifest[key]]
            if differences and not overwrite:
                key = differences[0]
                raise EvaluationError(
                    f"--samples_dir {self.folder} holds samples of {key} {stored.get(key)!r}, not "
                    f"{self.manifest[key]!r}; give another folder or add --overwrite to replace them."
                )
            if differences and write:
                for path in self.folder.glob("[0-9]*.png"):
                    path.unlink()
        if write:
            self.folder.mkdir(parents=True, exist_ok=True)
            for leftover in self.folder.glob(".[0-9]*.png.tmp"):  # the write a killed run was in the middle of
                leftover.unlink()
            text = json.dumps({"format": MANIFEST_FORMAT, **self.manifest}, indent=2) + "\n"
            _atomic_write(self.folder / MANIFEST, lambda path: path.write_text(text))

    def stored_manifest(self) -> dict[str, Any] | None:
        path = self.folder / MANIFEST
        if not path.is_file():
            if self.folder.is_dir() and any(self.folder.glob("[0-9]*.png")):
                raise EvaluationError(
                    f"--samples_dir {self.folder} holds images but no {MANIFEST}; give an empty or new folder (score "
                    "the images with --from_samples)."
                )
            return None
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            raise EvaluationError(f"--samples_dir {self.folder}: {MANIFEST} is not valid JSON; delete it.") from None
        if not isinstance(stored, dict) or stored.get("format") != MANIFEST_FORMAT:
            raise EvaluationError(f"--samples_dir {self.folder}: {MANIFEST} was not written by evaluate-ddpm.")
        return stored

    def read(self, index: int) -> np.ndarray | None:
        """Sample `index` as uint8 (C, H, W), or None when it is missing or does not decode to the recorded size."""
        path = self.path(index)
        if not path.is_file():
            return None
        try:
            array = _read_image(path, self.manifest["channels"])
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            return None
        side = self.manifest["resolution"]
        return array if array.shape[1:] == (side, side) else None

    def missing(self, indices) -> tuple[list[int], int]:
        """The indices among `indices` to make, and how many of them had a file that was unreadable (repaired)."""
        missing, broken = [], 0
        for index in indices:
            if self.read(index) is None:
                missing.append(index)
                broken += self.path(index).exists()
        return missing, broken

    def write(self, index: int, image: np.ndarray) -> None:
        """Sample `index` from uint8 (C, H, W), atomically."""
        array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        _atomic_write(self.path(index), lambda path: Image.fromarray(array).save(path, format="PNG"))

    def load(self, num_samples: int) -> torch.Tensor:
        """Samples 0 .. num_samples - 1 as uint8 (N, C, H, W); a missing one raises `EvaluationError`."""
        arrays = []
        for index in range(num_samples):
            array = self.read(index)
            if array is None:
                raise EvaluationError(f"--samples_dir {self.folder}: sample {self.path(index).name} is missing.")
            arrays.append(array)
        return torch.from_numpy(np.stack(arrays))


def load_sample_images(source: str | Path) -> torch.Tensor:
    """The samples of a folder of images (sorted by name; grayscale when all are, else RGB; all of one size) or of a
    sample batch `.npz` (`arr_0`, uint8 `(N, H, W, C)` or `(N, H, W)`), as uint8 `(N, C, H, W)`."""
    source = Path(source)
    if source.suffix == ".npz" and source.is_file():
        try:
            with np.load(source, allow_pickle=False) as stored:
                if "arr_0" not in stored.files:
                    raise EvaluationError(f"--from_samples {source}: no arr_0 array (a sample batch .npz holds one).")
                array = stored["arr_0"]
        except (OSError, ValueError) as error:
            if isinstance(error, EvaluationError):
                raise
            raise EvaluationError(f"--from_samples {source} is not a readable .npz ({error}).") from None
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4 or array.dtype != np.uint8 or array.shape[-1] not in (1, 3):
            raise EvaluationError(
                f"--from_samples {source}: arr_0 must be uint8 (N, H, W, C) with C 1 or 3, got {array.dtype} "
                f"{array.shape}."
            )
        return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
    if not source.is_dir():
        raise EvaluationError(f"--from_samples {source}: no such folder or .npz; give a folder of images or an .npz.")
    files = sorted(path for path in source.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvaluationError(f"--from_samples {source}: no image files ({', '.join(IMAGE_SUFFIXES)}).")
    modes = set()
    for path in files:
        try:
            with Image.open(path) as image:
                modes.add(image.mode)
        except (OSError, UnidentifiedImageError):
            raise EvaluationError(f"--from_samples {path} is not a readable image; remove it.") from None
    channels = 1 if modes <= {"L", "1", "I", "I;16"} else 3
    arrays = []
    for path in files:
        try:
            arrays.append(_read_image(path, channels))
        except (OSError, UnidentifiedImageError):
            raise EvaluationError(f"--from_samples {path} is truncated or unreadable; remove it.") from None
    if len({array.shape for array in arrays}) > 1:
        raise EvaluationError(f"--from_samples {source}: the images differ in size; give images of one size.")
    return torch.from_numpy(np.stack(arrays))


def save_sample_batch(path: str | Path, images: torch.Tensor) -> Path:
    """uint8 `(N, C, H, W)` samples as a guided-diffusion sample batch `.npz` (`arr_0`, uint8 `(N, H, W, C)`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = images.cpu().numpy().transpose(0, 2, 3, 1)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:  # a file object: np.savez would append .npz to a name
            np.savez(handle, arr_0=array)

    _atomic_write(path, write)
    return path
