"""How SwinFPN runs fastest on CPU: oneDNN's fused linear for inference (the bias, an exact GELU and a residual add run
as the matmul's epilogue, the weight packed once into oneDNN's blocked layout, as inductor emits for CPU inference),
and the memory format of the FPN and head convolutions.

`modeling_swin_fpn.linear` calls `ONEDNN_LINEAR` and falls back to the plain ops where it returns None: the model is
written once, and this is a detail of how its linear layers run. Shipped beside the modeling file as remote code.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation


def onednn_linear_op():
    """oneDNN's CPU linear with fused epilogues (`torch.ops.mkldnn._linear_pointwise`), or None where this torch build
    has no oneDNN."""
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


class OneDNNLinear:
    """Runs `residual + activation(layer(x))` as one oneDNN kernel where it applies (see `applies`).

    `op` is oneDNN's private op; a torch whose op refuses a call (its signature changed) sets it to None, once and for
    good, and every later call runs the plain ops. Each layer's packed weight is kept beside the layer (not in it:
    `deepcopy`, pickling and `state_dict` never see it) and repacked when the weight changes.
    """

    def __init__(self) -> None:
        self.op = onednn_linear_op()
        # layer -> ((device, storage, version) of the weight it was packed from, packed weight)
        self.packed_weights: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def applies(self, hidden_states: torch.Tensor, layer: nn.Linear) -> bool:
        """CPU fp32 inference without autograd, autocast or compilation (oneDNN's op has no backward; the compilers
        fuse on their own)."""
        return (
            self.op is not None
            and not torch.is_grad_enabled()
            and hidden_states.device.type == "cpu"
            and hidden_states.dtype == layer.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
        )

    def packed_weight(self, layer: nn.Linear, rows: int) -> torch.Tensor:
        """`layer.weight` reordered once into oneDNN's blocked layout, so that each call skips the reorder; repacked
        after the weight changes (an optimizer step, `load_state_dict`, `.to()`)."""
        weight = layer.weight
        source = (weight.device, weight.data_ptr(), weight._version)
        cached = self.packed_weights.get(layer)
        if cached is None or cached[0] != source:
            cached = (source, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows))
            self.packed_weights[layer] = cached
        return cached[1]

    def __call__(
        self,
        hidden_states: torch.Tensor,
        layer: nn.Linear,
        activation: nn.Module | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """`layer(hidden_states)`, then `activation` (the exact, erf GELU only), plus `residual`, in one pass over the
        output; None where the kernel does not apply. Equal to the plain ops up to float rounding."""
        gelu = activation is not None
        if gelu and not (isinstance(activation, GELUActivation) and activation.act is F.gelu):
            return None
        if not self.applies(hidden_states, layer) or (residual is not None and not residual.is_contiguous()):
            return None
        try:
            weight = self.packed_weight(layer, hidden_states.numel() // hidden_states.shape[-1])
            if residual is not None and not gelu:
                return self.op.binary(hidden_states, residual, weight, layer.bias, "add")
            output = self.op(hidden_states, weight, layer.bias, "gelu" if gelu else "none", [], "none")
            return output if residual is None else output.add_(residual)
        except (RuntimeError, TypeError, AttributeError, NotImplementedError):  # a torch whose private op differs
            self.op = None
            return None


# One per process, as the op is: a refusal disables it for every model.
ONEDNN_LINEAR = OneDNNLinear()


def head_memory_format(feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The backbone's maps are NCHW views of channels-last tensors, so the FPN and head convolutions run
    channels-last: 1.13x faster for the whole Swin-T segmenter's inference on CPU (512x512, batch 2), but their
    backward is slower there (a training step 1.04x slower), so on CPU with autograd recording they get NCHW copies."""
    if torch.is_grad_enabled() and feature_maps[0].device.type == "cpu":
        return tuple(feature_map.contiguous() for feature_map in feature_maps)
    return feature_maps
