"""Seconds from `make demo` to a Space that answers, on a fresh clone, as a new user meets it.

Clones the repository (`git clone`, committed files only: the shipped demo models included) into a scratch folder,
then runs `make demo` there twice: first without `.venv` (the set-up installs torch and the package), then again
with the `.venv` the first run left in place. Each run is timed from the start of `make demo` until the Space's page
answers HTTP 200 on its port (`GRADIO_SERVER_PORT`), then the server is stopped. Writes
`benchmarks/results/make_demo.json`.

    python benchmarks/bench_make_demo.py [--repo .] [--only_with_venv CLONE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "make_demo.json"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def time_make_demo(clone: Path, timeout: float = 1800.0) -> float:
    """Seconds from `make demo` in `clone` until its Space answers; the server is stopped afterwards."""
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    log = (clone / "make_demo.log").open("w")
    process = subprocess.Popen(
        ["make", "demo"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        while time.perf_counter() - start < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"make demo exited with {process.returncode}; see {clone / 'make_demo.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"the Space did not answer within {timeout} s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--only_with_venv", type=Path, help="a clone whose .venv is in place: time only that run")
    args = parser.parse_args()
    report: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    if args.only_with_venv:
        report["with_venv_seconds"] = round(time_make_demo(args.only_with_venv), 1)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            clone = Path(scratch) / "clone"
            subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
            report["without_venv_seconds"] = round(time_make_demo(clone), 1)
            report["with_venv_seconds"] = round(time_make_demo(clone), 1)
    print(json.dumps(report, indent=2))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
