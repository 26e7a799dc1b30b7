"""Pass `row_norm_reduce`: LayerNorm and RMSNorm over the last axis as ReduceMean, Pow, Sqrt, Div.

Serves ORT Mobile's NNAPI execution provider, which has no LayerNormalization and no
Reciprocal (torch's rsqrt): each norm split the NNAPI graph into another partition. The ops
written are the pattern onnxruntime's LayerNormFusion / SimplifiedLayerNormFusion match, so the
CPU execution provider fuses them back into one kernel at session load. Cost on NNAPI: a few
elementwise ops per norm instead of one.
"""

from __future__ import annotations

import torch
from diffusers.models.normalization import RMSNorm
from torch import nn

from edit_mobile.export.passes.base import MobilePass, swap_children


class ReduceRowNorm(nn.Module):
    """LayerNorm (centre=True) or RMSNorm (centre=False) over the last axis."""

    def __init__(self, eps: float, weight, bias, centre: bool):
        super().__init__()
        self.eps, self.weight, self.bias, self.centre = eps, weight, bias, centre

    @classmethod
    def of(cls, norm: nn.Module):
        if type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1:
            return cls(norm.eps, norm.weight, norm.bias, centre=True)
        if type(norm) is RMSNorm and len(norm.dim) == 1:
            return cls(norm.eps, norm.weight, norm.bias, centre=False)
        return None

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if self.centre:
            rows = rows - rows.mean(-1, keepdim=True)
        out = rows / torch.sqrt(rows.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class RowNormReduce(MobilePass):
    name = "row_norm_reduce"
    serves = (
        "NNAPI (ORT Mobile): LayerNorm / RMSNorm without LayerNormalization or Reciprocal, in the "
        "pattern ORT's CPU EP fuses back; costs a few elementwise ops per norm on NNAPI"
    )

    def apply(self, model: nn.Module) -> int:
        return swap_children(model, ReduceRowNorm.of)
