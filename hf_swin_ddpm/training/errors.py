"""One-line errors for the training scripts: :class:`TrainingError` and :func:`run_with_clear_errors`.

A problem with the user's input or files (flags, data, checkpoints) ends a run with one line
``"{program}: error: ..."`` on stderr and exit status 2, no traceback; ``HF_SWIN_DDPM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

import datasets

DEBUG_ENV = "HF_SWIN_DDPM_DEBUG"  # set to 1 to get full tracebacks instead of one-line errors


class TrainingStopped(Exception):
    """The run stopped on request (a signal) after writing a checkpoint: one line, exit status 128 + the signal."""

    def __init__(self, message: str, exit_status: int, show: bool = True) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.show = show  # one process says it


class TrainingError(Exception):
    """A problem with the user's input or files: reported as one line, exit status 2, no traceback. ``show=False``:
    another process reports it (this one only exits with status 2)."""

    def __init__(self, message: str, show: bool = True) -> None:
        super().__init__(message)
        self.show = show


# torch's DataLoader re-raises a worker's error as "Caught X in DataLoader worker process N.\nOriginal Traceback ...":
# the worker's own message is the traceback's last line, after the exception's qualified name.
WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal Traceback", re.MULTILINE)
QUALIFIED_NAME = re.compile(r"^[\w.]+: ")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when empty); for an error re-raised from a DataLoader
    worker, the worker's own message."""
    text = str(error).strip()
    if WORKER_ERROR.match(text):
        text = QUALIFIED_NAME.sub("", text.splitlines()[-1].strip(), count=1)
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = f"missing key {text}"
    return text.splitlines()[0] if text else type(error).__name__


USER_ERRORS: tuple[type[BaseException], ...] = (
    TrainingError,
    ValueError,
    OSError,
    datasets.exceptions.DatasetNotFoundError,
)


def run_with_clear_errors(program: str, train: Callable[[], Any]) -> int:
    """Run ``train()``; a user error becomes one line ``"{program}: error: ..."`` on stderr and exit status 2.

    Set ``HF_SWIN_DDPM_DEBUG=1`` for the full traceback.
    """
    try:
        train()
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        if getattr(error, "show", True):
            print(f"{program}: error: {first_line(error)}", file=sys.stderr, flush=True)
        return 2
    except TrainingStopped as stopped:
        if stopped.show:
            print(f"{program}: {stopped}", file=sys.stderr, flush=True)
        return stopped.exit_status
    except KeyboardInterrupt:
        print(f"{program}: interrupted; resume with --resume_from_checkpoint latest", file=sys.stderr, flush=True)
        return 130
    return 0
