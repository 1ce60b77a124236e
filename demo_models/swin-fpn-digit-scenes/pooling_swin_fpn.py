"""Adaptive average pooling written with ops that export to ONNX at any input size.

`nn.AdaptiveAvgPool2d(s)` has no ONNX operator for s > 1 (ONNX has only `GlobalAveragePool`), and exporters bake the
export-time input size into fixed kernels: optimum's UperNet export fails on it. Pooling is linear, so it is written
here as two matrix products, pooled = A_H x A_W^T with A (s, n) the averaging matrix of PyTorch's bins

    A[i, j] = 1 / (e_i - b_i) for b_i <= j < e_i, else 0;  b_i = floor(i n / s),  e_i = ceil((i + 1) n / s),

built from `arange(n)` so that n stays symbolic in the exported graph. The numbers are `F.adaptive_avg_pool2d`'s
up to float rounding (the same sums in another order). This file imports nothing from the package (remote code).
"""

import torch
from torch import nn


def adaptive_average_matrix(size: int, length, like: torch.Tensor) -> torch.Tensor:
    """A (size, length) averaging matrix of `adaptive_avg_pool1d`'s bins (see the module docstring)."""
    rows = torch.arange(size, device=like.device)[:, None]
    columns = torch.arange(length, device=like.device)[None, :]
    begin = (rows * length) // size
    end = ((rows + 1) * length + size - 1) // size
    inside = ((columns >= begin) & (columns < end)).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


def adaptive_avg_pool2d(hidden_states: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(hidden_states, output_size)` for (N, C, H, W) inputs, exportable with symbolic H, W."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    rows = adaptive_average_matrix(out_h, hidden_states.shape[-2], hidden_states)
    columns = adaptive_average_matrix(out_w, hidden_states.shape[-1], hidden_states)
    return torch.matmul(torch.matmul(rows, hidden_states), columns.transpose(0, 1))


class AdaptiveAvgPool2d(nn.Module):
    """Drop-in for `nn.AdaptiveAvgPool2d` (no parameters, same numbers) that exports to ONNX with dynamic sizes."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d(hidden_states, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
