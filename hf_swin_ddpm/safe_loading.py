"""Loading saved models without trusting their files.

    from hf_swin_ddpm.safe_loading import check_model_folder, named_loading_errors, safetensors_only

    check_model_folder(folder)                      # configs parse, safetensors headers are whole, no lone pickles
    with named_loading_errors(folder, "SwinFPN model"):
        model = SwinFPNForSegmentation.from_pretrained(folder, **safetensors_only(allow_pickle=False))

The rules the package's entry points (CLI, training resume, the Space, `hub.load_saved`) follow:

- weights are read from safetensors only; a pickle (`.bin`, `.pt`, `.pkl`, ...) is loaded only when the caller opts in
  (`allow_pickle=True`, `--allow_pickle`), and then by transformers / diffusers with `torch.load(weights_only=True)`,
  which rebuilds tensors and refuses arbitrary objects (a `__reduce__` that would run code is never called);
- remote code is never run unless the caller passes `trust_remote_code=True` themselves;
- a damaged, truncated or mistyped file gives a `ModelFileError` (a `ValueError`) naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelFileError(ValueError):
    """A saved model's file is missing, damaged, or a pickle the caller did not allow; the message names the file."""


def safetensors_only(allow_pickle: bool = False) -> dict[str, Any]:
    """The `from_pretrained` keyword arguments that read safetensors only, unless `allow_pickle` (then transformers
    and diffusers fall back to `torch.load(weights_only=True)` for a folder without safetensors)."""
    return {} if allow_pickle else {"use_safetensors": True}


def check_model_folder(folder: str | Path, allow_pickle: bool = False) -> None:
    """Checks a saved model folder before any library reads it.

    Every JSON file must hold a JSON object; every safetensors file must have a readable header that covers the file
    (a truncated or overwritten header is caught here; safetensors has no checksum of the tensor bytes, so altered
    values inside an intact file load as they are); without `allow_pickle`, a pickle with no safetensors file beside
    it is refused.

    Raises:
        `ModelFileError`: naming the first bad file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"{folder}: not a folder.")
    for path in sorted(folder.rglob("*.json")):
        _check_json(path)
    for path in sorted(folder.rglob("*.safetensors")):
        _check_safetensors(path)
    if not allow_pickle:
        for path in sorted(folder.rglob("*")):
            if path.suffix in PICKLE_SUFFIXES and not any(path.parent.glob("*.safetensors")):
                raise ModelFileError(
                    f"{path}: weights stored as a pickle, which can run code when loaded; only safetensors are loaded "
                    "unless you opt in (allow_pickle=True / --allow_pickle, read with torch.load(weights_only=True)) "
                    "or convert the weights to safetensors."
                )


def _check_json(path: Path) -> None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{path}: not a readable JSON file ({_one_line(error)}).") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: expected a JSON object, got a JSON {type(value).__name__}.")


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as opened:
            opened.keys()
    except Exception as error:  # safetensors raises its own SafetensorError (an Exception) for a bad header
        raise ModelFileError(
            f"{path}: not a valid safetensors file, truncated or damaged ({_one_line(error)})."
        ) from None


@contextmanager
def named_loading_errors(source: str | Path, what: str) -> Iterator[None]:
    """Turns the errors transformers, diffusers, safetensors and torch raise on bad files into a `ModelFileError`
    naming `source` (what they raise is often an anonymous `TypeError` or `RuntimeError` from deep inside)."""
    try:
        yield
    except ModelFileError:
        raise
    except Exception as error:
        if not _is_loading_error(error):
            raise
        raise ModelFileError(f"{source}: could not load the {what} ({_one_line(error)}).") from error


def _is_loading_error(error: Exception) -> bool:
    import pickle

    if isinstance(error, (OSError, ValueError, TypeError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError)):
        return True
    return type(error).__name__ == "SafetensorError"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else type(error).__name__
