"""Choose the demo DDPM's recipe by measurement: train candidate recipes side by side, then judge each one the way
`eval_demo_quality.py` judges the shipped model (FID with two feature extractors and the recognition rate, 500
samples per seed, 250 and 20 sampling steps).

    python benchmarks/demo_ddpm_recipe_search.py --output_root runs/search --time_limit 270 --device cuda

Each candidate is a whole recipe: the flags of `DEMO_RECIPES["ddpm"]` with some replaced, sized so that it trains in
about 1.5 hours on the 2-core CPU machine (batch 32 for about 30k steps, or batch 128 for a quarter as many). All
candidates train at once (one process each: on a GPU they share it). A run that its `--time_limit` stops (SIGTERM:
the training script saves a checkpoint and exits) is finalised at the step it reached by resuming with
`--max_train_steps` set to that step, so it is judged as the same recipe with fewer steps; the report says which
step each reached. Writes `--output` (JSON) and, per candidate, its sample grids into its folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from eval_demo_quality import DDPMJudges, ddpm_quality

from hf_swin_ddpm.diffusion.unets import paper_unet_config
from hf_swin_ddpm.training.checkpoints import checkpoint_step, complete_checkpoints
from hf_swin_ddpm.training.demo_models import DEMO_RECIPES

# flag overrides of the shipped recipe; "model_config" values other than presets are written as JSON configs
CANDIDATES: dict[str, dict[str, str]] = {
    "tiny-b32-lr5e-4-const": {"max_train_steps": "30000"},
    "tiny-b128-lr1e-3-const": {
        "train_batch_size": "128",
        "learning_rate": "1e-3",
        "ema_decay": "0.999",
        "max_train_steps": "7500",
    },
    "tiny-b128-lr2e-3-const": {
        "train_batch_size": "128",
        "learning_rate": "2e-3",
        "ema_decay": "0.999",
        "max_train_steps": "7500",
    },
    "tiny-b128-lr1e-3-cosine": {
        "train_batch_size": "128",
        "learning_rate": "1e-3",
        "lr_scheduler": "cosine",
        "ema_decay": "0.999",
        "max_train_steps": "7500",
    },
    "c40-b128-lr1e-3-const": {
        "model_config": "c40",
        "train_batch_size": "128",
        "learning_rate": "1e-3",
        "ema_decay": "0.999",
        "max_train_steps": "5000",
    },
    "tiny2-b128-lr1e-3-const": {
        "model_config": "tiny2",
        "train_batch_size": "128",
        "learning_rate": "1e-3",
        "ema_decay": "0.999",
        "max_train_steps": "5500",
    },
}
# architectures beside the `tiny` preset: wider (1.7M parameters) and two blocks per level (1.6M)
MODEL_CONFIGS = {
    "c40": paper_unet_config("tiny", block_out_channels=(40, 80, 80)),
    "tiny2": paper_unet_config("tiny", layers_per_block=2),
}


def candidate_flags(name: str, root: Path) -> list[str]:
    """The recipe's flags with the candidate's overrides (architectures by JSON config)."""
    overrides = dict(CANDIDATES[name])
    if overrides.get("model_config") in MODEL_CONFIGS:
        path = root / f"{overrides['model_config']}.json"
        path.write_text(json.dumps(MODEL_CONFIGS[overrides["model_config"]]))
        overrides["model_config"] = str(path)
    flags = []
    for flag in DEMO_RECIPES["ddpm"].flags:
        key = flag[2:].split("=", 1)[0]
        flags.append(f"--{key}={overrides.pop(key)}" if key in overrides else flag)
    return flags + [f"--{key}={value}" for key, value in overrides.items()]


def train(flags: list[str], folder: Path, log) -> subprocess.Popen:
    argv = [sys.executable, "-m", "hf_swin_ddpm.training.train_ddpm", *flags, f"--output_dir={folder}"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([*argv, "--resume_from_checkpoint=latest"], stdout=log, stderr=subprocess.STDOUT, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_root", type=Path, required=True)
    parser.add_argument("--candidates", nargs="+", choices=sorted(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--time_limit", type=float, default=270, help="Seconds of training before SIGTERM.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 20])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "demo_ddpm_recipes.json")
    args = parser.parse_args()
    args.output_root.mkdir(parents=True, exist_ok=True)

    # 1. all candidates train at once; the judges (an independent classifier, reference features) are built meanwhile
    start = time.perf_counter()
    runs = {}
    for name in args.candidates:
        folder = args.output_root / name
        flags = candidate_flags(name, args.output_root)
        log = open(args.output_root / f"{name}.log", "w")  # noqa: SIM115 - closed after the run
        runs[name] = (flags, folder, log, train(flags, folder, log))
    judges = DDPMJudges.build()
    print(f"judges ready after {time.perf_counter() - start:.0f} s", flush=True)

    # 2. stop what outlasts the time limit (a checkpoint is saved), then finalise it at the step it reached
    for process in (run[3] for run in runs.values()):
        try:
            process.wait(timeout=max(1.0, args.time_limit - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
    report = {"device": args.device, "time_limit_s": args.time_limit, "candidates": {}}
    finalising = {}
    for name, (flags, folder, log, process) in runs.items():
        process.wait()
        seconds = time.perf_counter() - start
        saved = [] if (folder / "all_results.json").is_file() else complete_checkpoints(folder)
        reached = checkpoint_step(saved[-1]) if saved else None
        if reached is not None:
            flags = [f"--max_train_steps={reached}" if f.startswith("--max_train_steps=") else f for f in flags]
            finalising[name] = train(flags, folder, log)
        report["candidates"][name] = {"flags": flags, "stopped_at": reached, "train_seconds": round(seconds)}
        print(name, report["candidates"][name], flush=True)
    for name, run in runs.items():
        if name in finalising:
            finalising[name].wait()
        run[2].close()

    # 3. judge each finished candidate
    for name, entry in report["candidates"].items():
        folder = args.output_root / name
        if not (folder / "all_results.json").is_file():
            entry["error"] = "no finished model (see the log)"
            continue
        entry["bits_per_dim"] = json.loads((folder / "all_results.json").read_text()).get("eval_total_bpd")
        quality = ddpm_quality(folder, args.seeds, args.steps, args.device, judges, grid_folder=folder)
        entry["quality"] = quality
        rows = quality["by_steps"]
        print(
            name,
            {
                key: {
                    "ratio": row["project_classifier"]["ratio"],
                    "ratio_independent": row["independent_cnn"]["ratio"],
                    "recognised_vs_real": row["recognised_relative_to_real"],
                }
                for key, row in rows.items()
            },
            flush=True,
        )
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
