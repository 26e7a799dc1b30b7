"""Pass `row_norm_matmul`: LayerNorm and RMSNorm over the last axis with matmul reductions.

Serves XNNPACK, whose only reduction is a 4-D mean over H, W (global average pooling):
`native_layer_norm` and RMSNorm's `mean(-1)` ran on the portable CPU kernels, one thread,
and for SD3 the per-head RMSNorm of q and k sits inside the attention. The mean over the
last axis becomes x @ (1/C, ..., 1/C)^T, a (., C) x (C, 1) matmul the delegate runs threaded.
Cost: two GEMVs and a few elementwise ops per norm instead of one fused kernel; in the
channels-first layout the `channels_first` pass uses its own channel-axis norm instead.
T5's own RMSNorm (transformers' T5LayerNorm, in pipelines' text encoders) is taken too: each
one cut T5's XNNPACK program into another partition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from torch import nn

from edit_mobile.export.passes.base import MobilePass, swap_children


class MatmulRowNorm(nn.Module):
    """LayerNorm (centre=True) or RMSNorm (centre=False) over the last axis."""

    def __init__(self, channels: int, eps: float, weight, bias, centre: bool):
        super().__init__()
        self.register_buffer("mean_row", torch.full((1, channels), 1.0 / channels), persistent=False)
        self.eps, self.weight, self.bias, self.centre = eps, weight, bias, centre

    @classmethod
    def of(cls, norm: nn.Module):
        if type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1:
            return cls(norm.normalized_shape[0], norm.eps, norm.weight, norm.bias, centre=True)
        if type(norm) is RMSNorm and len(norm.dim) == 1:
            return cls(norm.dim[0], norm.eps, norm.weight, norm.bias, centre=False)
        if type(norm).__name__ == "T5LayerNorm":  # transformers' RMSNorm (T5 text encoders)
            return cls(norm.weight.shape[0], norm.variance_epsilon, norm.weight, None, centre=False)
        return None

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        mean_row = self.mean_row.to(rows.dtype)
        if self.centre:
            rows = rows - F.linear(rows, mean_row)  # (..., C) minus (..., 1) row means
        variance = F.linear(rows * rows, mean_row)  # (..., 1)
        out = rows * torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class RowNormMatmul(MobilePass):
    name = "row_norm_matmul"
    serves = (
        "XNNPACK: LayerNorm / RMSNorm means as (C, 1) matmuls so the norms (and SD3's q/k norms "
        "inside attention) stay in the delegate; costs two GEMVs per norm"
    )

    def apply(self, model: nn.Module) -> int:
        return swap_children(model, MatmulRowNorm.of)
