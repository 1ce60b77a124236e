"""Hub-cache copies of the papers' released checkpoints, with their exact file layout and config files and tiny weights of
the same architecture family, for loading through the real `huggingface_hub` client offline.

The DDPM repositories are diffusers' conversions of the official models (`google/ddpm-cifar10-32`, `google/ddpm-ema-
church-256`, ...): `model_index.json` (`DDPMPipeline`), `unet/` (`UNet2DModel` with the official model's
`flip_sin_to_cos=False`, `freq_shift=1`, `norm_eps=1e-6`, `downsample_padding=0`, `attention_head_dim=None`),
`scheduler/` (`DDPMScheduler` with diffusers 0.1.1's keys, `clip_sample=True`), and, beside `model_index.json`, the
files of diffusers' first releases: a `scheduler_config.json` naming `GaussianDDPMScheduler` and a `config.json` naming
`UNetModel`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

REVISION = "0123456789abcdef0123456789abcdef01234567"

# The official model's UNet options as diffusers' conversion records them (block sizes shrunk).
RELEASED_UNET_CONFIG = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.1.1",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [8, 16],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 4,
    "out_channels": 3,
    "sample_size": 8,
    "time_embedding_type": "positional",
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}


def snapshot_folder(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` at `REVISION` in huggingface_hub's cache layout, with `refs/main` set."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def add_released_ddpm(
    cache: Path, repo_id: str, variance_type: str, weights: str = "bin", seed: int = 0, sample_size: int = 8
) -> UNet2DModel:
    """Writes a `DDPMPipeline` repository laid out as diffusers' conversions of the official DDPM models are; returns its
    UNet. `weights` is `"bin"` (pickled, as the first conversions), `"safetensors"` or `"both"`; `sample_size` the
    side of the samples (32 or 256 in the real repositories; the weights do not depend on it)."""
    snapshot = snapshot_folder(cache, repo_id)
    (snapshot / "unet").mkdir()
    (snapshot / "scheduler").mkdir()
    torch.manual_seed(seed)
    unet_config = {**RELEASED_UNET_CONFIG, "sample_size": sample_size}
    unet = UNet2DModel(**{key: value for key, value in unet_config.items() if not key.startswith("_")}).eval()
    state = {name: tensor.contiguous() for name, tensor in unet.state_dict().items()}
    if weights in ("bin", "both"):
        torch.save(state, snapshot / "unet" / "diffusion_pytorch_model.bin")
    if weights in ("safetensors", "both"):
        save_file(state, snapshot / "unet" / "diffusion_pytorch_model.safetensors")
    (snapshot / "unet" / "config.json").write_text(json.dumps(unet_config, indent=2))
    scheduler_config = {
        "_class_name": "DDPMScheduler",
        "_diffusers_version": "0.1.1",
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "clip_sample": True,
        "num_train_timesteps": 1000,
        "trained_betas": None,
        "variance_type": variance_type,
    }
    (snapshot / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2))
    model_index = {
        "_class_name": "DDPMPipeline",
        "_diffusers_version": "0.1.1",
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
    (snapshot / "model_index.json").write_text(json.dumps(model_index, indent=2))
    # diffusers 0.0.x's files, still at the root of some of the repositories
    legacy_scheduler = {
        "_class_name": "GaussianDDPMScheduler",
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "timesteps": 1000,
        "variance_type": variance_type,
    }
    (snapshot / "scheduler_config.json").write_text(json.dumps(legacy_scheduler, indent=2))
    legacy_unet = {"_class_name": "UNetModel", "ch": 128, "ch_mult": [1, 2, 2, 2], "attn_resolutions": [16]}
    (snapshot / "config.json").write_text(json.dumps({**legacy_unet, "dropout": 0.1, "num_res_blocks": 2}, indent=2))
    return unet
