"""The UNets of Ho et al. 2020 (Appendix B) as diffusers `UNet2DModel`s, plus small presets for CPU work.

The paper's network (official `diffusion_tf/models/unet.py`) maps onto `UNet2DModel` as follows:

- sinusoidal timestep embedding with frequencies exp(-log(10000) i / (half - 1)) and [sin, cos] order:
  `time_embedding_type="positional"`, `freq_shift=1`, `flip_sin_to_cos=False`; then a 2-layer MLP of width 4 * ch
  with swish (diffusers' `TimestepEmbedding`);
- residual blocks GroupNorm(32) - swish - conv3x3 - (+ time projection) - GroupNorm - swish - dropout - conv3x3
  with a 1x1 shortcut when the width changes: `resnet_time_scale_shift="default"`, `act_fn="silu"`, epsilon 1e-6 as
  TensorFlow's group norm;
- `num_res_blocks` blocks per level down and `num_res_blocks + 1` up, single-head self-attention after every block at
  the attention resolutions and in the middle (resnet - attention - resnet): `attention_head_dim=None`,
  `add_attention=True`;
- stride-2 conv downsampling with TensorFlow's "SAME" padding (pad right/bottom by one): `downsample_padding=0`;
  nearest-neighbour upsampling followed by a conv3x3.

These are the settings of the `google/ddpm-*` conversions in diffusers.
"""

from typing import Any

from diffusers import UNet2DModel

_PAPER_COMMON: dict[str, Any] = {
    "time_embedding_type": "positional",
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "act_fn": "silu",
    "norm_eps": 1e-6,
    "attention_head_dim": None,
    "add_attention": True,
    "resnet_time_scale_shift": "default",
    "downsample_padding": 0,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
}


def _level_blocks(num_levels: int, attention_levels: tuple[int, ...]) -> dict[str, tuple[str, ...]]:
    """Down/up block types for `num_levels` resolutions with attention at the given level indices (0 = finest)."""
    down = tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(num_levels))
    up = tuple("AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(num_levels)))
    return {"down_block_types": down, "up_block_types": up}


PAPER_UNET_PRESETS: dict[str, dict[str, Any]] = {
    # CIFAR-10: ch 128, ch_mult (1, 2, 2, 2), 2 res blocks, attention at 16x16, dropout 0.1: 35.7M parameters
    "cifar10": {
        **_PAPER_COMMON,
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "dropout": 0.1,
        **_level_blocks(4, attention_levels=(1,)),
    },
    # CelebA-HQ 256: ch 128, ch_mult (1, 1, 2, 2, 4, 4), 2 res blocks, attention at 16x16, dropout 0.0: 114M
    "celebahq256": {
        **_PAPER_COMMON,
        "sample_size": 256,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (128, 128, 256, 256, 512, 512),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "dropout": 0.0,
        **_level_blocks(6, attention_levels=(4,)),
    },
    # CPU scale, same architecture family: a half-width CIFAR-10 model (32x32 RGB)
    "small": {
        **_PAPER_COMMON,
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (64, 128, 128, 128),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "dropout": 0.1,
        **_level_blocks(4, attention_levels=(1,)),
    },
    # tests and the CPU demo: 1 channel, 16x16, three levels (16, 8, 4) with attention at 8x8, one block per level
    "tiny": {
        **_PAPER_COMMON,
        "sample_size": 16,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "dropout": 0.0,
        **_level_blocks(3, attention_levels=(1,)),
    },
}
# LSUN 256 (bedroom, cat, church) uses the CelebA-HQ network
PAPER_UNET_PRESETS["lsun256"] = dict(PAPER_UNET_PRESETS["celebahq256"])


def paper_unet_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The `UNet2DModel` keyword arguments of preset `name`, updated with `overrides`."""
    if name not in PAPER_UNET_PRESETS:
        raise ValueError(f"`name` must be one of {sorted(PAPER_UNET_PRESETS)}, got {name!r}.")
    config = dict(PAPER_UNET_PRESETS[name])
    config.update(overrides)
    return config


def paper_unet(name: str, **overrides: Any) -> UNet2DModel:
    """
    A freshly initialised diffusers `UNet2DModel` with the architecture of preset `name`.

    Args:
        name (`str`):
            `"cifar10"` (35.7M parameters, 32x32 RGB), `"celebahq256"` / `"lsun256"` (114M, 256x256 RGB), or the
            CPU-sized `"small"` (32x32 RGB) and `"tiny"` (16x16, 1 channel).
        **overrides:
            Any `UNet2DModel` argument, e.g. `sample_size`, `in_channels`, `out_channels` or `dropout`.

    Raises:
        ValueError: for an unknown `name`.
    """
    return UNet2DModel(**paper_unet_config(name, **overrides))
