"""SwinFPN: the Swin Transformer (Liu et al. 2021, arXiv 2103.14030) with a Semantic FPN head (Kirillov et al. 2019).

The backbone keeps feature maps channels-last, (batch, height, width, channels), from the patch embedding to the stage
outputs, as the paper's reference code does, and fuses the query/key/value projections into one linear layer. The
shifted-window attention mask and the window gather are built once per stage and resolution, shared by its blocks.
"""

from __future__ import annotations

import math
import os
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_swin_fpn import SwinFPNConfig

# Value the shifted-window mask adds between tokens of different sub-windows (as in the reference implementation).
SHIFTED_WINDOW_MASK_VALUE = -100.0
# Largest per-block attention bias (shifted-window mask repeated for every image of a batch) kept between inference
# calls; Swin-T's largest, stage 1 at 512x512, is 10.4 MB per image.
BIAS_CACHE_BYTES = 32 * 2**20


def _onednn_linear_op():
    """oneDNN's CPU linear with fused epilogues (`torch.ops.mkldnn._linear_pointwise`, what inductor emits), or None
    where this torch build has no oneDNN."""
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()
# oneDNN's blocked copy of each linear layer's weight, (storage, version) -> packed, kept beside the layer (not in
# it: `deepcopy`, pickling and `state_dict` never see it) and repacked when the weight changes.
_PACKED_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused_linear_applies(hidden_states: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether `fused_linear` may run `layer` as one oneDNN kernel with its bias, GELU or residual add fused in:
    CPU fp32 inference without autograd, autocast or compilation (oneDNN's op has no backward; the compilers fuse
    on their own)."""
    return (
        _ONEDNN_LINEAR is not None
        and not torch.is_grad_enabled()
        and hidden_states.device.type == "cpu"
        and hidden_states.dtype == layer.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def packed_weight(layer: nn.Linear, rows: int) -> torch.Tensor:
    """`layer.weight` reordered once into oneDNN's blocked layout (what inductor does for CPU inference), so that
    each call skips the reorder; repacked after the weight changes (an optimizer step, `load_state_dict`, `.to()`)."""
    weight = layer.weight
    source = (weight.device, weight.data_ptr(), weight._version)
    cached = _PACKED_WEIGHTS.get(layer)
    if cached is None or cached[0] != source:
        cached = (source, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows))
        _PACKED_WEIGHTS[layer] = cached
    return cached[1]


def fused_linear(
    hidden_states: torch.Tensor, layer: nn.Linear, gelu: bool = False, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """`layer(hidden_states)`, then exact (erf) GELU if `gelu`, plus `residual` if given, in one pass over the output
    where `fused_linear_applies` (the bias, GELU and sum are the matmul's epilogue: no bias copy before it, no
    elementwise pass after it); the plain ops otherwise. Equal to the plain ops up to float rounding."""
    global _ONEDNN_LINEAR
    if fused_linear_applies(hidden_states, layer) and (residual is None or residual.is_contiguous()):
        try:
            weight = packed_weight(layer, hidden_states.numel() // hidden_states.shape[-1])
            if residual is not None and not gelu:
                return _ONEDNN_LINEAR.binary(hidden_states, residual, weight, layer.bias, "add")
            output = _ONEDNN_LINEAR(hidden_states, weight, layer.bias, "gelu" if gelu else "none", [], "none")
            return output if residual is None else output.add_(residual)
        except (RuntimeError, TypeError, AttributeError, NotImplementedError):  # a torch whose private op differs
            _ONEDNN_LINEAR = None
    output = layer(hidden_states)
    output = F.gelu(output) if gelu else output
    return output if residual is None else output + residual


class SwinFPNDropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drops a residual branch per sample with probability `drop_prob`."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob


def convolutional_stem(config: SwinFPNConfig) -> nn.Sequential:
    """The convolutional stem of Xiao et al. 2021 (Sec. 3, "Early Convolutions Help Transformers See Better"):
    log2(`patch_size`) stride-2 3x3 convs, each with GroupNorm and GELU, then a 1x1 conv; stride `patch_size` and
    `embed_dim` channels, like the linear patch embedding it replaces."""
    width = config.embed_dim
    layers: list[nn.Module] = []
    in_channels = config.num_channels
    for _ in range(config.patch_size.bit_length() - 1):
        layers += [
            nn.Conv2d(in_channels, width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.GroupNorm(math.gcd(width, 8), width),
            nn.GELU(),
        ]
        in_channels = width
    layers.append(nn.Conv2d(width, width, kernel_size=1))
    return nn.Sequential(*layers)


class SwinFPNPatchEmbedding(nn.Module):
    """Splits the image into non-overlapping `patch_size` patches and projects them to `embed_dim` (Sec. 3.1), or,
    with `patch_embedding_type="convolutional"`, runs the convolutional stem to the same stride and width.

    The input is zero-padded on the right and bottom to a multiple of the patch size, as transformers' Swin does.
    """

    def __init__(self, config: SwinFPNConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        if config.patch_embedding_type == "convolutional":
            self.projection = convolutional_stem(config)
        else:
            self.projection = nn.Conv2d(
                config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
            )
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        pad_bottom = (-height) % self.patch_size
        pad_right = (-width) % self.patch_size
        if pad_bottom or pad_right:
            pixel_values = F.pad(pixel_values, (0, pad_right, 0, pad_bottom))
        # any floating-point input works: float16/bfloat16/float64 pixels meet the weights in the weights' dtype
        pixel_values = pixel_values.to(self.norm.weight.dtype)
        embeddings = self.projection(pixel_values).permute(0, 2, 3, 1)
        return self.norm(embeddings)


class SwinFPNPatchMerging(nn.Module):
    """Concatenates each 2x2 neighbourhood (4C channels) and projects it to 2C: the stage transition of Sec. 3.1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * channels)
        self.reduction = nn.Linear(4 * channels, 2 * channels, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        height, width = hidden_states.shape[1:3]
        if height % 2 or width % 2:
            hidden_states = F.pad(hidden_states, (0, 0, 0, width % 2, 0, height % 2))
        batch, height, width, channels = hidden_states.shape
        # (B, H/2, 2[row], W/2, 2[col], C) -> (B, H/2, W/2, col, row, C): the order x00, x10, x01, x11 of the paper's code.
        merged = hidden_states.view(batch, height // 2, 2, width // 2, 2, channels).permute(0, 1, 3, 4, 2, 5)
        merged = merged.reshape(batch, height // 2, width // 2, 4 * channels)
        return self.reduction(self.norm(merged))


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the (2M-1)^2 bias table for every (query, key) pair of an M x M window (Eq. 4 of the paper)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return (relative[..., 0] * (2 * window_size - 1) + relative[..., 1]).flatten()


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T * scaling + mask) V on (batch, heads, tokens, head_dim); returns (batch, tokens, heads, head_dim)
    and the attention probabilities."""
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    context = torch.matmul(F.dropout(weights, p=dropout, training=module.training), value)
    return context.transpose(1, 2), weights


class SwinFPNWindowAttention(nn.Module):
    """Multi-head self-attention inside each window with a learned relative position bias B (Eq. 4):

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B + mask) V,

    where `mask` separates the sub-windows that the cyclic shift of SW-MSA brought together. The kernel is chosen the
    transformers way, from `config._attn_implementation` ("sdpa" by default, or "eager").
    """

    def __init__(self, config: SwinFPNConfig, channels: int, num_heads: int) -> None:
        super().__init__()
        self.config = config
        self.is_causal = False
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.scaling = self.head_dim**-0.5
        self.window_area = config.window_size**2
        self.attention_dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(channels, 3 * channels, bias=config.qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * config.window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(config.window_size), persistent=False)

        self._bias_cache: dict[tuple, torch.Tensor] = {}
        self._bias_cache_source: tuple = ()

    def relative_position_bias(self) -> torch.Tensor:
        """B of Eq. 4 for this block's heads: (num_heads, M^2, M^2)."""
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.view(self.window_area, self.window_area, self.num_heads).permute(2, 0, 1)

    def attention_bias(
        self, shift_mask: torch.Tensor | None, dtype: torch.dtype, batch: int = 1, layout_key: tuple | None = None
    ) -> torch.Tensor:
        """B + mask of the attention for `batch` images: (1, heads, M^2, M^2) without `shift_mask` (broadcast over
        the windows), (batch * nW, heads, M^2, M^2) with it.

        Without autograd and with a `layout_key` (the window geometry `shift_mask` was built for) it is built once
        and cached until the table changes (an optimizer step, `load_state_dict`, `.to()`: its storage or version
        counter moves); the copy per image of a shifted block's bias is cached only up to `BIAS_CACHE_BYTES`, above
        that it is repeated per call. With autograd it is gathered from the table on every call, so the table gets
        its gradient.
        """
        table = self.relative_position_bias_table
        if torch.is_grad_enabled() or layout_key is None or torch.compiler.is_compiling():
            return self._combined_bias(shift_mask, dtype, batch)
        source = (table.device, table.data_ptr(), table._version)
        if source != self._bias_cache_source:
            self._bias_cache.clear()
            self._bias_cache_source = source
        per_image = shift_mask is None or (
            batch * shift_mask.numel() * self.num_heads * torch.finfo(dtype).bits // 8 > BIAS_CACHE_BYTES
        )
        key = (layout_key, dtype, 1 if per_image else batch)
        if key not in self._bias_cache:
            if len(self._bias_cache) >= 8:  # a few input sizes at a time (TTA scales, slide crops)
                self._bias_cache.pop(next(iter(self._bias_cache)), None)
            self._bias_cache[key] = self._combined_bias(shift_mask, dtype, key[2])
        bias = self._bias_cache[key]
        return bias.repeat(batch, 1, 1, 1) if per_image and shift_mask is not None and batch > 1 else bias

    def _combined_bias(self, shift_mask: torch.Tensor | None, dtype: torch.dtype, batch: int) -> torch.Tensor:
        bias = self.relative_position_bias().unsqueeze(0)
        if shift_mask is None:
            return bias.to(dtype)
        bias = (bias + shift_mask.unsqueeze(1)).to(dtype)
        return bias.repeat(batch, 1, 1, 1) if batch > 1 else bias

    def forward(
        self, windows: torch.Tensor, shift_mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`windows`: (B, nW, M^2, C); `shift_mask`: (nW, M^2, M^2) or None. Returns (B, nW, M^2, C)."""
        context, weights = self.attend(windows, shift_mask, output_attentions)
        return self.project(context), weights

    def project(self, context: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The output projection (and its dropout) of `attend`'s context, plus `residual` if given (fused in
        inference, see `fused_linear`). It is per token, so it can run after the windows are undone."""
        if self.training:
            projected = self.proj_dropout(self.proj(context))
            return projected if residual is None else projected + residual
        return fused_linear(context, self.proj, residual=residual)

    def attend(
        self,
        windows: torch.Tensor,
        shift_mask: torch.Tensor | None,
        output_attentions: bool = False,
        layout_key: tuple | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The heads' attention outputs, concatenated, before the output projection: (B, nW, M^2, C)."""
        batch, num_windows, tokens, channels = windows.shape
        qkv = fused_linear(windows, self.qkv).view(batch * num_windows, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.attention_bias(shift_mask, query.dtype, batch, layout_key)
        attention = eager_attention_forward
        if not output_attentions:
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        context, weights = attention(
            self,
            query,
            key,
            value,
            bias,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
        )
        return context.reshape(batch, num_windows, tokens, channels), weights if output_attentions else None


class SwinFPNMLP(nn.Module):
    def __init__(self, config: SwinFPNConfig, channels: int) -> None:
        super().__init__()
        hidden = int(channels * config.mlp_ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.activation = ACT2FN[config.hidden_act]
        self.exact_gelu = config.hidden_act == "gelu"
        self.fc2 = nn.Linear(hidden, channels)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """fc2(act(fc1(x))), plus `residual` if given; in inference the bias, GELU and sum are fused into the
        matmuls where `fused_linear` applies."""
        if self.training:
            hidden_states = self.dropout(self.activation(self.fc1(hidden_states)))
            hidden_states = self.dropout(self.fc2(hidden_states))
            return hidden_states if residual is None else hidden_states + residual
        if self.exact_gelu:
            hidden_states = fused_linear(hidden_states, self.fc1, gelu=True)
        else:
            hidden_states = self.activation(self.fc1(hidden_states))
        return fused_linear(hidden_states, self.fc2, residual=residual)


class WindowLayout:
    """How a stage's (H, W) map is cut into M x M windows: padding, cyclic shift and the SW-MSA mask.

    Built once per stage and forward from shapes only and shared by the stage's blocks. Padding to whole windows, the
    cyclic shift by -floor(M/2) (Sec. 3.2) and the window partition are one gather along the token axis, and their
    inverse (partition reversed, shift undone, padding cropped) is one gather too: two copies per block instead of
    the five of pad, roll, partition, reverse and roll back.
    """

    def __init__(self, height: int, width: int, window_size: int, device: torch.device) -> None:
        self.height, self.width, self.window_size = height, width, window_size
        self.padded_height = height + (-height) % window_size
        self.padded_width = width + (-width) % window_size
        self.num_windows = (self.padded_height // window_size) * (self.padded_width // window_size)
        self.num_padding = self.padded_height * self.padded_width - height * width
        self.shift = window_size // 2
        self.shift_mask = self._shift_mask(device) if self.shift > 0 else None
        self._gathers = {
            shifted: self._gather_indices(self.shift if shifted else 0, device) for shifted in (False, True)
        }

    def _window_slot_coordinates(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column, in the padded (and shifted) map, of every token slot in window order."""
        window, windows_per_row = self.window_size, self.padded_width // self.window_size
        slot = torch.arange(self.padded_height * self.padded_width, device=device)
        window_index, inner = slot // (window * window), slot % (window * window)
        rows = (window_index // windows_per_row) * window + inner // window
        cols = (window_index % windows_per_row) * window + inner % window
        return rows, cols

    def _gather_indices(self, shift: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(source token of each window slot, the slots that hold padding, the window slot of each token)."""
        window, windows_per_row = self.window_size, self.padded_width // self.window_size
        rows, cols = self._window_slot_coordinates(device)
        source_rows = (rows + shift) % self.padded_height  # torch.roll by -shift reads from i + shift
        source_cols = (cols + shift) % self.padded_width
        valid = (source_rows < self.height) & (source_cols < self.width)
        slot_sources = torch.where(valid, source_rows * self.width + source_cols, 0)
        padding_slots = torch.argsort(valid.to(torch.uint8), stable=True)[: self.num_padding]
        # (i - shift) mod size, kept non-negative for the compilers' index analysis
        token_rows = (
            torch.arange(self.height, device=device)[:, None] + self.padded_height - shift
        ) % self.padded_height
        token_cols = (torch.arange(self.width, device=device)[None, :] + self.padded_width - shift) % self.padded_width
        token_slots = ((token_rows // window) * windows_per_row + token_cols // window) * window * window
        token_slots = token_slots + (token_rows % window) * window + token_cols % window
        return slot_sources, padding_slots, token_slots.flatten()

    def _shift_mask(self, device: torch.device) -> torch.Tensor:
        """(nW, M^2, M^2) mask: 0 within a sub-window of the shifted map, -100 across (Sec. 3.2, Fig. 4)."""
        window, shift = self.window_size, self.shift
        rows, cols = self._window_slot_coordinates(device)
        row_region = (rows >= self.padded_height - window).long() + (rows >= self.padded_height - shift).long()
        col_region = (cols >= self.padded_width - window).long() + (cols >= self.padded_width - shift).long()
        regions = (row_region * 3 + col_region).view(self.num_windows, window * window)
        mask = regions[:, None, :] != regions[:, :, None]
        return torch.zeros(mask.shape, device=device).masked_fill_(mask, SHIFTED_WINDOW_MASK_VALUE)

    def to_windows(self, hidden_states: torch.Tensor, shifted: bool) -> torch.Tensor:
        """(B, H, W, C) -> (B, nW, M^2, C): zero-pad to whole windows, shift by -floor(M/2) if `shifted`, partition."""
        batch, _, _, channels = hidden_states.shape
        slot_sources, padding_slots, _ = self._gathers[shifted]
        windows = hidden_states.reshape(batch, -1, channels).index_select(1, slot_sources)
        if self.num_padding:
            windows.index_fill_(1, padding_slots, 0.0)
        return windows.view(batch, self.num_windows, -1, channels)

    def from_windows(self, windows: torch.Tensor, shifted: bool) -> torch.Tensor:
        """Inverse of `to_windows`: (B, nW, M^2, C) -> (B, H, W, C)."""
        batch, _, _, channels = windows.shape
        tokens = windows.reshape(batch, -1, channels).index_select(1, self._gathers[shifted][2])
        return tokens.view(batch, self.height, self.width, channels)


class SwinFPNBlock(GradientCheckpointingLayer):
    """One Swin Transformer block (Eq. 3): z' = (S)W-MSA(LN(z)) + z; z = MLP(LN(z')) + z'."""

    def __init__(self, config: SwinFPNConfig, channels: int, num_heads: int, drop_path: float, shifted: bool) -> None:
        super().__init__()
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.attn = SwinFPNWindowAttention(config, channels, num_heads)
        self.norm2 = nn.LayerNorm(channels, eps=config.layer_norm_eps)
        self.mlp = SwinFPNMLP(config, channels)
        self.drop_path = SwinFPNDropPath(drop_path)

    def forward(
        self, hidden_states: torch.Tensor, layout: WindowLayout, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        shifted = self.shifted and layout.shift > 0
        windows = layout.to_windows(self.norm1(hidden_states), shifted)
        shift_mask = layout.shift_mask if shifted else None
        context, weights = self.attn.attend(windows, shift_mask, output_attentions, (layout.height, layout.width))
        # the output projection is per token: after the windows are undone it skips the padding slots
        context = layout.from_windows(context, shifted)
        if self.training:
            hidden_states = hidden_states + self.drop_path(self.attn.project(context))
            return hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states))), weights
        hidden_states = self.attn.project(context, residual=hidden_states)
        return self.mlp(self.norm2(hidden_states), residual=hidden_states), weights


class SwinFPNStage(nn.Module):
    """The blocks of one stage, alternating W-MSA and SW-MSA, then the patch merging to the next stage (if any)."""

    def __init__(
        self, config: SwinFPNConfig, channels: int, depth: int, num_heads: int, drop_paths: list[float], merge: bool
    ) -> None:
        super().__init__()
        self.window_size = config.window_size
        self.blocks = nn.ModuleList(
            [SwinFPNBlock(config, channels, num_heads, drop_paths[i], shifted=i % 2 == 1) for i in range(depth)]
        )
        self.downsample = SwinFPNPatchMerging(channels) if merge else None
        self._layouts: dict[tuple, WindowLayout] = {}

    def window_layout(self, hidden_states: torch.Tensor) -> WindowLayout:
        """The `WindowLayout` of this stage's (H, W) map, built once per size and device and kept for the next
        forwards (a few sizes at a time); rebuilt on every call while compiling, so that the graph holds it."""
        height, width = hidden_states.shape[1:3]
        if torch.compiler.is_compiling():
            return WindowLayout(height, width, self.window_size, hidden_states.device)
        key = (height, width, hidden_states.device)
        if key not in self._layouts:
            if len(self._layouts) >= 8:
                self._layouts.pop(next(iter(self._layouts)), None)
            with torch.inference_mode(False):  # plain tensors: later training steps save the indices for backward
                self._layouts[key] = WindowLayout(height, width, self.window_size, hidden_states.device)
        return self._layouts[key]

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        layout = self.window_layout(hidden_states)
        weights = None
        for index, block in enumerate(self.blocks):
            # transformers' Swin convention: the stage reports its last block's attention probabilities
            hidden_states, weights = block(hidden_states, layout, output_attentions and index == len(self.blocks) - 1)
        return hidden_states, (weights,) if output_attentions else ()


class SwinFPNBackbone(nn.Module):
    """The hierarchical Swin encoder: patch embedding, four stages, a LayerNorm on each stage output.

    `forward(pixel_values)` returns the stage outputs (before patch merging) as NCHW maps at strides
    patch, 2*patch, 4*patch, 8*patch, the order and layout of transformers' `SwinBackbone.feature_maps`.
    """

    def __init__(self, config: SwinFPNConfig) -> None:
        super().__init__()
        self.patch_embed = SwinFPNPatchEmbedding(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        total_blocks = sum(config.depths)
        drop_paths = [config.drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        self.stages = nn.ModuleList()
        for index, (depth, heads, channels) in enumerate(zip(config.depths, config.num_heads, config.stage_channels)):
            first = sum(config.depths[:index])
            self.stages.append(
                SwinFPNStage(
                    config,
                    channels,
                    depth,
                    heads,
                    drop_paths[first : first + depth],
                    merge=index < len(config.depths) - 1,
                )
            )
        self.stage_norms = nn.ModuleList(nn.LayerNorm(channels) for channels in config.stage_channels)

    def encode(
        self, pixel_values: torch.Tensor, output_attentions: bool = False
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Returns (stage feature maps NCHW, hidden states NCHW, attention probabilities per stage).

        The hidden states follow transformers' Swin (`SwinBackbone.hidden_states`): the patch embedding, then each
        stage's output before patch merging and before the stage LayerNorm, `len(depths) + 1` maps. Each is an NCHW
        view that the rest of the network reads through, so it is part of the autograd graph (`retain_grad` works).
        """
        hidden_states = self.dropout(self.patch_embed(pixel_values))
        feature_maps, attentions = (), ()
        states = (hidden_states.permute(0, 3, 1, 2),)
        hidden_states = states[0].permute(0, 2, 3, 1)  # the same channels-last tensor, read through the NCHW view
        for stage, norm in zip(self.stages, self.stage_norms):
            hidden_states, stage_attentions = stage(hidden_states, output_attentions)
            attentions += stage_attentions
            states += (hidden_states.permute(0, 3, 1, 2),)
            hidden_states = states[-1].permute(0, 2, 3, 1)
            feature_maps += (norm(hidden_states).permute(0, 3, 1, 2),)
            if stage.downsample is not None:
                hidden_states = stage.downsample(hidden_states)
        return feature_maps, states, attentions

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.encode(pixel_values)[0]


def _head_memory_format(feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The backbone's maps are NCHW views of channels-last tensors, so the FPN and head convolutions run
    channels-last: 1.13x faster for the whole Swin-T segmenter's inference on CPU (512x512, batch 2), but their
    backward is slower there (a training step 1.04x slower), so on CPU with autograd recording they get NCHW copies."""
    if torch.is_grad_enabled() and feature_maps[0].device.type == "cpu":
        return tuple(feature_map.contiguous() for feature_map in feature_maps)
    return feature_maps


class SwinFPNFeaturePyramid(nn.Module):
    """Feature Pyramid Network (Lin et al. 2017): lateral 1x1 convs, a top-down path with nearest upsampling and
    addition, and a 3x3 conv on each merged level. All levels get `fpn_hidden_size` channels."""

    def __init__(self, config: SwinFPNConfig) -> None:
        super().__init__()
        width = config.fpn_hidden_size
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in config.stage_channels)
        self.output_convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, padding=1) for _ in config.stage_channels
        )

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        laterals = [conv(feature) for conv, feature in zip(self.lateral_convs, feature_maps)]
        for level in range(len(laterals) - 1, 0, -1):
            coarser = F.interpolate(laterals[level], size=laterals[level - 1].shape[-2:], mode="nearest")
            laterals[level - 1] = laterals[level - 1] + coarser
        return [conv(lateral) for conv, lateral in zip(self.output_convs, laterals)]


class SwinFPNUpsamplingBranch(nn.Module):
    """One level of the Semantic FPN head: max(1, level) stages of conv3x3-GroupNorm-ReLU, each followed by a 2x
    bilinear upsampling except at the finest level, bringing the level to stride `patch_size`."""

    def __init__(self, config: SwinFPNConfig, level: int) -> None:
        super().__init__()
        self.upsample = level > 0
        in_channels = [config.fpn_hidden_size] + [config.head_hidden_size] * max(level - 1, 0)
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, config.head_hidden_size, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(config.head_num_groups, config.head_hidden_size),
                nn.ReLU(inplace=True),
            )
            for channels in in_channels
        )

    def forward(self, feature: torch.Tensor, sizes: list[torch.Size]) -> torch.Tensor:
        """`sizes` are the spatial sizes of the finer levels, finest first, to upsample through."""
        for step, conv in enumerate(self.convs):
            feature = conv(feature)
            if self.upsample:
                target = sizes[len(self.convs) - 1 - step]
                feature = F.interpolate(feature, size=target, mode="bilinear", align_corners=False)
        return feature


class SwinFPNSegmentationHead(nn.Module):
    """Semantic FPN head (Kirillov et al. 2019, Sec. 3 and Fig. 3): every FPN level is brought to the finest stride
    with 128 channels, the levels are summed, and a 1x1 conv predicts the classes."""

    def __init__(self, config: SwinFPNConfig) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            SwinFPNUpsamplingBranch(config, level) for level in range(len(config.stage_channels))
        )
        self.classifier = nn.Conv2d(config.head_hidden_size, config.num_labels, kernel_size=1)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        sizes = [level.shape[-2:] for level in pyramid]
        fused = self.branches[0](pyramid[0], sizes)
        for level in range(1, len(pyramid)):
            fused = fused + self.branches[level](pyramid[level], sizes)
        return self.classifier(fused)


class SwinFPNConvModule(nn.Module):
    """conv (no bias) - BatchNorm - ReLU: the `ConvModule` of mmseg's UperNet and FCN heads."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size=kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batch_norm(self.conv(hidden_states)))


class SwinFPNUperNetHead(nn.Module):
    """UperNet (Xiao et al. 2018, "Unified Perceptual Parsing", Sec. 3 and Fig. 4), mmseg's `UPerHead`:

    - a pyramid pooling module (PSPNet, Zhao et al. 2017) on the last stage: average pools to each of `pool_scales`,
      1x1 conv-BN-ReLU, bilinear upsampling back, concatenated with the stage and fused by a 3x3 conv: the top level;
    - FPN: 1x1 lateral convs on the other stages, a top-down path adding the bilinearly upsampled coarser level, a
      3x3 conv on each merged level;
    - fusion: every level upsampled bilinearly to the finest, concatenated, a 3x3 conv, then the 1x1 classifier.

    All convs have `upernet_hidden_size` (512) channels. Submodule names follow transformers' `UperNetHead`.
    """

    def __init__(self, config: SwinFPNConfig) -> None:
        super().__init__()
        channels, stages = config.upernet_hidden_size, config.stage_channels
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), SwinFPNConvModule(stages[-1], channels, kernel_size=1))
            for scale in config.pool_scales
        )
        self.bottleneck = SwinFPNConvModule(
            stages[-1] + len(config.pool_scales) * channels, channels, kernel_size=3, padding=1
        )
        self.lateral_convs = nn.ModuleList(SwinFPNConvModule(c, channels, kernel_size=1) for c in stages[:-1])
        self.fpn_convs = nn.ModuleList(
            SwinFPNConvModule(channels, channels, kernel_size=3, padding=1) for _ in stages[:-1]
        )
        self.fpn_bottleneck = SwinFPNConvModule(len(stages) * channels, channels, kernel_size=3, padding=1)
        self.classifier = nn.Conv2d(channels, config.num_labels, kernel_size=1)

    def pyramid_pooling(self, top: torch.Tensor) -> torch.Tensor:
        pooled = [
            F.interpolate(module(top), size=top.shape[-2:], mode="bilinear", align_corners=False)
            for module in self.psp_modules
        ]
        return self.bottleneck(torch.cat([top, *pooled], dim=1))

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        laterals = [conv(feature) for conv, feature in zip(self.lateral_convs, feature_maps)]
        laterals.append(self.pyramid_pooling(feature_maps[-1]))
        for level in range(len(laterals) - 1, 0, -1):
            coarser = F.interpolate(
                laterals[level], size=laterals[level - 1].shape[-2:], mode="bilinear", align_corners=False
            )
            laterals[level - 1] = laterals[level - 1] + coarser
        outputs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        finest = outputs[0].shape[-2:]
        outputs = [outputs[0]] + [
            F.interpolate(level, size=finest, mode="bilinear", align_corners=False) for level in outputs[1:]
        ]
        return self.classifier(self.fpn_bottleneck(torch.cat(outputs, dim=1)))


class SwinFPNAuxiliaryHead(nn.Module):
    """The auxiliary FCN head (Long et al. 2015) of mmseg's `upernet_swin` configs, on stage `auxiliary_in_index`:
    `auxiliary_num_convs` 3x3 conv-BN-ReLU layers of `auxiliary_channels`, optionally concatenated with the input and
    fused by one more conv, then a 1x1 classifier. Submodule names follow transformers' `UperNetFCNHead`."""

    def __init__(self, config: SwinFPNConfig) -> None:
        super().__init__()
        self.in_index = config.auxiliary_in_index
        in_channels, channels = config.stage_channels[self.in_index], config.auxiliary_channels
        convs = [
            SwinFPNConvModule(in_channels if i == 0 else channels, channels, kernel_size=3, padding=1)
            for i in range(config.auxiliary_num_convs)
        ]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.concat_input = config.auxiliary_concat_input
        if self.concat_input:
            self.conv_cat = SwinFPNConvModule(in_channels + channels, channels, kernel_size=3, padding=1)
        self.classifier = nn.Conv2d(channels, config.num_labels, kernel_size=1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        features = feature_maps[self.in_index]
        hidden_states = self.convs(features)
        if self.concat_input:
            hidden_states = self.conv_cat(torch.cat([features, hidden_states], dim=1))
        return self.classifier(hidden_states)


class SwinFPNPreTrainedModel(PreTrainedModel):
    config_class = SwinFPNConfig
    config: SwinFPNConfig
    base_model_prefix = "swin_fpn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _no_split_modules = ["SwinFPNStage"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, except that a truncated or damaged safetensors file raises an `OSError`
        naming the file and the fix, where safetensors' own error ("Error while deserializing header") names none."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as error:
            damaged = _damaged_weights_file(pretrained_model_name_or_path, kwargs)
            if damaged is None:
                raise
            raise OSError(
                f"{damaged}: truncated or damaged safetensors file ({' '.join(str(error).split())}). Re-download it "
                "(`from_pretrained(..., force_download=True)` for a Hub repository) or re-save the model with "
                "`save_pretrained`."
            ) from error

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, SwinFPNWindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=self.config.initializer_range)
            init.copy_(module.relative_position_index, relative_position_index(self.config.window_size))
        elif isinstance(module, nn.Conv2d) and module.kernel_size != (self.config.patch_size,) * 2:
            init.kaiming_uniform_(module.weight, a=1)


class SwinFPNForSegmentation(SwinFPNPreTrainedModel):
    """Swin backbone + FPN + Semantic FPN head for semantic segmentation.

    Returns a `SemanticSegmenterOutput` whose `logits` are (batch, num_labels, height, width) at the input size.
    With `labels` (batch, height, width), `loss` is the cross-entropy ignoring `config.semantic_loss_ignore_index`.

    `hidden_states` and `attentions` follow transformers' Swin (`SwinBackbone`, as UperNet returns them):

    - `hidden_states` (`output_hidden_states=True`): `config.num_hidden_layers + 1` NCHW maps, where
      `num_hidden_layers = len(depths)` (stages, as in `SwinConfig`): the patch embedding (stride `patch_size`), then
      each stage's output before patch merging and before the stage LayerNorm (strides patch_size * 2**i). The
      normalised maps the FPN reads are `model.backbone(pixel_values)`.
    - `attentions` (`output_attentions=True`, computed with the eager kernel): `config.num_hidden_layers` tensors,
      one per stage: the attention probabilities of the stage's last block (a shifted-window block when the stage
      has an even depth), shaped (batch * num_windows, num_heads, window_size**2, window_size**2).

    Every returned hidden state and attention map is part of the autograd graph (`retain_grad()` gets a gradient).
    """

    def __init__(self, config: SwinFPNConfig) -> None:
        super().__init__(config)
        self.backbone = SwinFPNBackbone(config)
        if config.decode_head_type == "upernet":
            self.decode_head = SwinFPNUperNetHead(config)
        else:
            self.fpn = SwinFPNFeaturePyramid(config)
            self.decode_head = SwinFPNSegmentationHead(config)
        self.auxiliary_head = SwinFPNAuxiliaryHead(config) if config.use_auxiliary_head else None
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        output_hidden_states = bool(output_hidden_states or self.config.output_hidden_states)
        output_attentions = bool(output_attentions or self.config.output_attentions)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        self._check_pixel_values(pixel_values)
        if labels is not None:
            self._check_labels(labels, pixel_values)

        feature_maps, hidden_states, attentions = self.backbone.encode(pixel_values, output_attentions)
        logits, auxiliary_logits = self._decode(feature_maps, pixel_values.shape[-2:], labels is not None)

        loss = None
        if labels is not None:
            loss = self._segmentation_loss(logits, auxiliary_logits, labels)

        hidden_states = hidden_states if output_hidden_states else None
        attentions = attentions if output_attentions else None
        if not return_dict:
            output = tuple(v for v in (logits, hidden_states, attentions) if v is not None)
            return ((loss,) + output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions)

    def _decode(
        self, feature_maps: tuple[torch.Tensor, ...], input_size: torch.Size, with_auxiliary: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits at the input size from the decode head and, when `with_auxiliary` (a loss is computed) and the
        model has one, from the auxiliary head. UperNet's logits are upsampled bilinearly straight to the input size,
        as mmseg and transformers' `UperNetForSemanticSegmentation` do."""
        feature_maps = _head_memory_format(feature_maps)
        if self.config.decode_head_type == "upernet":
            logits = F.interpolate(
                self.decode_head(feature_maps), size=input_size, mode="bilinear", align_corners=False
            )
        else:
            logits = self._upsample_to_input(self.decode_head(self.fpn(feature_maps)), input_size)
        auxiliary_logits = None
        if with_auxiliary and self.auxiliary_head is not None:
            auxiliary_logits = F.interpolate(
                self.auxiliary_head(feature_maps), size=input_size, mode="bilinear", align_corners=False
            )
        return logits, auxiliary_logits

    def _segmentation_loss(
        self, logits: torch.Tensor, auxiliary_logits: torch.Tensor | None, labels: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy ignoring `semantic_loss_ignore_index`, plus `auxiliary_loss_weight` times the auxiliary
        head's (mmseg's `upernet_swin`: 0.4)."""
        ignore_index = self.config.semantic_loss_ignore_index
        loss = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)
        if auxiliary_logits is not None:
            auxiliary = F.cross_entropy(auxiliary_logits, labels.long(), ignore_index=ignore_index)
            loss = loss + self.config.auxiliary_loss_weight * auxiliary
        return loss

    def _upsample_to_input(self, logits: torch.Tensor, input_size: torch.Size) -> torch.Tensor:
        """Bilinear upsampling from stride `patch_size` to the padded input, then the padding is cropped away."""
        patch = self.config.patch_size
        padded = (logits.shape[-2] * patch, logits.shape[-1] * patch)
        logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return logits[..., : input_size[0], : input_size[1]]

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """Raise `ValueError` naming the problem: not a tensor, wrong rank or channels, not floating point, empty,
        more than `config.max_input_pixels` pixels, or NaN/inf values."""
        expected = f"(batch, {self.config.num_channels}, height, width)"
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"pixel_values: expected a torch.Tensor of shape {expected}, got {type(pixel_values)}.")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(f"pixel_values: expected shape {expected}, got {tuple(pixel_values.shape)}.")
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values: expected a floating-point tensor (use the image processor), got {pixel_values.dtype}."
            )
        if min(pixel_values.shape) < 1:
            raise ValueError(f"pixel_values: every dimension must be >= 1, got {tuple(pixel_values.shape)}.")
        batch, _, height, width = pixel_values.shape
        max_pixels = self.config.max_input_pixels
        if max_pixels is not None and batch * height * width > max_pixels:
            raise ValueError(
                f"pixel_values: batch * height * width = {batch} * {height} * {width} = {batch * height * width:,} "
                f"exceeds config.max_input_pixels = {max_pixels:,}; split the batch, downscale the images or raise "
                "the bound if the memory allows."
            )
        if not torch.compiler.is_compiling() and not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values: expected finite values, got NaN or infinity.")

    def _check_labels(self, labels: torch.Tensor, pixel_values: torch.Tensor) -> None:
        """Raise `ValueError` unless `labels` is an integer (batch, height, width) tensor of class ids in
        [0, num_labels) or the ignore index."""
        expected = (pixel_values.shape[0], *pixel_values.shape[-2:])
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"labels: expected a torch.Tensor of shape {expected}, got {type(labels)}.")
        if labels.shape != expected:
            raise ValueError(
                f"labels: expected shape (batch, height, width) = {expected} to match pixel_values, "
                f"got {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels: expected an integer tensor of class ids, got {labels.dtype}.")
        if torch.compiler.is_compiling():
            return
        ignore_index, num_labels = self.config.semantic_loss_ignore_index, self.config.num_labels
        invalid = (labels != ignore_index) & ((labels < 0) | (labels >= num_labels))
        if invalid.any():
            values = labels[invalid].unique()[:5].tolist()
            raise ValueError(
                f"labels: expected class ids in [0, {num_labels - 1}] or the ignore index {ignore_index}, got "
                f"{values} ({int(invalid.sum())} pixels); check the label map's encoding (e.g. reduce_labels)."
            )

    @classmethod
    def from_pretrained_backbone(
        cls, name_or_path: str, allow_pickle: bool = False, **config_kwargs
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
        geometry = _swin_geometry(swin_config)
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
        model = cls(config)
        converted = convert_swin_backbone_state_dict(swin_backbone.state_dict())
        missing_norms = any(key.startswith("hidden_states_norms") for key in info["missing_keys"])
        if missing_norms:
            converted = {k: v for k, v in converted.items() if not k.startswith("stage_norms.")}
        model.backbone.load_state_dict(converted, strict=not missing_norms)
        return model

    # --- inference at any image size (mmsegmentation's `whole` / `slide` test modes and its TTA) -------------------

    @torch.no_grad()
    def inference(
        self,
        pixel_values: torch.Tensor,
        mode: str = "whole",
        crop_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        scales: tuple[float, ...] | list[float] = (1.0,),
        flip: bool = False,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Logits (batch, num_labels, *output_size) for normalised `pixel_values` of any size, the way
        mmsegmentation tests segmenters.

        `mode="whole"` runs the model on the full image. `mode="slide"` runs it on `crop_size` windows placed every
        `stride` pixels (the last window of a row or column is moved back to end at the image border) and averages
        the logits of overlapping windows with a count map: memory is bounded by the crop, whatever the image size.
        `crop_size` defaults to `config.image_size` and `stride` to two thirds of the crop (512 -> 341, mmseg's
        ADE20K setting); both take an int or (height, width).

        Test-time augmentation: each of `scales` resizes the input (bilinear) by that ratio, `flip=True` adds the
        horizontal mirror of every scale. Every view's logits are resized (bilinear) to `output_size` (default: the
        input's size), flipped views are mirrored back, and the views' **softmax probabilities** are averaged, as
        mmseg's `SegTTAModel` (and the Swin repo's `aug_test`) do; the result is returned as log-probabilities, so
        its softmax is that average and its argmax the TTA prediction. With one view (the default) the model's raw
        logits are returned, resized to `output_size`.
        """
        if mode not in ("whole", "slide"):
            raise ValueError(f"inference: mode must be 'whole' or 'slide', got {mode!r}.")
        self._check_pixel_values_shape(pixel_values)
        scales = tuple(float(scale) for scale in scales)
        if not scales or any(not (0.0 < scale < math.inf) for scale in scales):
            raise ValueError(f"inference: scales must be positive finite ratios, got {scales!r}.")
        height, width = pixel_values.shape[-2:]
        output_size = (int(height), int(width)) if output_size is None else tuple(int(s) for s in output_size)
        if len(output_size) != 2 or min(output_size) < 1:
            raise ValueError(f"inference: output_size must be (height, width) >= 1, got {output_size!r}.")
        crop = _pair(crop_size if crop_size is not None else self.config.image_size, "crop_size")
        window_stride = _pair(stride if stride is not None else tuple(max(1, 2 * c // 3) for c in crop), "stride")
        if any(s > c for s, c in zip(window_stride, crop)):
            raise ValueError(
                f"inference: stride {window_stride} exceeds crop_size {crop}, which would leave pixels between the "
                "windows unpredicted; use a stride <= the crop size."
            )
        views = [(scale, flipped) for scale in scales for flipped in ((False, True) if flip else (False,))]
        total = None
        for scale, flipped in views:
            view = pixel_values.flip(-1) if flipped else pixel_values
            if scale != 1.0:
                size = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
                view = F.interpolate(view, size=size, mode="bilinear", align_corners=False)
            if mode == "slide":
                logits = self.slide_logits(view, crop, window_stride)
            else:
                logits = self(pixel_values=view, return_dict=True).logits
            if tuple(logits.shape[-2:]) != output_size:
                logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
            if flipped:
                logits = logits.flip(-1)
            if len(views) == 1:
                return logits
            probabilities = logits.float().softmax(dim=1)
            total = probabilities if total is None else total + probabilities
        return (total / len(views)).log()

    def slide_logits(
        self, pixel_values: torch.Tensor, crop_size: tuple[int, int], stride: tuple[int, int]
    ) -> torch.Tensor:
        """mmseg's `slide_inference`: logits of `crop_size` windows every `stride` pixels, summed into place and
        divided by the count map (how many windows cover each pixel). (batch, num_labels, height, width)."""
        batch, _, height, width = pixel_values.shape
        logits_sum = count = None
        for top, left in _window_origins((height, width), crop_size, stride):
            bottom, right = min(top + crop_size[0], height), min(left + crop_size[1], width)
            crop_logits = self(pixel_values=pixel_values[..., top:bottom, left:right], return_dict=True).logits
            if logits_sum is None:
                logits_sum = crop_logits.new_zeros(batch, crop_logits.shape[1], height, width)
                count = crop_logits.new_zeros(1, 1, height, width)
            logits_sum[..., top:bottom, left:right] += crop_logits
            count[..., top:bottom, left:right] += 1
        return logits_sum.div_(count)

    def _check_pixel_values_shape(self, pixel_values: torch.Tensor) -> None:
        """`inference` checks type, rank, channels and dtype; each forward (one crop in slide mode) checks the rest,
        so `config.max_input_pixels` bounds a crop, not the image."""
        expected = f"a floating-point torch.Tensor (batch, {self.config.num_channels}, height, width)"
        is_tensor = isinstance(pixel_values, torch.Tensor)
        if not is_tensor or pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            shape = tuple(pixel_values.shape) if is_tensor else type(pixel_values).__name__
            raise ValueError(f"inference: pixel_values must be {expected}, got {shape}.")
        if not pixel_values.is_floating_point() or pixel_values.numel() == 0:
            raise ValueError(
                f"inference: pixel_values must be {expected}, got {pixel_values.dtype} {tuple(pixel_values.shape)}."
            )

    @classmethod
    def from_pretrained_upernet(
        cls, name_or_path: str, allow_pickle: bool = False, **config_kwargs
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
        shaped = _swin_geometry(swin_config) | {
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
        model = cls(config)
        model.backbone.load_state_dict(convert_swin_backbone_state_dict(upernet.backbone.state_dict()))
        model.decode_head.load_state_dict(upernet.decode_head.state_dict())
        if model.auxiliary_head is not None:
            model.auxiliary_head.load_state_dict(upernet.auxiliary_head.state_dict())
        return model.train(upernet.training)


def _pair(value, name: str) -> tuple[int, int]:
    """An int or (height, width) of positive ints as (height, width)."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(
            f"inference: {name} must be a positive int or (height, width) of positive ints, got {value!r}."
        )
    return int(pair[0]), int(pair[1])


def _window_origins(
    size: tuple[int, int], crop_size: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int]]:
    """Top-left corners of mmseg's sliding windows: ceil((size - crop) / stride) + 1 per axis, the last one moved back
    to end at the border; a crop larger than the image gives one window, the whole image."""
    origins = []
    for axis in range(2):
        grids = max(size[axis] - crop_size[axis] + stride[axis] - 1, 0) // stride[axis] + 1
        origins.append(
            [max(min(i * stride[axis] + crop_size[axis], size[axis]) - crop_size[axis], 0) for i in range(grids)]
        )
    return [(top, left) for top in origins[0] for left in origins[1]]


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _swin_geometry(swin_config) -> dict:
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


def _damaged_weights_file(source: str | os.PathLike | None, kwargs: dict) -> Path | None:
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


__all__ = ["SwinFPNForSegmentation", "SwinFPNPreTrainedModel", "SwinFPNBackbone"]
