"""Shared by the Space tests: the app module, tiny random-weight models, and the app served on a free port."""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import gradio as gr
import torch
from factories import TINY_SWIN_FPN_GEOMETRY

from hf_swin_ddpm import (
    DDPMPaperPipeline,
    DDPMPaperScheduler,
    SwinFPNConfig,
    SwinFPNForSegmentation,
    SwinFPNImageProcessor,
    paper_unet,
)
from hf_swin_ddpm.data import SHAPES_ID2LABEL

APP_PATH = Path(__file__).resolve().parents[1] / "spaces_app" / "app.py"
TINY_SWIN_FPN = {**TINY_SWIN_FPN_GEOMETRY, "patch_size": 4, "image_size": 64}
TINY_NUM_TRAIN_TIMESTEPS = 1000


def load_app_module() -> ModuleType:
    """Imports spaces_app/app.py (a script, not a package) once per process."""
    if "space_app" in sys.modules:
        return sys.modules["space_app"]
    spec = importlib.util.spec_from_file_location("space_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["space_app"] = module
    spec.loader.exec_module(module)
    return module


def load_space_module(name: str) -> ModuleType:
    """A module beside app.py (``image_inputs``, ``tab_segment``, ...), imported the way app.py imports it."""
    load_app_module()
    return importlib.import_module(name)


def save_tiny_segmenter(folder: Path, id2label: dict[int, str] = SHAPES_ID2LABEL) -> Path:
    """A random-weight SwinFPN with the shapes classes (or `id2label`, e.g. ``DIGIT_SCENES_ID2LABEL``) and its
    processor (64x64), saved to `folder`."""
    torch.manual_seed(0)
    config = SwinFPNConfig(**TINY_SWIN_FPN, id2label=dict(id2label))
    model = SwinFPNForSegmentation(config).eval()
    model.save_pretrained(folder)
    SwinFPNImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def save_tiny_ddpm(folder: Path) -> Path:
    """A random-weight `paper_unet("tiny")` DDPMPaperPipeline (1 channel, 16x16, T = 1000), saved to `folder`."""
    torch.manual_seed(0)
    pipeline = DDPMPaperPipeline(unet=paper_unet("tiny"), scheduler=DDPMPaperScheduler(TINY_NUM_TRAIN_TIMESTEPS))
    pipeline.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served_app(swin_fpn_model: Path, ddpm_model: Path) -> Iterator[tuple[gr.Blocks, str]]:
    """Builds the Space with the given models, serves it on a free loopback port and yields it with its URL."""
    app = load_app_module()
    demo = app.build_demo(swin_fpn_model=swin_fpn_model, ddpm_model=ddpm_model)
    _, url, _ = demo.launch(
        **app.launch_options(),
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=free_port(),
        quiet=True,
    )
    try:
        yield demo, url
    finally:
        demo.close()
