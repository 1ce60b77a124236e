"""ONNX export of a SwinFPN folder and of a DDPM pipeline's (or a bare) `UNet2DModel`, with dynamic batch, height and
width, through `torch.onnx.export(dynamo=True)` (torch.export + onnxscript).

optimum's exporter is not used: its ONNX exporters now live in `optimum-onnx`, whose only release (0.1.0) requires
`transformers<4.58` and `optimum~=2.1.0`, which cannot install beside this project's `transformers>=5`.

Three things make the SwinFPN graph hold for every input size:

- the model's shape-dependent branches (pad the image to whole patches, pad odd maps before patch merging, zero the
  slots that pad a map to whole windows) are traced at a sample size where every one of them is taken, at every
  stage (`export_sample_size`); each padding amount is a symbolic expression that is 0 where no padding is needed,
  so the same graph also serves the sizes that need none;
- two ops without an ONNX translation in torch 2.13 get one here: `aten.remainder.Scalar` with a symbolic divisor
  (ONNX `Mod`, Python's sign convention for integers) and the stable `aten.sort` of the window layout (ONNX `TopK`,
  which breaks ties by the lower index, i.e. stably);
- UperNet's pyramid pooling is `swin_fpn.pooling_swin_fpn.AdaptiveAvgPool2d` in the model (`nn.AdaptiveAvgPool2d`
  has no ONNX operator, and exporters bake the input size into it): the same averages as matrix products over
  symbolic sizes.

Attention runs with the eager kernel in the exported graph (the SDPA path's reshape does not decompose with symbolic
window counts); the numbers are the same up to float rounding.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from torch import nn

# ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it)
DEFAULT_OPSET = 18


def _onnx_modules():
    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
        from onnxscript import opset18 as op
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs onnx and onnxscript ({error}); install them with `pip install hf-swin-ddpm[onnx]`."
        ) from None
    return op


def _custom_translations() -> dict:
    op = _onnx_modules()

    def remainder_scalar(self, other):
        return op.Mod(self, op.CastLike(other, self))

    def sort_stable(self, stable=None, dim=-1, descending=False):
        length = op.Reshape(op.Gather(op.Shape(self), op.Constant(value_int=dim), axis=0), op.Constant(value_ints=[1]))
        values, indices = op.TopK(op.Cast(self, to=1), length, axis=dim, largest=1 if descending else 0, sorted=1)
        return op.CastLike(values, self), indices

    return {torch.ops.aten.remainder.Scalar: remainder_scalar, torch.ops.aten.sort.stable: sort_stable}


def _stage_sides(side: int, config) -> list[int] | None:
    """The map sides at every stage for an input side of `side` pixels if it pads at the patch embedding, at every
    stage's window partition and before every patch merging, with every map side odd and >= 2 (sizes 0 and 1 are
    specialised by torch.export); None otherwise."""
    if side % config.patch_size == 0:
        return None
    lengths = [math.ceil(side / config.patch_size)]
    for stage in range(len(config.depths)):
        length = lengths[-1]
        if length < 2 or length % 2 == 0 or (config.window_size > 1 and length % config.window_size == 0):
            return None
        if stage < len(config.depths) - 1:
            lengths.append(math.ceil(length / 2))
    return lengths


def export_sample_size(config) -> tuple[int, int]:
    """(height, width) of the export sample: the two smallest sides above 16 pixels that take every padding branch
    (`_stage_sides`), with different map sides at every stage so that torch.export keeps height and width apart."""
    sides, chains = [], []
    side = 16
    while len(sides) < 2:
        side += 1
        if side > 1 << 16:
            raise ValueError(
                f"ONNX export: no input size takes every padding branch of this geometry (patch_size "
                f"{config.patch_size}, window_size {config.window_size}, {len(config.depths)} stages); unsupported."
            )
        chain = _stage_sides(side, config)
        if chain is not None and all(not set(chain) & set(other) for other in chains):
            sides.append(side)
            chains.append(chain)
    return sides[0], sides[1]


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=True).logits


class _UNetSample(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, return_dict=True).sample


def exportable_swin_fpn(model: nn.Module) -> nn.Module:
    """`model` (a `SwinFPNForSegmentation`, changed in place) in eval mode with eager attention (the SDPA path does
    not export with symbolic sizes). UperNet's pyramid pooling is `pooling_swin_fpn.AdaptiveAvgPool2d` in the model
    itself: no ONNX operator bakes the input size in."""
    model.eval()
    model.config._attn_implementation = "eager"
    return model


def export_swin_fpn_onnx(model, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export a `SwinFPNForSegmentation` to `out_dir/model.onnx`: input `pixel_values` (batch, channels, height,
    width), output `logits` (batch, num_labels, height, width), all three sizes dynamic. Returns the file's path."""
    op_translations = _custom_translations()
    model = exportable_swin_fpn(model)
    height, width = export_sample_size(model.config)
    sample = torch.randn(2, model.config.num_channels, height, width)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    path = Path(out_dir) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    # not under no_grad: the model's CPU inference fast path (oneDNN's fused linear) applies without autograd and
    # has no ONNX translation
    torch.onnx.export(
        _LogitsOnly(model).eval(),
        (sample,),
        str(path),
        dynamo=True,
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes=(dims,),
        custom_translation_table=op_translations,
        opset_version=opset,
        external_data=False,
        verbose=False,
    )
    return path


