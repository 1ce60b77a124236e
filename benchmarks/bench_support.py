"""Timing and memory helpers shared by the benchmark scripts (imported as a sibling module: the scripts run as
`python benchmarks/<name>.py`, which puts this folder on `sys.path`)."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable

import torch

MIB = 2**20


def timed(fn: Callable[[], object], repeats: int, warmup: bool = True) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `fn` (after one untimed call when `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def alternate(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[list, list]:
    """Wall-clock seconds of `repeats` pairs of calls of `first` and `second` (after one warm-up call each).

    The order within a pair alternates (AB, BA, AB, ...) so that neither always runs first.
    """
    first(), second()
    times_first, times_second = [], []
    for repeat in range(repeats):
        pair = ((first, times_first), (second, times_second))
        for fn, times in pair if repeat % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return times_first, times_second


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The fastest rate of an n x n @ n x n fp32 matmul, in GFLOP/s: the machine's practical limit for dense work."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / min(timed(lambda: a @ b, repeats)) / 1e9


def resident_mib() -> float:
    """This process's resident set size in MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / MIB


class PeakResident:
    """Samples this process's resident set size every `interval` seconds in a thread; the peak per phase.

    `phase` names what the main thread is doing; `peaks[phase]` is the largest sample taken during it.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), resident_mib())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def mark(self, phase: str) -> None:
        """Closes the current phase with one last sample and starts `phase`."""
        self._sample()
        self.phase = phase
        self._sample()

    def __enter__(self) -> PeakResident:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _onednn_linear_flops(*args, out_val=None, **kwargs) -> int:
    """2 * output elements * input features for `mkldnn::_linear_pointwise` (both overloads): the FLOPs of the
    matmul, as `FlopCounterMode` counts `aten::addmm`; the fused bias, GELU or sum are not counted, as there."""
    weight = args[1] if isinstance(args[3], str) else args[2]  # (X, W, B, attr, ...) or (X, other, W, B, attr)
    return 2 * out_val.numel() * weight.shape[1]


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one `fn()` as `torch.utils.flop_counter.FlopCounterMode` counts them (matmuls, convolutions,
    attention), including SwinFPN's fused oneDNN linear layers, which it has no formula for by itself."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

    onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
    if onednn is not None and onednn not in flop_registry:
        register_flop_formula(onednn, get_raw=True)(_onednn_linear_flops)
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
