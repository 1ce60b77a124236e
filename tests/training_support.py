"""Helpers of the training tests: the real CLI as a subprocess, small datasets on disk, two-process runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_swin_ddpm.data.shapes import generate_shapes

CONSOLE_SCRIPT = Path(sys.executable).with_name("hf-swin-ddpm")


def _cli_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HF_SWIN_DDPM_DEBUG", None)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``hf-swin-ddpm ARGS`` in a subprocess, one thread, offline."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args], cwd=cwd, env=_cli_env(), capture_output=True, text=True, timeout=timeout
    )


def run_cli_in_process(*args: str, cwd: Path, capsys) -> subprocess.CompletedProcess:
    """``hf_swin_ddpm.cli.main(ARGS)`` in this process, from ``cwd``: the console script's code without the seconds
    a new interpreter takes to import it. Returns the exit status (an argparse ``SystemExit``'s code) and the
    captured output, like :func:`run_cli`."""
    from hf_swin_ddpm.cli import main

    capsys.readouterr()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        status = main(list(args))
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.chdir(previous)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, captured.out, captured.err)


def run_cli_concurrently(
    commands: Sequence[Sequence[str]], cwd: Path, timeout: float = 300
) -> list[subprocess.CompletedProcess]:
    """Several ``hf-swin-ddpm`` commands started together (their imports overlap), results in order."""
    processes = [
        subprocess.Popen(
            [str(CONSOLE_SCRIPT), *args],
            cwd=cwd,
            env=_cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for args, process in zip(commands, processes, strict=True):
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(list(args), process.returncode, stdout, stderr))
    return results


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A non-zero exit with a single ``...: error: ...`` line on stderr that contains every fragment."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def tree_digest(folder: Path) -> dict[str, str]:
    """File path -> sha1 of everything under ``folder`` but the tracker logs."""
    return {
        str(path.relative_to(folder)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).parts[0] != "logs"
    }


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold exactly the same tensors."""
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def write_image_folder(root: Path, counts: dict[str, int], size: int = 12) -> Path:
    """An ``imagefolder`` layout: ``root/<split>/<i>.png`` grayscale blobs of random sizes."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            side = int(rng.integers(size, 2 * size))
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(root / split / f"{index}.png")
    return root


def write_segmentation_folders(
    root: Path, count: int, resolution: int = 32, mask_size: int | None = None, label_offset: int = 0
) -> Path:
    """``root/images/<i>.png`` + ``root/annotations/<i>.png`` from the shapes generator; ``mask_size`` makes the
    masks a different size, ``label_offset`` adds to every label value."""
    arrays = generate_shapes(count, resolution, seed=1, split="train")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for index, (image, labels) in enumerate(zip(arrays.images, arrays.annotations, strict=True)):
        Image.fromarray(image).save(root / "images" / f"{index:03d}.png")
        mask = Image.fromarray((labels + label_offset).astype(np.uint8))
        if mask_size is not None:
            mask = mask.resize((mask_size, mask_size), Image.NEAREST)
        mask.save(root / "annotations" / f"{index:03d}.png")
    return root


def reset_accelerate_state() -> None:
    """Forget the accelerate state of earlier runs in this process (e.g. inherited through ``fork``)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_two_processes(function: Callable[[], None]) -> None:
    """``accelerate.debug_launcher(function, num_processes=2)``: two CPU processes talking over gloo."""
    from accelerate import debug_launcher

    reset_accelerate_state()
    debug_launcher(function, num_processes=2)
    reset_accelerate_state()


@contextmanager
def counting_ddp_modules_at_end_training() -> Iterator[list[int]]:
    """While active, every ``Accelerator.end_training`` call first appends how many ``DistributedDataParallel``
    modules are still alive (after a garbage collection) to the yielded list. A run that destroys its process group
    while a DDP ``Reducer`` still holds it can hang on exit (see ``runtime.end_run``)."""
    import gc

    from accelerate import Accelerator

    counts: list[int] = []
    original = Accelerator.end_training

    def end_training(self) -> None:
        gc.collect()
        alive = [obj for obj in gc.get_objects() if isinstance(obj, torch.nn.parallel.DistributedDataParallel)]
        counts.append(len(alive))
        original(self)

    Accelerator.end_training = end_training
    try:
        yield counts
    finally:
        Accelerator.end_training = original


def flags(**values: object) -> list[str]:
    """``--key value`` pairs (``True`` gives a bare ``--key``)."""
    argv: list[str] = []
    for key, value in values.items():
        argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return argv


def with_flags(base: Sequence[str], **values: object) -> list[str]:
    """``base`` plus ``flags(**values)``."""
    return [*base, *flags(**values)]


@contextmanager
def small_disk(path: Path, megabytes: float) -> Iterator[Path]:
    """A real tmpfs of `megabytes` mounted at `path` (the tests run as root, here and in CI)."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(megabytes * 2**20)}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
