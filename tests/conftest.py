"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch
from factories import TINY_SWIN_FPN

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared machine the thread pool only adds waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_swin_fpn(one_thread) -> SwinFPNForSegmentation:
    """A random-weight SwinFPN of `factories.TINY_SWIN_FPN` in eval mode, shared by a module's tests."""
    torch.manual_seed(0)
    return SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN)).eval()
