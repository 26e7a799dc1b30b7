"""Passes `conv_fusion_gemm` and `compressor_tokens`: EDiT's convolutions in the token layout.

Serves CPU delegates (XNNPACK). The EDiT block is all token-major GEMMs except its
convolutions, which XNNPACK runs in NHWC on its IGEMM path (measured at 1024 px, PixArt XL
width: 28% of a step for 15% of the FLOPs, 50 GFLOP/s against 127 for its fully connected
GEMMs) behind transposes between the token and image layouts.

- `conv_fusion_gemm`: ConvFusion's 3x3 as one GEMM of every token against all nine taps at once
  (C -> 9 C/r columns), then the shifted accumulation of the nine tap planes (eight adds of
  (h, w, C/r) slices of the zero-padded result); its GroupNorm from token statistics taken by a
  matmul with a ones row (XNNPACK has no 3-D mean); its 1x1 as a Linear over tokens.
  Cost: the (h+2, w+2, 9 C/r) tap planes, 2.25x the input at r = 4.
- `compressor_tokens`: the Spatial Compressors' depthwise 3x3 stride-2 convs as nine
  per-channel multiply-adds over strided views of the zero-padded (h, w, C) tokens, the
  stride taken by a (rows / 2, 2, cols / 2, 2 C) view, so only contiguous slices remain.
  Cost: nine (h/2, w/2, C) multiply-adds, no GEMM.

Both keep the processors' call (`module.tokens(tokens, grid)` / `compressor(tokens, grid)`),
the token layout through the block, and float32 outputs (tested against the unrewritten
model). Image-layout calls (channels_first) still work, through a transpose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edit_mobile.export.passes.base import MobilePass, swap_processor_modules
from edit_mobile.export.passes.group_norm_pooled import group_average_matrix
from edit_mobile.models.edit_attention import (
    ConvFusion,
    SpatialCompressor,
    image_to_tokens,
    tokens_to_image,
)


def _token_mean(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, 1, C), the mean over tokens as a matmul with a 1/N row."""
    length = tokens.shape[1]
    # The 1/N row from the input itself: a constant made in forward (torch.full) is an op
    # XNNPACK does not take, which would split the delegate around every norm.
    row = (tokens[:, :, :1] * 0.0 + 1.0 / length).transpose(1, 2)  # (B, 1, N)
    return torch.bmm(row, tokens)


