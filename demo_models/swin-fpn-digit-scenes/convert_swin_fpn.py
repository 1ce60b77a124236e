"""Checkpoints into SwinFPN: transformers' Swin backbones and Swin UperNets converted (geometry, key names, q/k/v
fused into one projection), and the damaged-file diagnosis of `from_pretrained`.

`SwinFPNForSegmentation.from_pretrained_backbone` and `.from_pretrained_upernet` are the entry points. Shipped beside
the modeling file as remote code, so it imports only relatively.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .configuration_swin_fpn import SwinFPNConfig

if TYPE_CHECKING:
    from .modeling_swin_fpn import SwinFPNForSegmentation


def convert_swin_checkpoint(
    model_class: type[SwinFPNForSegmentation], name_or_path: str, allow_pickle: bool = False, **config_kwargs
) -> SwinFPNForSegmentation:
    """Build the model from a transformers Swin checkpoint (`SwinModel`, `SwinForImageClassification` or
    `SwinBackbone`; v5 or legacy key names), e.g. `microsoft/swin-tiny-patch4-window7-224`.

    The checkpoint's geometry and backbone weights are taken; the FPN and head start fresh, and so do the stage
    norms when the checkpoint has none. `config_kwargs` set the rest (`num_labels`, `id2label`, dropouts, ...).
    The weights are read from safetensors only, unless `allow_pickle=True` lets transformers read a
    `pytorch_model.bin` (with `torch.load(weights_only=True)`).
    """
    from transformers import SwinBackbone, SwinConfig

    swin_config = SwinConfig.from_pretrained(name_or_path)
    if swin_config.model_type != "swin":
        raise ValueError(
            f"from_pretrained_backbone: {name_or_path!r} is a {swin_config.model_type!r} checkpoint; expected a "
            "transformers Swin ('swin') checkpoint such as microsoft/swin-tiny-patch4-window7-224."
        )
    if config_kwargs.get("patch_embedding_type", "linear") != "linear":
        raise ValueError(
            "from_pretrained_backbone: Swin checkpoints have the linear patch embedding; leave out "
            f"patch_embedding_type={config_kwargs['patch_embedding_type']!r}."
        )
    if swin_config.use_absolute_embeddings:
        raise ValueError(
            f"from_pretrained_backbone: {name_or_path!r} uses absolute position embeddings, which SwinFPN does "
            "not have; use a checkpoint with use_absolute_embeddings=False."
        )
    geometry = swin_geometry(swin_config)
    clashes = {k: v for k, v in config_kwargs.items() if k in geometry and _as_list(v) != _as_list(geometry[k])}
    if clashes:
        raise ValueError(
            f"from_pretrained_backbone: {sorted(clashes)} differ from the checkpoint's geometry "
            f"{ {k: geometry[k] for k in clashes} }; leave them out to take the checkpoint's."
        )
    config = SwinFPNConfig(**{**geometry, **config_kwargs, "backbone_checkpoint": str(name_or_path)})
    stage_names = [f"stage{i + 1}" for i in range(len(swin_config.depths))]
    swin_backbone, info = SwinBackbone.from_pretrained(
        name_or_path,
        out_features=stage_names,
        output_loading_info=True,
        **({} if allow_pickle else {"use_safetensors": True}),
    )
    model = model_class(config)
    converted = convert_swin_backbone_state_dict(swin_backbone.state_dict())
    missing_norms = any(key.startswith("hidden_states_norms") for key in info["missing_keys"])
    if missing_norms:
        converted = {k: v for k, v in converted.items() if not k.startswith("stage_norms.")}
    model.backbone.load_state_dict(converted, strict=not missing_norms)
    return model


def convert_upernet_checkpoint(
    model_class: type[SwinFPNForSegmentation], name_or_path: str, allow_pickle: bool = False, **config_kwargs
) -> SwinFPNForSegmentation:
    """Convert a transformers `UperNetForSemanticSegmentation` with a Swin backbone, e.g. the ADE20K-trained
    `openmmlab/upernet-swin-tiny` (-small, -base, -large), into a `decode_head_type="upernet"` SwinFPN: the
    backbone (q/k/v fused), the UperNet decode head, the auxiliary FCN head (if any) and the labels
    (`id2label`, `loss_ignore_index`). The converted model gives the same logits and loss in eval mode.

    `config_kwargs` may set what does not change the weights' shapes (dropouts, `drop_path_rate`,
    `image_size`, `max_input_pixels`, ...). Weights are read from safetensors only unless `allow_pickle=True`.
    """
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    upernet_config = UperNetConfig.from_pretrained(name_or_path)
    swin_config = upernet_config.backbone_config
    if swin_config is None or swin_config.model_type != "swin":
        kind = None if swin_config is None else swin_config.model_type
        raise ValueError(
            f"from_pretrained_upernet: {name_or_path!r} has a {kind!r} backbone; expected a UperNet with a Swin "
            "backbone such as openmmlab/upernet-swin-tiny."
        )
    stages = [f"stage{i + 1}" for i in range(len(swin_config.depths))]
    if list(swin_config.out_features) != stages or swin_config.use_absolute_embeddings:
        raise ValueError(
            f"from_pretrained_upernet: {name_or_path!r}: expected a Swin backbone without absolute position "
            f"embeddings that outputs every stage {stages}, got out_features={list(swin_config.out_features)}."
        )
    expected_in = swin_config.embed_dim * 2 ** min(2, len(stages) - 1)
    if upernet_config.auxiliary_in_channels not in (None, expected_in):
        raise ValueError(
            f"from_pretrained_upernet: auxiliary_in_channels={upernet_config.auxiliary_in_channels} does not "
            f"match the third stage's {expected_in} channels."
        )
    shaped = swin_geometry(swin_config) | {
        "decode_head_type": "upernet",
        "upernet_hidden_size": upernet_config.hidden_size,
        "pool_scales": list(upernet_config.pool_scales),
        "use_auxiliary_head": upernet_config.use_auxiliary_head,
        "auxiliary_channels": upernet_config.auxiliary_channels,
        "auxiliary_num_convs": upernet_config.auxiliary_num_convs,
        "auxiliary_concat_input": upernet_config.auxiliary_concat_input,
        "auxiliary_in_index": min(2, len(stages) - 1),
        "id2label": {int(k): v for k, v in upernet_config.id2label.items()},
    }
    clashes = sorted(key for key in config_kwargs if key in shaped or key in ("num_labels", "label2id"))
    if clashes:
        raise ValueError(
            f"from_pretrained_upernet: {clashes} are fixed by the checkpoint; leave them out to take its values."
        )
    config = SwinFPNConfig(
        **shaped,
        label2id={v: int(k) for k, v in upernet_config.id2label.items()},
        auxiliary_loss_weight=upernet_config.auxiliary_loss_weight,
        semantic_loss_ignore_index=upernet_config.loss_ignore_index,
        drop_path_rate=swin_config.drop_path_rate,
        hidden_dropout_prob=swin_config.hidden_dropout_prob,
        attention_probs_dropout_prob=swin_config.attention_probs_dropout_prob,
        backbone_checkpoint=str(name_or_path),
        **config_kwargs,
    )
    upernet = UperNetForSemanticSegmentation.from_pretrained(
        name_or_path, **({} if allow_pickle else {"use_safetensors": True})
    )
    model = model_class(config)
    model.backbone.load_state_dict(convert_swin_backbone_state_dict(upernet.backbone.state_dict()))
    model.decode_head.load_state_dict(upernet.decode_head.state_dict())
    if model.auxiliary_head is not None:
        model.auxiliary_head.load_state_dict(upernet.auxiliary_head.state_dict())
    return model.train(upernet.training)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def swin_geometry(swin_config) -> dict:
    """The fields of a transformers `SwinConfig` that fix the backbone's shape and arithmetic."""
    image_size = swin_config.image_size
    return {
        "image_size": image_size if isinstance(image_size, int) else int(image_size[0]),
        "patch_size": swin_config.patch_size if isinstance(swin_config.patch_size, int) else swin_config.patch_size[0],
        "num_channels": swin_config.num_channels,
        "embed_dim": swin_config.embed_dim,
        "depths": list(swin_config.depths),
        "num_heads": list(swin_config.num_heads),
        "window_size": swin_config.window_size,
        "mlp_ratio": swin_config.mlp_ratio,
        "qkv_bias": swin_config.qkv_bias,
        "hidden_act": swin_config.hidden_act,
        "layer_norm_eps": swin_config.layer_norm_eps,
    }


def convert_swin_backbone_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers `SwinBackbone` state dict (v5 names) to `SwinFPNBackbone`'s, fusing q/k/v into qkv."""
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        key = key.removeprefix("swin.")
        if key.startswith("hidden_states_norms.stage"):
            stage, param = key.removeprefix("hidden_states_norms.stage").split(".", 1)
            converted[f"stage_norms.{int(stage) - 1}.{param}"] = tensor
            continue
        if key.startswith("layernorm.") or "relative_position_index" in key or key.startswith("pooler"):
            continue
        for old, new in _SWIN_KEY_RENAMES:
            key = key.replace(old, new)
        converted[key] = tensor
    for key in [k for k in converted if ".attn.q_proj." in k]:
        suffix = key.rsplit(".", 1)[1]
        prefix = key.split(".attn.q_proj.")[0]
        parts = [converted.pop(f"{prefix}.attn.{name}_proj.{suffix}") for name in ("q", "k", "v")]
        converted[f"{prefix}.attn.qkv.{suffix}"] = torch.cat(parts, dim=0)
    return converted


_SWIN_KEY_RENAMES = (
    ("embeddings.patch_embeddings.projection", "patch_embed.projection"),
    ("embeddings.norm", "patch_embed.norm"),
    ("encoder.layers.", "stages."),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("attention.relative_position_bias.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.o_proj", "attn.proj"),
    ("attention.q_proj", "attn.q_proj"),
    ("attention.k_proj", "attn.k_proj"),
    ("attention.v_proj", "attn.v_proj"),
)


