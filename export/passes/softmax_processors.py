"""Softmax attention processors on folded heads, for diffusers `Attention` modules.

Drop-in replacements for diffusers' AttnProcessor2_0 (PixArt attn1 / attn2, SD3.5 MMDiT-X
attn2) and JointAttnProcessor2_0 (SD3 joint attention) that call `softmax_attention` or
`split_head_softmax_attention` instead of F.scaled_dot_product_attention. Each handles both
the token layout (B, N, C) and, once `channels_first` has rewritten the block, the
channels-first layout (B, C, 1, S).
"""

from __future__ import annotations

import torch
from torch import nn

from edit_mobile.export.passes.attention_kernels import (
    fold_heads,
    fold_heads_channels_first,
    fold_heads_transposed,
    softmax_attention,
    softmax_attention_channels_first,
    split_head_softmax_attention,
    unfold_heads,
    unfold_heads_channels_first,
)
from edit_mobile.models.edit_attention import image_to_tokens, tokens_to_image


def additive_key_bias(attention_mask: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """diffusers' additive mask, (B, 1, M) or (B, M) -> (B, M); None stays None."""
    return None if attention_mask is None else attention_mask.reshape(batch, -1)


def norm_per_head(module: nn.Module | None, folded: torch.Tensor) -> torch.Tensor:
    """Per-head q/k norm (SD3's RMSNorm over d) on (BH, N, d)."""
    return folded if module is None else module(folded)


def norm_parameters(module: nn.Module) -> tuple[float, torch.Tensor | None, torch.Tensor | None, bool]:
    """(eps, weight, bias, centre) of a LayerNorm, diffusers RMSNorm or MatmulRowNorm."""
    if isinstance(module, nn.LayerNorm):
        return module.eps, module.weight, module.bias, True
    centre = getattr(module, "centre", False)  # MatmulRowNorm; diffusers RMSNorm does not centre
    return module.eps, module.weight, getattr(module, "bias", None), centre


def norm_per_head_channels_first(module: nn.Module | None, folded: torch.Tensor) -> torch.Tensor:
    """Per-head q/k norm over d, the middle axis of (BH, d, S): reduced in place, no transpose."""
    if module is None:
        return folded
    eps, weight, bias, centre = norm_parameters(module)
    if centre:
        folded = folded - folded.mean(dim=1, keepdim=True)
    out = folded * torch.rsqrt((folded * folded).mean(dim=1, keepdim=True) + eps)  # (BH, d, S)
    if weight is not None:
        out = out * weight.view(1, -1, 1)
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    return out


class SoftmaxAttention(nn.Module):
    """The attention itself: fused heads (one bmm over B*heads) or split heads."""

    def __init__(self, split_heads: bool):
        super().__init__()
        self.split_heads = split_heads

    def tokens(self, attn, query, key, value, bias=None):
        """query: (B, N, C), key/value: (B, M, C) projections -> (B, N, C) before to_out."""
        batch = query.shape[0]
        q = norm_per_head(attn.norm_q, fold_heads(query, attn.heads))  # (BH, N, d)
        if attn.norm_k is None:
            key_t = fold_heads_transposed(key, attn.heads)  # (BH, d, M): one permute
        else:
            key_t = attn.norm_k(fold_heads(key, attn.heads)).transpose(1, 2)  # (BH, d, M)
        v = fold_heads(value, attn.heads)  # (BH, M, d)
        return unfold_heads(self.folded(attn, q, key_t, v, batch, bias), batch)

    def folded(self, attn, q, key_t, v, batch, bias=None):
        """q: (BH, N, d), key_t: (BH, d, M), v: (BH, M, d), norms applied -> (BH, N, d)."""
        q = q * attn.scale
        if self.split_heads:
            return split_head_softmax_attention(q, key_t, v, batch, bias)
        return softmax_attention(q, key_t, v, bias)

    def channels_first(self, attn, query, key, value, bias=None):
        """query: (B, C, 1, S), key/value: (B, C, 1, M) -> (B, C, 1, S)."""
        batch = query.shape[0]
        q = norm_per_head_channels_first(attn.norm_q, fold_heads_channels_first(query, attn.heads))
        k = norm_per_head_channels_first(attn.norm_k, fold_heads_channels_first(key, attn.heads))
        v = fold_heads_channels_first(value, attn.heads)  # (BH, d, M)
        out = softmax_attention_channels_first(q * attn.scale, k, v, batch, bias, self.split_heads)
        return unfold_heads_channels_first(out, batch)  # (B, C, 1, S)


class SoftmaxAttnProcessor(nn.Module):
    """AttnProcessor2_0 semantics (self- or cross-attention, optional additive mask)."""

    def __init__(self, split_heads: bool = False):
        super().__init__()
        self.attention = SoftmaxAttention(split_heads)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_cross:
            raise NotImplementedError("softmax attention pass: spatial/group/cross norms are not used by PixArt or SD3")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch = hidden_states.shape[0]
        bias = additive_key_bias(attention_mask, batch)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if hidden_states.dim() == 4:  # channels-first (B, C, 1, S)
            out = self.attention.channels_first(attn, query, key, value, bias)
        else:
            out = self.attention.tokens(attn, query, key, value, bias)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class SpatialSoftmaxAttnProcessor(nn.Module):
    """AttnProcessor2_0 semantics for a VAE's mid-block self-attention: (B, C, H, W) in and
    out, GroupNorm over the channels first, the residual added and rescaled after."""

    def __init__(self, split_heads: bool = False):
        super().__init__()
        self.attention = SoftmaxAttention(split_heads)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        if any(x is not None for x in (encoder_hidden_states, attention_mask, temb, attn.spatial_norm)):
            raise NotImplementedError("spatial softmax attention: a VAE's unmasked self-attention only")
        height, width = hidden_states.shape[2:]
        # GroupNorm on the image, not on (B, C, H*W): the same statistics, and the pooled
        # rewrite of the norm then needs no squeeze XNNPACK would leave to portable kernels.
        normed = image_to_tokens(attn.group_norm(hidden_states))  # (B, L, C)
        query, key, value = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
        out = attn.to_out[1](attn.to_out[0](self.attention.tokens(attn, query, key, value)))  # (B, L, C)
        out = tokens_to_image(out, (height, width))  # channels-last, as XNNPACK's convolutions around it run
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class JointSoftmaxAttnProcessor(nn.Module):
    """JointAttnProcessor2_0 semantics: one softmax over [image; prompt] tokens (SD3)."""

    def __init__(self, split_heads: bool = False):
        super().__init__()
        self.attention = SoftmaxAttention(split_heads)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        channels_first = hidden_states.dim() == 4
        fold = fold_heads_channels_first if channels_first else fold_heads
        norm = norm_per_head_channels_first if channels_first else norm_per_head
        token_axis = -1 if channels_first else 1
        batch = hidden_states.shape[0]
        q = norm(attn.norm_q, fold(attn.to_q(hidden_states), attn.heads))
        k = norm(attn.norm_k, fold(attn.to_k(hidden_states), attn.heads))
        v = fold(attn.to_v(hidden_states), attn.heads)
        if encoder_hidden_states is not None:
            prompt_q = norm(attn.norm_added_q, fold(attn.add_q_proj(encoder_hidden_states), attn.heads))
            prompt_k = norm(attn.norm_added_k, fold(attn.add_k_proj(encoder_hidden_states), attn.heads))
            prompt_v = fold(attn.add_v_proj(encoder_hidden_states), attn.heads)
            q = torch.cat([q, prompt_q], dim=token_axis)  # tokens: (BH, N+T, d); cf: (BH, d, N+T)
            k = torch.cat([k, prompt_k], dim=token_axis)
            v = torch.cat([v, prompt_v], dim=token_axis)
        if channels_first:
            out = softmax_attention_channels_first(q * attn.scale, k, v, batch, None, self.attention.split_heads)
        else:
            out = self.attention.folded(attn, q, k.transpose(1, 2), v, batch)  # (BH, N+T, d)
        image_tokens = hidden_states.shape[-1] if channels_first else hidden_states.shape[1]
        out_image, out_prompt = (
            (out[:, :, :image_tokens], out[:, :, image_tokens:])
            if channels_first
            else (out[:, :image_tokens], out[:, image_tokens:])
        )
        unfold = unfold_heads_channels_first if channels_first else unfold_heads
        out_image = attn.to_out[1](attn.to_out[0](unfold(out_image, batch)))
        if encoder_hidden_states is None:
            return out_image
        out_prompt = unfold(out_prompt, batch)
        if not attn.context_pre_only:
            out_prompt = attn.to_add_out(out_prompt)
        return out_image, out_prompt