def export_unet_onnx(unet, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export a diffusers `UNet2DModel` to `out_dir/model.onnx`: inputs `sample` (batch, channels, height, width)
    and `timestep` (batch,) int64, output `out_sample`; batch, height and width dynamic (height and width must stay
    divisible by 2**(levels - 1), as for the PyTorch model). Returns the file's path."""
    _onnx_modules()
    unsupported = [
        f"{key}={unet.config.get(key)!r}"
        for key in ("class_embed_type", "num_class_embeds")
        if unet.config.get(key) is not None
    ]
    if unsupported:
        raise ValueError(
            f"ONNX export: class-conditional UNets ({', '.join(unsupported)}) are not supported; export an "
            "unconditional UNet2DModel."
        )
    unet.eval()
    levels = len(unet.config.block_out_channels)
    multiple = 2 ** (levels - 1)
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    # sides >= 2 multiples apart from each other, so that torch.export does not specialise or unify them
    height, width = max(height, 2 * multiple), max(width, 2 * multiple) + multiple
    sample = torch.randn(2, unet.config.in_channels, height, width)
    timestep = torch.tensor([1, 500], dtype=torch.long)
    batch = torch.export.Dim("batch")
    dims = ({0: batch, 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}, {0: batch})
    path = Path(out_dir) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            _UNetSample(unet).eval(),
            (sample, timestep),
            str(path),
            dynamo=True,
            input_names=["sample", "timestep"],
            output_names=["out_sample"],
            dynamic_shapes=dims,
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    return path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"export-onnx: cannot read {path} ({error}); is this a saved model folder?") from None


def export_onnx(model_dir: str | Path, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> list[Path]:
    """`hf-swin-ddpm export-onnx MODEL_DIR OUT_DIR`: a SwinFPN folder (`config.json` with `model_type` "swin_fpn")
    gives `OUT_DIR/model.onnx` plus its config and preprocessor files; a DDPM pipeline folder (`model_index.json`
    with a `unet/`) gives `OUT_DIR/unet/model.onnx` plus the UNet and scheduler configs; a bare `UNet2DModel` folder
    gives `OUT_DIR/model.onnx`. Returns the written `.onnx` paths."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise ValueError(f"export-onnx: {model_dir} is not a folder; give a saved SwinFPN or DDPM pipeline folder.")
    if (model_dir / "model_index.json").is_file():
        from diffusers import UNet2DModel

        if not (model_dir / "unet" / "config.json").is_file():
            raise ValueError(
                f"export-onnx: {model_dir} has model_index.json but no unet/config.json; not a DDPM pipeline."
            )
        class_name = _read_json(model_dir / "unet" / "config.json").get("_class_name")
        if class_name != "UNet2DModel":
            raise ValueError(f"export-onnx: unet/ holds a {class_name}; only UNet2DModel is supported.")
        path = export_unet_onnx(UNet2DModel.from_pretrained(model_dir / "unet"), out_dir / "unet", opset)
        shutil.copy2(model_dir / "unet" / "config.json", out_dir / "unet" / "config.json")
        for name in ("model_index.json", "scheduler"):
            source = model_dir / name
            if source.is_dir():
                shutil.copytree(source, out_dir / name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, out_dir / name)
        return [path]
    config = _read_json(model_dir / "config.json")
    if config.get("model_type") == "swin_fpn":
        from ..swin_fpn import SwinFPNForSegmentation

        model = SwinFPNForSegmentation.from_pretrained(model_dir, attn_implementation="eager")
        path = export_swin_fpn_onnx(model, out_dir, opset)
        for name in ("config.json", "preprocessor_config.json"):
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, out_dir / name)
        return [path]
    if config.get("_class_name") == "UNet2DModel":
        from diffusers import UNet2DModel

        path = export_unet_onnx(UNet2DModel.from_pretrained(model_dir), out_dir, opset)
        shutil.copy2(model_dir / "config.json", out_dir / "config.json")
        return [path]
    kind = config.get("model_type") or config.get("_class_name") or "unknown"
    raise ValueError(
        f"export-onnx: {model_dir} holds a {kind!r} model; supported are SwinFPN folders (model_type 'swin_fpn'), "
        "DDPM pipeline folders (model_index.json + unet/) and UNet2DModel folders."
    )
