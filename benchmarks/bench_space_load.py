"""Load on the Space: bursts of concurrent API requests to each route, the server's throughput and resident memory.

The Space runs as its own process on a loopback port with the tiny random-weight models of tests/space_app_support.py
(the same setup as tests/test_space_load.py). For each route, `--requests` requests are sent at once; every one is
answered with a result or gradio's "Queue is full" (the queue holds 32 waiting requests, 2 run at a time). Reported per
route: requests per second (answered, busy included), completed per second, and the counts; for the server: resident
memory before, the peak sampled every 20 ms during the first round of bursts, after, the process's high-water mark
(VmHWM) and the resident memory after each further round (`--rounds`), which a leak would keep raising.

    .venv/bin/python benchmarks/bench_space_load.py                 # 50 per route, writes results/space_load.json
    .venv/bin/python benchmarks/bench_space_load.py --requests 10   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS_DIR))

from space_app_support import load_app_module, save_tiny_ddpm, save_tiny_segmenter  # noqa: E402
from space_load_support import (  # noqa: E402
    MemorySampler,
    burst,
    peak_resident_bytes,
    resident_bytes,
    route_arguments,
    served_space,
)

RESULTS = Path(__file__).parent / "results" / "space_load.json"
MIB = 2**20


def run(requests: int, rounds: int, timeout: float) -> dict:
    """Serve the Space, warm each route up, then `rounds` rounds of one burst of `requests` per route; the figures of
    the first round, and the memory after every round (a leak would keep it growing), as a dict."""
    example = Path(load_app_module().example_images()[0])
    with tempfile.TemporaryDirectory(prefix="space-load-") as temporary:
        root = Path(temporary)
        swin_fpn, ddpm = save_tiny_segmenter(root / "swin-fpn"), save_tiny_ddpm(root / "ddpm")
        with served_space(swin_fpn, ddpm, root / "server.log") as server:
            client = server.client(max_workers=max(64, requests + 8))
            arguments = route_arguments(example)
            for route, make in arguments.items():
                client.predict(*make(0), api_name=route)
            before = resident_bytes(server.pid)
            with MemorySampler(server.pid) as memory:
                bursts = [burst(client, route, make, requests, timeout) for route, make in arguments.items()]
            after_rounds = [resident_bytes(server.pid)]
            for _ in range(rounds - 1):
                for route, make in arguments.items():
                    burst(client, route, make, requests, timeout)
                after_rounds.append(resident_bytes(server.pid))
            alive = server.alive()
            after = resident_bytes(server.pid)
            high_water = peak_resident_bytes(server.pid)
    return {
        "requests_per_route": requests,
        "routes": {outcome.route: outcome.summary() for outcome in bursts},
        "server_alive_after": alive,
        "server_memory_mib": {
            "before": round(before / MIB, 1),
            "peak_sampled": round(memory.peak / MIB, 1),
            "after": round(after / MIB, 1),
            "high_water_mark": round(high_water / MIB, 1),
            "after_each_round": [round(value / MIB, 1) for value in after_rounds],
        },
        "route_arguments": {
            "/segment": "an example image (64x64 model input)",
            "/generate": "2 images, 10 steps (tiny UNet, 16x16, T = 1000)",
            "/forward_diffusion": "an example image, t and seed varied",
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "server_threads": "OMP_NUM_THREADS=1",
            "note": "shared with other jobs; client and server on the same 2 cores",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="concurrent requests per route")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of bursts (memory is reported after each)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each answer")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = run(args.requests, args.rounds, args.timeout)
    for route, figures in results["routes"].items():
        print(
            f"{route:20s} {figures['requests_per_second']:6.2f} requests/s answered, "
            f"{figures['completed_per_second']:6.2f} completed/s ({figures['completed']} completed, "
            f"{figures['busy']} busy, {figures['errors']} errors in {figures['seconds']:.1f} s)"
        )
    memory = results["server_memory_mib"]
    print(
        f"server RSS: {memory['before']:.0f} MiB before, peak {memory['peak_sampled']:.0f} MiB, "
        f"{memory['after']:.0f} MiB after (high-water mark {memory['high_water_mark']:.0f} MiB, after each round "
        f"{memory['after_each_round']} MiB); "
        f"alive after: {results['server_alive_after']}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
