"""SwinFPN: the Swin Transformer (Liu et al. 2021, arXiv 2103.14030) with a Semantic FPN head (Kirillov et al. 2019)
or UperNet (Xiao et al. 2018).

The backbone keeps feature maps channels-last, (batch, height, width, channels), from the patch embedding to the stage
outputs, as the paper's reference code does, and fuses the query/key/value projections into one linear layer. The
shifted-window attention mask and the window partition are built once per stage and resolution, shared by its blocks.

Beside this file: `convert_swin_fpn.py` (transformers' Swin and UperNet checkpoints in), `cpu_kernels_swin_fpn.py`
(the fused oneDNN linear behind `linear` in CPU inference); mmseg's whole/slide/TTA inference is in the package's
`evaluation/segmentation_inference.py`.
"""

from __future__ import annotations

import importlib
import math
import os

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
from .convert_swin_fpn import convert_swin_checkpoint, convert_upernet_checkpoint, damaged_weights_error
from .cpu_kernels_swin_fpn import ONEDNN_LINEAR, head_memory_format
from .loss_swin_fpn import segmentation_loss
from .pooling_swin_fpn import AdaptiveAvgPool2d

# Value the shifted-window mask adds between tokens of different sub-windows (as in the reference implementation).
SHIFTED_WINDOW_MASK_VALUE = -100.0
# Largest per-block attention bias (shifted-window mask repeated for every image of a batch) kept between inference
# calls; Swin-T's largest, stage 1 at 512x512, is 10.4 MB per image.
BIAS_CACHE_BYTES = 32 * 2**20


def linear(
    hidden_states: torch.Tensor,
    layer: nn.Linear,
    activation: nn.Module | None = None,
    residual: torch.Tensor | None = None,
    dropouts: tuple[nn.Module, ...] = (),
) -> torch.Tensor:
    """`residual + dropouts(activation(layer(hidden_states)))`: a block's linear layer with its activation, the
    dropouts of its branch and the residual add of Eq. 3.

    Where the dropouts are off (inference), `ONEDNN_LINEAR` computes the same on CPU as one oneDNN kernel, the bias,
    GELU and sum fused into the matmul (`cpu_kernels_swin_fpn.py`); it returns None where it does not apply.
    """
    if not any(dropout.training for dropout in dropouts):
        fused = ONEDNN_LINEAR(hidden_states, layer, activation, residual)
        if fused is not None:
            return fused
    output = layer(hidden_states)
    if activation is not None:
        output = activation(output)
    for dropout in dropouts:
        output = dropout(output)
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
        """B + mask of Eq. 4 for `batch` images: (1, heads, M^2, M^2) without `shift_mask` (broadcast over the
        windows), (batch * nW, heads, M^2, M^2) with it. With autograd it is gathered from the table on every call;
        without, it is cached per `layout_key` (the window geometry) until the table changes (its storage or version
        moves), a shifted block's copy per image only up to `BIAS_CACHE_BYTES` (above, repeated per call).
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
        self,
        windows: torch.Tensor,
        shift_mask: torch.Tensor | None,
        output_attentions: bool = False,
        layout_key: tuple | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The heads' attention outputs for `windows` (B, nW, M^2, C), concatenated, before the output projection:
        (B, nW, M^2, C). `shift_mask` is the SW-MSA mask (nW, M^2, M^2) or None; `layout_key` names the window
        geometry for the bias cache (see `attention_bias`). The output projection is `project`: it is per token,
        so the block runs it after the windows are undone, skipping the padding slots."""
        batch, num_windows, tokens, channels = windows.shape
        qkv = linear(windows, self.qkv).view(batch * num_windows, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.attention_bias(shift_mask, query.dtype, batch, layout_key)
        attention = eager_attention_forward
        if not output_attentions:
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        dropout = self.attention_dropout if self.training else 0.0
        context, weights = attention(self, query, key, value, bias, scaling=self.scaling, dropout=dropout)
        return context.reshape(batch, num_windows, tokens, channels), weights if output_attentions else None

    def project(self, context: torch.Tensor, residual: torch.Tensor, drop_path: nn.Module) -> torch.Tensor:
        """`residual + DropPath(Dropout(context W_O + b_O))`: the output projection and the residual add of Eq. 3."""
        return linear(context, self.proj, residual=residual, dropouts=(self.proj_dropout, drop_path))


class SwinFPNMLP(nn.Module):
    """The block's 2-layer MLP with GELU non-linearity in between (Sec. 3.1), `mlp_ratio` times wider inside."""

    def __init__(self, config: SwinFPNConfig, channels: int) -> None:
        super().__init__()
        hidden = int(channels * config.mlp_ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, channels)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor, drop_path: nn.Module) -> torch.Tensor:
        """`residual + DropPath(MLP(hidden_states))`, MLP(x) = fc2(GELU(fc1(x))) with dropout after each: the
        second half of Eq. 3."""
        hidden_states = linear(hidden_states, self.fc1, self.activation, dropouts=(self.dropout,))
        return linear(hidden_states, self.fc2, residual=residual, dropouts=(self.dropout, drop_path))


