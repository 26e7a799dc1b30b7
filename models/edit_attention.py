"""EDiT linear compressed attention for the image self-attention of a DiT block.

Plugs into an unchanged diffusers `Attention` as its processor, reusing the teacher's
to_q / to_k / to_v / to_out (and norm_q / norm_k where the teacher has them):

    Q = ReLU( W_q( X + ConvFusion(X) ) )          ConvFusion = Conv1x1(LeakyReLU(GroupNorm(Conv3x3(X))))
    K = ReLU( DWConv3x3_s2( W_k X ) )             (4x fewer tokens)
    V =       DWConv3x3_s2( W_v X )
    Y = W_o  Q (K^T V) / (Q sum_j K_j + eps)      per head
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edit_mobile.errors import UserError
from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.linear_attention import relu_linear_attention


def tokens_to_image(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) -> (B, C, h, w); tokens are row-major, as diffusers' PatchEmbed makes them.

    A channels-last view, not a copy: row-major tokens already are an NHWC image, the layout
    XNNPACK's convolutions run in. Transposing to (B, C, N) and reshaping put a reshape between
    that transpose and the one XNNPACK adds in front of each convolution, which kept either from
    going (measured: the EDiT program's transposes halve, 11.1 -> 5.6 ms a 2-layer step at
    PixArt-XL width, 512 px)."""
    batch, _, channels = tokens.shape
    return tokens.reshape(batch, *grid, channels).permute(0, 3, 1, 2)


def image_to_tokens(image: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C), through the channels-last layout (see tokens_to_image)."""
    batch, channels, height, width = image.shape
    return image.permute(0, 2, 3, 1).reshape(batch, height * width, channels)


def split_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    batch, length, channels = tokens.shape
    return tokens.view(batch, length, heads, channels // heads).transpose(1, 2)


def merge_heads(per_head: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    batch, heads, length, head_dim = per_head.shape
    return per_head.transpose(1, 2).reshape(batch, length, heads * head_dim)


class ConvFusion(nn.Module):
    """Local context for the queries: Conv1x1(act/norm(Conv3x3(X))), added to X before W_q.

    The 1x1 conv starts at zero, so a converted student begins with the teacher's queries
    (behind the ReLU kernel) and learns the local term during distillation.
    """

    def __init__(self, channels: int, config: EDiTConfig):
        super().__init__()
        reduced = channels // config.fusion_reduction
        if reduced < 1 or channels % config.fusion_reduction:
            raise UserError(
                f"fusion_reduction={config.fusion_reduction} does not divide width {channels}; "
                "choose a divisor of the model width"
            )
        if channels % config.fusion_groups or reduced % config.fusion_groups:
            raise UserError(
                f"fusion_groups={config.fusion_groups} must divide {channels} and {reduced}; "
                "choose a common divisor"
            )
        self.order = config.fusion_order
        self.local = nn.Conv2d(channels, reduced, 3, padding=1, groups=config.fusion_groups)
        self.norm = nn.GroupNorm(math.gcd(config.fusion_norm_groups, reduced), reduced)
        self.act = nn.LeakyReLU(config.fusion_negative_slope)
        self.expand = nn.Conv2d(reduced, channels, 1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        local = self.local(image)  # (B, C/r, h, w)
        if self.order == "norm_act":
            local = self.act(self.norm(local))
        else:
            local = self.norm(self.act(local))
        return self.expand(local)  # (B, C, h, w)

    def tokens(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The same on row-major tokens (B, N, C) -> (B, N, C): what the processors call, so an
        export pass can swap in a token-major form without touching them."""
        return image_to_tokens(self(tokens_to_image(tokens, grid)))


