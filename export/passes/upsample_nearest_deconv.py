"""Pass `upsample_nearest_deconv`: a VAE decoder's 2x nearest upsampling as a depthwise
transposed convolution.

Serves XNNPACK, which has bilinear resizing but no nearest one: each of a decoder's
upsamplers (three in the SD / PixArt / SD3 layout) ran `upsample_nearest2d` on the portable
kernels, single-threaded over the decoder's largest tensors, and ended an XNNPACK partition.
A depthwise ConvTranspose2d with a 2x2 kernel of ones and stride 2 writes each input pixel to
its four output pixels, one term each: the same values exactly, in the delegate.
Cost: none (one multiply by 1.0 per output element, fused in the deconvolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.upsampling import Upsample2D
from torch import nn

from edit_mobile.export.passes.base import MobilePass, swap_children


class DeconvUpsample2D(nn.Module):
    """diffusers' Upsample2D (nearest 2x, then its conv) with the upsampling as a deconvolution."""

    def __init__(self, upsample: Upsample2D):
        super().__init__()
        self.conv = upsample.conv
        self.register_buffer("ones", torch.ones(upsample.channels, 1, 2, 2), persistent=False)

    @classmethod
    def of(cls, module: nn.Module):
        plain = (type(module) is Upsample2D and not module.use_conv_transpose and module.norm is None
                 and module.interpolate and module.name == "conv")
        return cls(module) if plain else None

    def forward(self, hidden_states: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:
            raise NotImplementedError("deconvolution upsampling: 2x only, no output_size")
        channels = hidden_states.shape[1]
        upsampled = F.conv_transpose2d(hidden_states, self.ones.to(hidden_states.dtype), stride=2, groups=channels)
        return upsampled if self.conv is None else self.conv(upsampled)


class UpsampleNearestDeconv(MobilePass):
    name = "upsample_nearest_deconv"
    serves = (
        "XNNPACK (no nearest resize): a VAE decoder's 2x nearest upsampling as a depthwise 2x2 "
        "stride-2 deconvolution of ones, exact; no cost"
    )

    def apply(self, model: nn.Module) -> int:
        return swap_children(model, DeconvUpsample2D.of)