def damaged_weights_error(source: str | os.PathLike | None, kwargs: dict, error: Exception) -> OSError | None:
    """What `SwinFPNPreTrainedModel.from_pretrained` raises when it failed with `error` (`kwargs` its arguments) and
    a safetensors file of the folder or of its Hub cache snapshot is truncated or damaged: an `OSError` naming the
    file and the fix, where safetensors' own error ("Error while deserializing header") names none. None otherwise.
    """
    damaged = damaged_weights_file(source, kwargs)
    if damaged is None:
        return None
    return OSError(
        f"{damaged}: truncated or damaged safetensors file ({' '.join(str(error).split())}). Re-download it "
        "(`from_pretrained(..., force_download=True)` for a Hub repository) or re-save the model with "
        "`save_pretrained`."
    )


def damaged_weights_file(source: str | os.PathLike | None, kwargs: dict) -> Path | None:
    """The first safetensors file of a local folder (or of its Hub cache snapshot) whose header does not read."""
    from safetensors import safe_open

    subfolder = kwargs.get("subfolder") or ""
    if source is None:
        return None
    if os.path.isdir(source):
        folder = Path(source) / subfolder
    else:
        from huggingface_hub import try_to_load_from_cache

        config_file = f"{subfolder}/config.json" if subfolder else "config.json"
        cached = try_to_load_from_cache(
            str(source), config_file, cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision")
        )
        if not isinstance(cached, str):
            return None
        folder = Path(cached).parent
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as opened:
                opened.keys()
        except Exception:  # safetensors raises its own SafetensorError for a header it cannot read
            return path
    return None