class SpatialCompressor(nn.Module):
    """Depthwise strided conv over the token grid: stride s gives s^2 fewer keys/values
    (ceil(h / s) x ceil(w / s) of them on a grid not divisible by s).

    Initialised as the mean of each s x s block (PixArt-Sigma's KV compression, whose
    depthwise kernel = stride = s starts at 1/s^2), so compressed keys/values begin as
    averages of the teacher's.
    """

    def __init__(self, channels: int, config: EDiTConfig):
        super().__init__()
        kernel, stride = config.compression_kernel, config.compression_stride
        self.stride = stride
        self.conv = nn.Conv2d(
            channels, channels, kernel, stride=stride, padding=kernel // 2, groups=channels
        )
        with torch.no_grad():
            self.conv.weight.zero_()
            # Output (i, j) reads inputs (s*i - pad + a, s*j - pad + b); pick a, b covering block (i, j).
            offset = kernel // 2
            self.conv.weight[:, :, offset : offset + stride, offset : offset + stride] = 1.0 / stride**2
            self.conv.bias.zero_()

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        image = tokens_to_image(tokens, grid)  # (B, C, h, w)
        return image_to_tokens(self.conv(image))  # (B, h*w / s^2, C)


def check_token_grid(grid: tuple[int, int] | None, length: int, stride: int) -> tuple[int, int]:
    if grid is None:
        raise RuntimeError("EDiT attention needs the token grid: call the EDiT model, not the block")
    height, width = grid
    if height * width != length:
        raise ValueError(f"token grid {height}x{width} does not hold {length} tokens")
    # Any grid: the padded strided conv gives ceil(h / s) x ceil(w / s) keys, its far edge read
    # against zeros (diffusers' aspect-ratio bins give odd token grids, 29 x 8 at 256 px).
    return grid


class EDiTAttnProcessor(nn.Module):
    """Processor for an image self-attention (PixArt's attn1, SD3.5's MMDiT-X attn2)."""

    def __init__(self, channels: int, config: EDiTConfig):
        super().__init__()
        self.eps = config.eps
        self.conv_fusion = ConvFusion(channels, config) if config.fusion == "conv" else None
        self.key_compressor = SpatialCompressor(channels, config)
        self.value_compressor = SpatialCompressor(channels, config)
        # Set by the EDiT model's forward: attention sees tokens, the convolutions need the grid.
        self.token_grid: tuple[int, int] | None = None

    def edit_features(self, attn, hidden_states: torch.Tensor, with_full_keys: bool = False):
        """Queries, keys and values of the image tokens, per head, each (B, heads, tokens, d).

        Returns query (pre-ReLU), ReLU(query), ReLU(compressed key), compressed key and value,
        and, with `with_full_keys` (MM-EDiT prompt rows), the uncompressed key and value.
        """
        grid = check_token_grid(self.token_grid, hidden_states.shape[1], self.key_compressor.stride)
        fused = hidden_states if self.conv_fusion is None else hidden_states + self.conv_fusion.tokens(hidden_states, grid)
        query = split_heads(attn.to_q(fused), attn.heads)  # (B, heads, N, d)
        key = attn.to_k(hidden_states)  # (B, N, C)
        value = attn.to_v(hidden_states)  # (B, N, C)
        key_compressed = split_heads(self.key_compressor(key, grid), attn.heads)  # (B, heads, N/4, d)
        value_compressed = split_heads(self.value_compressor(value, grid), attn.heads)
        norm_q = attn.norm_q if attn.norm_q is not None else nn.Identity()
        norm_k = attn.norm_k if attn.norm_k is not None else nn.Identity()
        query, key_compressed = norm_q(query), norm_k(key_compressed)
        full_key = full_value = None
        if with_full_keys:
            full_key = norm_k(split_heads(key, attn.heads))  # (B, heads, N, d)
            full_value = split_heads(value, attn.heads)
        features = (query, F.relu(query), F.relu(key_compressed), key_compressed, value_compressed)
        return (*features, full_key, full_value)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError("EDiTAttnProcessor replaces a self-attention; got encoder_hidden_states")
        _, query_features, key_features, _, value_compressed, _, _ = self.edit_features(
            attn, hidden_states
        )
        out = relu_linear_attention(query_features, key_features, value_compressed, self.eps)
        out = merge_heads(out).to(hidden_states.dtype)  # (B, N, C)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor
