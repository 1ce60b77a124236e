"""Shared by tests/test_space_load.py and benchmarks/bench_space_load.py: the Space served by its own process on a
loopback port (with the tiny random-weight models of space_app_support), bursts of concurrent API requests, and the
server's resident memory sampled from outside.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from gradio_client import Client, handle_file
from space_app_support import APP_PATH, free_port

SERVER_START_SECONDS = 180
QUEUE_FULL_MESSAGE = "Queue is full"


@dataclass
class SpaceServer:
    """The Space running in its own process: its URL and process."""

    url: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def client(self, max_workers: int = 64) -> Client:
        return Client(self.url, verbose=False, max_workers=max_workers, analytics_enabled=False)


@contextmanager
def served_space(swin_fpn_model: Path, ddpm_model: Path, log_file: Path) -> Iterator[SpaceServer]:
    """`python spaces_app/app.py` on a free loopback port with the given models; stopped (SIGTERM) at the end."""
    port = free_port()
    env = {
        **os.environ,
        "SWIN_FPN_MODEL": str(swin_fpn_model),
        "DDPM_MODEL": str(ddpm_model),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    with log_file.open("w") as log:
        process = subprocess.Popen([sys.executable, str(APP_PATH)], env=env, stdout=log, stderr=subprocess.STDOUT)
    server = SpaceServer(f"http://127.0.0.1:{port}/", process)
    try:
        _wait_until_serving(server, log_file)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(server: SpaceServer, log_file: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"the Space exited ({server.process.returncode}):\n{log_file.read_text()}")
        try:
            if httpx.get(server.url + "config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the Space did not answer within {SERVER_START_SECONDS} s:\n{log_file.read_text()}")


def resident_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def peak_resident_bytes(pid: int) -> int:
    """VmHWM: the highest resident set size the process ever had (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resident_bytes(pid)


GLIBC_HEAP_BYTES = 64 * 2**20  # HEAP_MAX_SIZE of glibc on 64-bit: each arena but the main one lives in such heaps


def malloc_arena_heaps(pid: int) -> int:
    """How many glibc arena heaps a process has mapped (Linux, 64-bit glibc), read from /proc/PID/maps: anonymous
    regions of exactly 64 MiB, aligned to 64 MiB, made of a read-write part followed by an inaccessible reserve.
    Every thread arena beyond the main one has at least one; the main arena (brk) has none."""
    rows = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        start, end = (int(address, 16) for address in parts[0].split("-"))
        rows.append((start, end, parts[1], parts[5] if len(parts) > 5 else ""))
    heaps = 0
    for index, (start, end, permissions, name) in enumerate(rows):
        if name or permissions != "rw-p" or start % GLIBC_HEAP_BYTES:
            continue
        stop = end
        for next_start, next_end, next_permissions, next_name in rows[index + 1 :]:
            if next_start != stop or next_name or next_permissions != "---p":
                break
            stop = next_end
        heaps += stop - start == GLIBC_HEAP_BYTES
    return heaps


class MemorySampler:
    """Samples a process's resident memory every `interval` seconds in a thread; `peak` is the largest sample."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = resident_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, resident_bytes(self.pid))
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Burst:
    """The outcome of `count` concurrent requests to one route."""

    route: str
    count: int
    seconds: float = 0.0
    results: list[Any] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # "Queue is full" answers
    errors: list[str] = field(default_factory=list)  # anything else

    @property
    def answered(self) -> int:
        return len(self.results) + len(self.busy) + len(self.errors)

    @property
    def requests_per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def completed_per_second(self) -> float:
        return len(self.results) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.count,
            "completed": len(self.results),
            "busy": len(self.busy),
            "errors": len(self.errors),
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests_per_second, 2),
            "completed_per_second": round(self.completed_per_second, 2),
        }


def route_arguments(example_image: Path) -> dict[str, Callable[[int], tuple]]:
    """For each API route, the arguments of request number `i` (varied seeds and steps)."""
    image = handle_file(str(example_image))
    return {
        "/segment": lambda i: (image,),
        "/generate": lambda i: (i, 2, 10, "sigma² = beta"),
        "/forward_diffusion": lambda i: (image, (37 * i) % 1000, i),
    }


def burst(client: Client, route: str, arguments: Callable[[int], tuple], count: int, timeout: float) -> Burst:
    """Submits `count` requests to `route` at once (one thread each) and waits for every answer."""
    outcome = Burst(route, count)

    def one(index: int) -> tuple[str, Any]:
        try:
            return "result", client.predict(*arguments(index), api_name=route)
        except Exception as error:  # gradio_client raises QueueError / AppError with the server's message
            message = " ".join(str(error).split()) or type(error).__name__
            return ("busy" if QUEUE_FULL_MESSAGE.lower() in message.lower() else "error"), message

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(one, index) for index in range(count)]
        for future in futures:
            kind, value = future.result(timeout=timeout)
            {"result": outcome.results, "busy": outcome.busy, "error": outcome.errors}[kind].append(value)
    outcome.seconds = time.perf_counter() - start
    return outcome
