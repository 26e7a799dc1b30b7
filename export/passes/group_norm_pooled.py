"""Pass `group_norm_pooled`: GroupNorm from global average pooling and a fixed 1x1 conv.

Serves XNNPACK (no GroupNorm: `native_group_norm` ran on the portable CPU kernels, inside
EDiT's ConvFusion, i.e. inside the attention) and NPUs without GroupNorm. The statistics are
taken per channel over H x W (mean over dims 2, 3 = XNNPACK's global average pooling, which
works in its native NHWC layout, so the conv output needs no transpose), then averaged over
each group's channels by a constant block-diagonal 1x1 conv, which also broadcasts them back
to every channel. Two passes (mean, then mean of squared deviations) as GroupNorm itself
does. Cost: two poolings, two tiny (B, C, 1, 1) convs and a few elementwise ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edit_mobile.export.passes.base import MobilePass, swap_children


def group_average_matrix(norm: nn.GroupNorm) -> torch.Tensor:
    """(C, C): entry (i, j) is 1 / (channels per group) where channels i and j share a group, so
    statistics @ it average each group's channels and broadcast the result back to them."""
    channels, groups = norm.num_channels, norm.num_groups
    per_group = channels // groups
    group_of = torch.arange(channels) // per_group  # (C,)
    return (group_of[:, None] == group_of[None, :]).float() / per_group


class PooledGroupNorm(nn.Module):
    """nn.GroupNorm on (B, C, H, W) (or (B, C, L)), written as pooling + group-averaging 1x1 conv."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.register_buffer("group_average", group_average_matrix(norm)[:, :, None, None], persistent=False)
        self.eps = norm.eps
        self.weight = norm.weight  # (C,) or None
        self.bias = norm.bias

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() == 3:  # (B, C, L): the VAE attention's norm over its tokens, as (B, C, L, 1)
            return self.forward(image.unsqueeze(-1)).squeeze(-1)
        if image.dim() != 4:
            raise ValueError(f"PooledGroupNorm expects (B, C, H, W) or (B, C, L), got shape {tuple(image.shape)}")
        average = self.group_average.to(image.dtype)
        mean = F.conv2d(image.mean(dim=(2, 3), keepdim=True), average)  # (B, C, 1, 1) group means
        centred = image - mean  # (B, C, H, W)
        variance = F.conv2d((centred * centred).mean(dim=(2, 3), keepdim=True), average)  # (B, C, 1, 1)
        out = centred * torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class GroupNormPooled(MobilePass):
    name = "group_norm_pooled"
    serves = (
        "XNNPACK / NPUs without GroupNorm: pooled statistics + group-averaging 1x1 conv, in the "
        "delegate's NHWC layout; costs two poolings and two (B, C, 1, 1) convs"
    )

    def apply(self, model: nn.Module) -> int:
        return swap_children(model, lambda child: PooledGroupNorm(child) if type(child) is nn.GroupNorm else None)
