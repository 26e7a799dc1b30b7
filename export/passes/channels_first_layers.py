"""Building blocks of the channels-first (B, C, 1, S) layout, shared by the model families.

Each takes the weights of the diffusers module it replaces; see `channels_first` for why.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from torch import nn

from edit_mobile.errors import UserError
from edit_mobile.export.passes.row_norm_matmul import MatmulRowNorm


def conv1x1_from_linear(linear: nn.Linear) -> nn.Conv2d:
    """The 1x1 Conv2d computing `linear` over the channel axis of (B, C, 1, S)."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    conv.weight = nn.Parameter(linear.weight.detach()[:, :, None, None], requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        conv.bias = linear.bias
    return conv.to(linear.weight.device)


def per_channel(values: torch.Tensor) -> torch.Tensor:
    """(B, C) modulation -> (B, C, 1, 1), broadcasting over (B, C, 1, S)."""
    return values.reshape(*values.shape[:2], 1, 1)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of (B, C, 1, S), as Apple's LayerNormANE."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        layer_norm = isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1
        if not (layer_norm or (isinstance(norm, MatmulRowNorm) and norm.centre)):  # row_norm_matmul may run first
            raise ValueError(f"channels-first LayerNorm replaces a LayerNorm over one axis, got {norm}")
        self.eps, self.weight, self.bias = norm.eps, norm.weight, norm.bias

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        centred = image - image.mean(dim=1, keepdim=True)  # (B, C, 1, S)
        out = centred * torch.rsqrt((centred * centred).mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class ChannelsFirstPatchEmbed(nn.Module):
    """diffusers PatchEmbed (PixArt: sin-cos positions; SD3: cropped positions) -> (B, C, 1, S)."""

    def __init__(self, patch_embed: nn.Module):
        super().__init__()
        if patch_embed.layer_norm or not patch_embed.flatten:
            raise UserError("channels_first supports PixArt's and SD3's patch embeddings only; drop the pass")
        self.proj = patch_embed.proj
        self.patch = patch_embed.patch_size
        self.cropped = patch_embed.pos_embed_max_size is not None
        self.source = patch_embed if self.cropped else None  # SD3: crops its (1, M*M, C) table
        tokens = None if self.cropped else patch_embed.pos_embed  # (1, S0, C) or None
        channels_first = None if tokens is None else tokens.transpose(1, 2).unsqueeze(2).contiguous()
        self.register_buffer("pos_embed", channels_first, persistent=False)  # (1, C, 1, S0)
        self.grid = (patch_embed.height, patch_embed.width)
        self.base_size, self.interpolation_scale = patch_embed.base_size, patch_embed.interpolation_scale

    def positions(self, latent_hw: tuple[int, int], grid: tuple[int, int], like: torch.Tensor):
        """Positions for `grid` as (1, C, 1, S), as PatchEmbed computes them; constants in the
        traced program (they depend on the resolution only)."""
        if self.cropped:
            tokens = self.source.cropped_pos_embed(*latent_hw)  # (1, S, C)
        elif grid == self.grid:
            return self.pos_embed.to(like.dtype)
        else:
            tokens = get_2d_sincos_pos_embed(
                embed_dim=self.pos_embed.shape[1],
                grid_size=grid,
                base_size=self.base_size,
                interpolation_scale=self.interpolation_scale,
                device=like.device,
                output_type="pt",
            ).float()[None]  # (1, S, C)
        return tokens.transpose(1, 2).unsqueeze(2).to(like.dtype)  # (1, C, 1, S)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        image = self.proj(latent)  # (B, C, h, w)
        batch, channels, height, width = image.shape
        flat = image.view(batch, channels, 1, height * width)  # (B, C, 1, S): a view
        if self.pos_embed is None and not self.cropped:
            return flat
        return flat + self.positions(tuple(latent.shape[-2:]), (height, width), flat)


class ChannelsFirstUnpatchify(nn.Module):
    """proj_out (Linear C -> p*p*C_out) + unpatchify as one ConvTranspose2d.

    proj_out row (pi*p + qi)*C_out + c feeds output pixel (c, hi*p + pi, wi*p + qi); a
    stride-p, kernel-p transposed conv maps input pixel (hi, wi) to exactly that p x p block,
    with weight[k, c, pi, qi] = W[(pi*p + qi)*C_out + c, k]. The bias differs per (pi, qi),
    which ConvTranspose2d's per-channel bias cannot hold, so it is added as a (C_out, p, p)
    tile.
    """

    def __init__(self, proj_out: nn.Linear, patch: int, out_channels: int):
        super().__init__()
        width = proj_out.in_features
        weight = proj_out.weight.detach().view(patch, patch, out_channels, width)  # (p, p, C_out, C)
        self.unpatchify = nn.ConvTranspose2d(width, out_channels, patch, stride=patch, bias=False)
        self.unpatchify.weight = nn.Parameter(weight.permute(3, 2, 0, 1).contiguous())  # (C, C_out, p, p)
        bias = proj_out.bias.detach().view(patch, patch, out_channels).permute(2, 0, 1)  # (C_out, p, p)
        self.register_buffer("bias_tile", bias.contiguous()[None], persistent=False)  # (1, C_out, p, p)
        self.patch = patch

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.unpatchify(image)  # (B, C_out, H, W)
        tiles = (out.shape[-2] // self.patch, out.shape[-1] // self.patch)
        return out + self.bias_tile.repeat(1, 1, *tiles)  # bias tile: a constant after tracing
