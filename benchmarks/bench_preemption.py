"""Grace period a preempted run needs: seconds from SIGTERM to the exit with a checkpoint (status 143), tiny presets.

    python benchmarks/bench_preemption.py [--trials 3] [--threads 2]

Each trial starts `hf-swin-ddpm train-ddpm` / `train-seg` on the embedded data, waits until 5 optimizer steps are
done, sends SIGTERM and times the rest: the current step, the checkpoint, the exit. Results go to
benchmarks/results/preemption.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONSOLE_SCRIPT = Path(sys.executable).with_name("hf-swin-ddpm")
COMMON = ["--max_train_steps", "200", "--checkpointing_steps", "1000", "--report_to", "none"]
RUNS = {
    "ddpm (tiny UNet, 16x16, batch 16)": [
        "train-ddpm",
        *("--dataset_name", "digits", "--model_config", "tiny", "--resolution", "16", "--train_batch_size", "16"),
        *("--eval_bpd_timesteps", "0", "--save_images_steps", "100000"),
    ],
    "segmentation (tiny SwinFPN, 64x64, batch 8)": [
        "train-seg",
        *("--dataset_name", "shapes", "--model_config", "tiny", "--resolution", "64", "--train_batch_size", "8"),
    ],
}


def seconds_to_stop(argv: list[str], folder: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    folder.mkdir(parents=True)
    log = folder / "log.txt"
    with log.open("w") as stream:
        process = subprocess.Popen(
            [str(CONSOLE_SCRIPT), *argv, *COMMON, "--output_dir", str(folder / "run")],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=env,
        )
    while f"| 5/{COMMON[1]} [" not in log.read_text():
        if process.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        time.sleep(0.01)
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status = process.wait()
    seconds = time.monotonic() - start
    if status != 128 + signal.SIGTERM or "stopped by SIGTERM" not in log.read_text():
        raise RuntimeError(f"exit status {status}:\n{log.read_text()[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "runs": {}}
    for name, argv in RUNS.items():
        with tempfile.TemporaryDirectory() as root:
            times = [seconds_to_stop(argv, Path(root) / str(trial), args.threads) for trial in range(args.trials)]
        results["runs"][name] = {"seconds_to_stop": [round(value, 2) for value in times], "max": round(max(times), 2)}
        print(f"{name}: {', '.join(f'{value:.2f}' for value in times)} s from SIGTERM to the exit (status 143)")
    output = Path(__file__).with_name("results") / "preemption.json"
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