class WindowLayout:
    """How a stage's (H, W) map is cut into M x M windows (Sec. 3.2): `window_partition` and `window_reverse`, for
    W-MSA and, after the cyclic shift by -floor(M/2) (Fig. 4), for SW-MSA with its `shift_mask`.

    Built once per stage and forward from shapes only and shared by the stage's blocks. Padding to whole windows, the
    cyclic shift (`torch.roll` in the paper's code) and the partition are one gather along the token axis, and their
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
        """The cyclic shift by -`shift` and the partition as indices: (source token of each window slot, the slots
        that hold padding, the window slot of each token)."""
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
        """The SW-MSA mask of the cyclically shifted map, (nW, M^2, M^2): 0 within a sub-window, -100 across (Sec.
        3.2, Fig. 4: after the shift a window may join sub-windows that are not adjacent in the feature map)."""
        window, shift = self.window_size, self.shift
        rows, cols = self._window_slot_coordinates(device)
        row_region = (rows >= self.padded_height - window).long() + (rows >= self.padded_height - shift).long()
        col_region = (cols >= self.padded_width - window).long() + (cols >= self.padded_width - shift).long()
        regions = (row_region * 3 + col_region).view(self.num_windows, window * window)
        mask = regions[:, None, :] != regions[:, :, None]
        return torch.zeros(mask.shape, device=device).masked_fill_(mask, SHIFTED_WINDOW_MASK_VALUE)

    def window_partition(self, hidden_states: torch.Tensor, shifted: bool) -> torch.Tensor:
        """(B, H, W, C) -> (B, nW, M^2, C): zero-pad to whole windows, shift cyclically by -floor(M/2) if `shifted`,
        cut into M x M windows."""
        batch, _, _, channels = hidden_states.shape
        slot_sources, padding_slots, _ = self._gathers[shifted]
        windows = hidden_states.reshape(batch, -1, channels).index_select(1, slot_sources)
        if self.num_padding:
            windows.index_fill_(1, padding_slots, 0.0)
        return windows.view(batch, self.num_windows, -1, channels)

    def window_reverse(self, windows: torch.Tensor, shifted: bool) -> torch.Tensor:
        """Inverse of `window_partition`: (B, nW, M^2, C) -> (B, H, W, C)."""
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
        windows = layout.window_partition(self.norm1(hidden_states), shifted)
        shift_mask = layout.shift_mask if shifted else None
        context, weights = self.attn(windows, shift_mask, output_attentions, (layout.height, layout.width))
        # the output projection is per token: after the window reverse it skips the padding slots
        hidden_states = self.attn.project(layout.window_reverse(context, shifted), hidden_states, self.drop_path)
        return self.mlp(self.norm2(hidden_states), hidden_states, self.drop_path), weights


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
        depths, total_blocks = config.depths, sum(config.depths)
        drop_paths = [config.drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        drop_paths = [drop_paths[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(len(depths))]
        self.stages = nn.ModuleList(
            SwinFPNStage(config, channels, depth, heads, drop_paths[i], merge=i < len(depths) - 1)
            for i, (depth, heads, channels) in enumerate(zip(depths, config.num_heads, config.stage_channels))
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
            nn.Sequential(AdaptiveAvgPool2d(scale), SwinFPNConvModule(stages[-1], channels, kernel_size=1))
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


def check_pixel_values(pixel_values: torch.Tensor, config: SwinFPNConfig, whole_forward: bool = True) -> None:
    """Raise `ValueError` naming the problem: not a tensor, wrong rank or channels, not floating point, empty and,
    with `whole_forward`, more than `config.max_input_pixels` pixels or NaN/inf values. Inference at any size checks
    without `whole_forward` and leaves the rest to each forward, so that the bound applies to one slide crop."""
    expected = f"(batch, {config.num_channels}, height, width)"
    hint = "the image processor gives a floating-point torch.Tensor"
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(f"pixel_values: expected a torch.Tensor of shape {expected}, got {type(pixel_values)}.")
    if pixel_values.ndim != 4 or pixel_values.shape[1] != config.num_channels:
        raise ValueError(f"pixel_values: expected shape {expected}, got {tuple(pixel_values.shape)} ({hint}).")
    if not pixel_values.is_floating_point():
        raise ValueError(f"pixel_values: expected a floating-point tensor ({hint}), got {pixel_values.dtype}.")
    if min(pixel_values.shape) < 1:
        raise ValueError(f"pixel_values: every dimension must be >= 1, got {tuple(pixel_values.shape)}.")
    if not whole_forward:
        return
    batch, _, height, width = pixel_values.shape
    max_pixels = config.max_input_pixels
    if max_pixels is not None and batch * height * width > max_pixels:
        raise ValueError(
            f"pixel_values: batch * height * width = {batch} * {height} * {width} = {batch * height * width:,} "
            f"exceeds config.max_input_pixels = {max_pixels:,}; split the batch, downscale the images or raise "
            "the bound if the memory allows."
        )
    if not torch.compiler.is_compiling() and not torch.isfinite(pixel_values).all():
        raise ValueError("pixel_values: expected finite values, got NaN or infinity.")


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
            damaged = damaged_weights_error(pretrained_model_name_or_path, kwargs, error)
            if damaged is None:
                raise
            raise damaged from error

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
        check_pixel_values(pixel_values, self.config)
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
        feature_maps = head_memory_format(feature_maps)
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
        """The decode head's loss, ignoring `semantic_loss_ignore_index`: cross-entropy, or the weighted sum of
        `config.loss_types` (mmseg's `decode_head.loss_decode`: cross-entropy, Dice, focal, Lovasz; `loss_swin_fpn.py`),
        plus `auxiliary_loss_weight` times the auxiliary head's cross-entropy (mmseg's `upernet_swin`: 0.4)."""
        ignore_index = self.config.semantic_loss_ignore_index
        if self.config.loss_types is None:
            loss = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)
        else:
            loss = segmentation_loss(logits, labels.long(), self.config.loss_types, ignore_index)
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
        `SwinBackbone`), e.g. `microsoft/swin-tiny-patch4-window7-224`: see `convert_swin_checkpoint`."""
        return convert_swin_checkpoint(cls, name_or_path, allow_pickle, **config_kwargs)

    @classmethod
    def from_pretrained_upernet(
        cls, name_or_path: str, allow_pickle: bool = False, **config_kwargs
    ) -> SwinFPNForSegmentation:
        """Convert a transformers `UperNetForSemanticSegmentation` with a Swin backbone, e.g. the ADE20K-trained
        `openmmlab/upernet-swin-tiny`, into a `decode_head_type="upernet"` SwinFPN: see `convert_upernet_checkpoint`."""
        return convert_upernet_checkpoint(cls, name_or_path, allow_pickle, **config_kwargs)

    def inference(
        self,
        pixel_values: torch.Tensor,
        mode: str = "whole",
        crop_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        scales: tuple[float, ...] | list[float] = (1.0,),
        flip: bool = False,
        output_size: tuple[int, int] | None = None,
        window_batch_size: int = 1,
    ) -> torch.Tensor:
        """Logits (batch, num_labels, *output_size) for normalised `pixel_values` of any size, the way
        mmsegmentation tests segmenters: `whole` or `slide` mode, multi-scale and flip test-time augmentation.

        Implemented in the installed package's `evaluation/segmentation_inference.py` (see its `inference` for the
        arguments), which remote code does not carry.
        """
        try:
            # a module name, not a `from ..` line, which transformers' remote-code copier would take for a sibling file
            segmentation_inference = importlib.import_module("..evaluation.segmentation_inference", __package__)
        except ImportError as error:
            raise ImportError(
                "SwinFPNForSegmentation.inference needs the hf-swin-ddpm package (`pip install hf-swin-ddpm`), and "
                f"the model loaded with its SwinFPNForSegmentation rather than as remote code: {error}"
            ) from error
        return segmentation_inference.inference(
            self, pixel_values, mode, output_size, crop_size, stride, scales, flip, window_batch_size
        )


__all__ = ["SwinFPNForSegmentation", "SwinFPNPreTrainedModel", "SwinFPNBackbone"]
