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


# transformers 4.x names of the Swin attention and MLP weights, as the Swin checkpoints on the Hub and the
# openmmlab/upernet-swin-* `.bin` files (written in January 2023) have them; transformers 5 renames them on load.
LEGACY_SWIN_NAMES = (
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)
# The preprocessor_config.json of the openmmlab/upernet-* repositories (372 bytes, "Upload processor").
UPERNET_PREPROCESSOR_CONFIG = {
    "do_normalize": True,
    "do_reduce_labels": False,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "SegformerImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 512, "width": 512},
}
UPERNET_CARD = """---
language: en
license: mit
tags:
- vision
- image-segmentation
model_name: openmmlab/upernet-swin-tiny
---

# UperNet, Swin Transformer tiny-sized backbone
"""


def add_released_upernet(cache: Path, repo_id: str, weights: str = "bin", seed: int = 0):
    """Writes a transformers `UperNetForSemanticSegmentation` repository laid out as `openmmlab/upernet-swin-tiny` is
    (`config.json` with a `SwinConfig` backbone and ADE20K's 150 `id2label`, `preprocessor_config.json` naming
    `SegformerImageProcessor` at 512x512, `README.md` (MIT), weights with transformers 4's Swin key names: main has
    only `pytorch_model.bin`; `weights` `"safetensors"` or `"both"` adds the `model.safetensors` of refs/pr/1) with a
    tiny Swin (embed 16, depths 1-1-2-1, window 4) and heads of 16/8 channels, random weights. Returns the model."""
    from transformers import SwinConfig, UperNetConfig, UperNetForSemanticSegmentation

    from hf_swin_ddpm.imaging import ADE20K_CLASSES

    snapshot = snapshot_folder(cache, repo_id)
    backbone = SwinConfig(
        embed_dim=16,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 2, 4],
        window_size=4,
        drop_path_rate=0.3,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    id2label = dict(enumerate(ADE20K_CLASSES))
    config = UperNetConfig(
        backbone_config=backbone,
        hidden_size=16,
        auxiliary_channels=8,
        auxiliary_in_channels=64,
        use_auxiliary_head=True,
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
    )
    torch.manual_seed(seed)
    model = UperNetForSemanticSegmentation(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.1)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
    state = {}
    for name, tensor in model.state_dict().items():
        for new, old in LEGACY_SWIN_NAMES:
            name = name.replace(new, old)
        state[name] = tensor.contiguous()
    if weights in ("bin", "both"):
        torch.save(state, snapshot / "pytorch_model.bin")
    if weights in ("safetensors", "both"):
        save_file(state, snapshot / "model.safetensors", metadata={"format": "pt"})
    saved = config.to_dict()
    saved.update(architectures=["UperNetForSemanticSegmentation"], transformers_version="4.26.0.dev0")
    (snapshot / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True))
    (snapshot / "preprocessor_config.json").write_text(json.dumps(UPERNET_PREPROCESSOR_CONFIG, indent=2))
    (snapshot / "README.md").write_text(UPERNET_CARD)
    return model