def padded_in_pairs(tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
    """(B, N, C) tokens as a (B, 2 rows + 2, 2 cols + 2, C) grid with a zero rim, rows and cols
    = ceil(side / 2): what a stride-2 or 2 x 2-tiled 3x3 reads (an odd side's last pair reads
    one more zero row or column)."""
    height, width = grid
    rows, cols = -(-height // 2), -(-width // 2)
    padded = F.pad(tokens.view(tokens.shape[0], height, width, tokens.shape[2]),
                   (0, 0, 1, 1 + 2 * cols - width, 1, 1 + 2 * rows - height))
    return padded, rows, cols


class TokenGroupNorm(nn.Module):
    """nn.GroupNorm over the channels of (B, N, C) tokens, statistics by matmuls."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.register_buffer("group_average", group_average_matrix(norm), persistent=False)  # (C, C)
        self.eps = norm.eps
        self.weight = norm.weight
        self.bias = norm.bias

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        average = self.group_average.to(tokens.dtype)
        centred = tokens - _token_mean(tokens) @ average  # group means, broadcast to channels
        variance = _token_mean(centred * centred) @ average
        out = centred * torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


class TokenConvFusion(nn.Module):
    """ConvFusion on tokens, its 3x3 left to subclasses (`local`): the GroupNorm from token
    statistics, the activation, and the 1x1 as a Linear over tokens."""

    def __init__(self, fusion: ConvFusion):
        super().__init__()
        local = fusion.local
        self.reduced = local.out_channels
        self.local_bias = nn.Parameter(local.bias.detach().clone()) if local.bias is not None else None
        self.order = fusion.order
        self.norm = TokenGroupNorm(fusion.norm)
        self.act = fusion.act
        expand = fusion.expand
        # Plain parameters with F.linear, not nn.Linear children: `channels_first` turns every
        # Linear under an attention into a 1x1 conv, and this form must stay token-major.
        self.expand_weight = nn.Parameter(expand.weight.detach()[:, :, 0, 0].clone())  # (C, C/r)
        self.expand_bias = nn.Parameter(expand.bias.detach().clone()) if expand.bias is not None else None

    def local(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The 3x3 conv, (B, N, C) -> (B, N, C/r) with its bias."""
        raise NotImplementedError

    def tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        local = self.local(tokens, grid)
        local = self.act(self.norm(local)) if self.order == "norm_act" else self.norm(self.act(local))
        return F.linear(local, self.expand_weight, self.expand_bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image layout (B, C, h, w), for callers that keep it (channels_first)."""
        grid = tuple(image.shape[2:])
        return tokens_to_image(self.tokens(image_to_tokens(image), grid), grid)


class GemmConvFusion(TokenConvFusion):
    """ConvFusion on tokens: 3x3 as one all-taps GEMM + shifted accumulation, 1x1 as a Linear."""

    def __init__(self, fusion: ConvFusion):
        super().__init__(fusion)
        local = fusion.local
        reduced, per_group, _, _ = local.weight.shape  # (C/r, C/g, 3, 3)
        self.groups = local.groups
        out_per_group = reduced // self.groups
        # taps[g, i, t * (C/r/g) + o] = weight[g * C/r/g + o, i, t]: group g's inputs against its
        # outputs at every tap t (row-major over the 3x3 kernel).
        weight = local.weight.detach().view(self.groups, out_per_group, per_group, 9)
        taps = weight.permute(0, 2, 3, 1).reshape(self.groups, per_group, 9 * out_per_group)
        if self.groups == 1:
            self.taps = nn.Parameter(taps[0].t().contiguous())  # (9 C/r, C), a Linear's weight
        else:
            self.grouped_taps = nn.Parameter(taps.contiguous())  # (g, C/g, 9 C/r/g)

    def tap_planes(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, 9 C/r): every token's contribution to each tap's output."""
        if self.groups == 1:
            return F.linear(tokens, self.taps)
        batch, length, channels = tokens.shape
        per_group = tokens.reshape(batch * length, self.groups, channels // self.groups).transpose(0, 1)
        planes = torch.bmm(per_group, self.grouped_taps)  # (g, BN, 9 C/r/g)
        planes = planes.view(self.groups, batch * length, 9, self.reduced // self.groups)
        return planes.permute(1, 2, 0, 3).reshape(batch, length, 9 * self.reduced)

    def local(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The 3x3 conv: out[i, j] = sum over taps (a, b) of planes[i + a - 1, j + b - 1, tap]."""
        height, width = grid
        batch = tokens.shape[0]
        planes = self.tap_planes(tokens).view(batch, height, width, 9 * self.reduced)
        padded = F.pad(planes, (0, 0, 1, 1, 1, 1))  # zero rim: the conv's padding
        out = None
        for tap in range(9):
            a, b = divmod(tap, 3)
            part = padded[:, a : a + height, b : b + width, tap * self.reduced : (tap + 1) * self.reduced]
            out = part if out is None else out + part
        out = out.reshape(batch, height * width, self.reduced)
        return out if self.local_bias is None else out + self.local_bias


class TokenSpatialCompressor(nn.Module):
    """SpatialCompressor (depthwise 3x3, stride 2, padding 1) on tokens, as nine multiply-adds."""

    def __init__(self, compressor: SpatialCompressor):
        super().__init__()
        self.stride = compressor.stride
        conv = compressor.conv
        self.tap_weights = nn.Parameter(conv.weight.detach()[:, 0].permute(1, 2, 0).reshape(9, -1).clone())  # (9, C)
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        batch, _, channels = tokens.shape
        padded, rows, cols = padded_in_pairs(tokens, grid)
        # Padded row 2i + a of output row i is (row block i + a // 2, phase a % 2); columns alike,
        # with the column phase folded into the channel axis.
        blocks = padded.view(batch, rows + 1, 2, cols + 1, 2 * channels)
        out = None
        for tap in range(9):
            a, b = divmod(tap, 3)
            start = (b % 2) * channels
            # slices only (a size-1 phase axis, not an index): XNNPACK takes no select_copy
            phase = a % 2
            part = blocks[:, a // 2 : a // 2 + rows, phase : phase + 1, b // 2 : b // 2 + cols, start : start + channels]
            part = part * self.tap_weights[tap : tap + 1]  # (1, C)
            out = part if out is None else out + part
        out = out.reshape(batch, rows * cols, channels)
        return out if self.bias is None else out + self.bias

    def conv(self, image: torch.Tensor) -> torch.Tensor:
        """Image layout (B, C, h, w) -> (B, C, ceil(h/2), ceil(w/2)), for channels-first callers."""
        height, width = image.shape[2:]
        return tokens_to_image(self(image_to_tokens(image), (height, width)), (-(-height // 2), -(-width // 2)))


def _is_plain_compressor(module) -> bool:
    conv = getattr(module, "conv", None)
    return (type(module) is SpatialCompressor and conv.kernel_size == (3, 3) and conv.stride == (2, 2)
            and conv.padding == (1, 1) and conv.groups == conv.in_channels)


class ConvFusionGemm(MobilePass):
    name = "conv_fusion_gemm"
    serves = (
        "CPU delegates: ConvFusion's 3x3 as one all-taps token GEMM + shifted adds, its 1x1 as a "
        "Linear, GroupNorm by matmul statistics, no layout transposes; costs 2.25x-input tap planes"
    )

    def apply(self, model: nn.Module) -> int:
        make = lambda m: GemmConvFusion(m) if type(m) is ConvFusion else None  # noqa: E731
        return swap_processor_modules(model, ("conv_fusion",), make)


class CompressorTokens(MobilePass):
    name = "compressor_tokens"
    serves = (
        "CPU delegates: the Spatial Compressors' depthwise stride-2 3x3 as nine per-channel "
        "multiply-adds over strided token views, no layout transposes; costs no GEMM"
    )

    def apply(self, model: nn.Module) -> int:
        make = lambda m: TokenSpatialCompressor(m) if _is_plain_compressor(m) else None  # noqa: E731
        return swap_processor_modules(model, ("key_compressor", "value_compressor"), make)
