"""Pass `linear_attention_bmm`: EDiT / MM-EDiT attention as rank-3 batched matmuls.

Serves every backend: heads folded into the batch (no 4-D per-head matmuls, no einsum, no
5-D tensors), numerator and normaliser from one matmul against V with a ones column appended,
and K pre-scaled by 1/M (eps too) so fp16 sums over 16384 tokens cannot overflow.
Cost: one (M, 1) ones column (see `append_ones`, fp16-safe on XNNPACK) and one (BH, M, d)
multiply per layer, both small (M = N / 4).

The processors keep the student's own modules (ConvFusion, Spatial Compressors) and the
teacher's projections; only the arithmetic around them changes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from edit_mobile.export.passes.attention_kernels import (
    append_ones,
    fold_heads,
    fold_heads_channels_first,
    linear_attention,
    linear_attention_channels_first,
    normaliser_guard,
    softmax_attention,
    softmax_attention_channels_first,
    split_head_softmax_attention,
    unfold_heads,
    unfold_heads_channels_first,
)
from edit_mobile.export.passes.base import MobilePass, swap_processors
from edit_mobile.export.passes.softmax_processors import (
    SoftmaxAttention,
    norm_per_head,
    norm_per_head_channels_first,
)
from edit_mobile.models import EDiTAttnProcessor, MMEDiTAttnProcessor
from edit_mobile.models.edit_attention import check_token_grid


class FoldedFeatures(NamedTuple):
    """What the EDiT / MM-EDiT export processors compute from the image tokens."""

    query_features: torch.Tensor  # ReLU(Q), folded
    key_features: torch.Tensor  # ReLU(K_c), folded
    value_c: torch.Tensor  # compressed V, folded
    query: torch.Tensor  # pre-ReLU Q, folded
    key_c: torch.Tensor  # pre-ReLU compressed K, folded
    key: torch.Tensor  # uncompressed K projection, in the input's layout
    value: torch.Tensor  # uncompressed V projection, in the input's layout


class EDiTBMMAttnProcessor(EDiTAttnProcessor):
    """EDiTAttnProcessor computed with `linear_attention` on folded heads."""

    @classmethod
    def like(cls, processor: EDiTAttnProcessor) -> EDiTBMMAttnProcessor:
        """A processor of this class sharing `processor`'s modules (weights are not copied)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.eps = processor.eps
        new.conv_fusion = processor.conv_fusion
        new.key_compressor = processor.key_compressor
        new.value_compressor = processor.value_compressor
        new.token_grid = processor.token_grid
        return new

    def folded_features(self, attn, hidden_states: torch.Tensor) -> FoldedFeatures:
        """ReLU(Q), ReLU(K_c), V_c folded, the pre-ReLU Q and K_c, V_c, and the uncompressed K, V
        projections in the input's layout (MM-EDiT's prompt rows read them: projecting again
        would put two more N x C x C GEMMs in the program, which export does not merge).

        Token layout (B, N, C): folded ones (BH, tokens, d). Channels-first (B, C, 1, S): folded
        ones (BH, d, tokens).
        """
        channels_first = hidden_states.dim() == 4
        length = hidden_states.shape[-1] if channels_first else hidden_states.shape[1]
        grid = check_token_grid(self.token_grid, length, self.key_compressor.stride)
        batch, heads = hidden_states.shape[0], attn.heads
        if channels_first:
            image = hidden_states.view(batch, -1, *grid)  # (B, C, h, w): a view
            fused = hidden_states if self.conv_fusion is None else (
                hidden_states + self.conv_fusion(image).view(hidden_states.shape))  # (B, C, 1, S)
            key, value = attn.to_k(hidden_states), attn.to_v(hidden_states)  # (B, C, 1, S)
            query = norm_per_head_channels_first(attn.norm_q, fold_heads_channels_first(attn.to_q(fused), heads))
            key_c = self.key_compressor.conv(key.view(image.shape))  # (B, C, h/s, w/s)
            value_c = self.value_compressor.conv(value.view(image.shape))
            key_c = norm_per_head_channels_first(attn.norm_k, fold_heads_channels_first(key_c, heads))  # (BH, d, M)
            value_c = fold_heads_channels_first(value_c, heads)  # (BH, d, M)
        else:
            fused = hidden_states if self.conv_fusion is None else (
                hidden_states + self.conv_fusion.tokens(hidden_states, grid))
            query = norm_per_head(attn.norm_q, fold_heads(attn.to_q(fused), heads))  # (BH, N, d)
            key, value = attn.to_k(hidden_states), attn.to_v(hidden_states)  # (B, N, C)
            key_c = self.key_compressor(key, grid)  # (B, M, C)
            value_c = self.value_compressor(value, grid)
            key_c = norm_per_head(attn.norm_k, fold_heads(key_c, heads))  # (BH, M, d)
            value_c = fold_heads(value_c, heads)  # (BH, M, d)
        return FoldedFeatures(F.relu(query), F.relu(key_c), value_c, query, key_c, key, value)

    def linear(self, query_features, key_features, value, channels_first: bool) -> torch.Tensor:
        if channels_first:
            return linear_attention_channels_first(query_features, key_features, value, self.eps)
        return linear_attention(query_features, key_features, value, self.eps)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError("EDiT attention replaces a self-attention; got encoder_hidden_states")
        channels_first = hidden_states.dim() == 4
        query_features, key_features, value_c, *_ = self.folded_features(attn, hidden_states)
        out = self.linear(query_features, key_features, value_c, channels_first)
        batch = hidden_states.shape[0]
        out = unfold_heads_channels_first(out, batch) if channels_first else unfold_heads(out, batch)
        out = attn.to_out[1](attn.to_out[0](out.to(hidden_states.dtype)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class MMEDiTBMMAttnProcessor(EDiTBMMAttnProcessor):
    """MMEDiTAttnProcessor on folded heads, token or channels-first layout; its softmax parts
    go through `SoftmaxAttention`, which `split_head_attention` switches to one head at a time."""

    @classmethod
    def like(cls, processor: MMEDiTAttnProcessor) -> MMEDiTBMMAttnProcessor:
        new = super().like(processor)
        new.normalizer = processor.normalizer
        new.prompt_image_keys = processor.prompt_image_keys
        new.softmax = SoftmaxAttention(split_heads=False)
        return new

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("MM-EDiT attention replaces a joint attention; pass encoder_hidden_states")
        first = hidden_states.dim() == 4  # channels-first (B, C, 1, S); else tokens (B, N, C)
        fold = fold_heads_channels_first if first else fold_heads
        norm = norm_per_head_channels_first if first else norm_per_head
        unfold = unfold_heads_channels_first if first else unfold_heads
        token_axis = 2 if first else 1  # of folded tensors: (BH, d, tokens) or (BH, tokens, d)
        batch, heads = hidden_states.shape[0], attn.heads

        query_features, key_features, value_c, query, key_c, key, value = self.folded_features(attn, hidden_states)
        prompt_q = norm(attn.norm_added_q, fold(attn.add_q_proj(encoder_hidden_states), heads))
        prompt_k = norm(attn.norm_added_k, fold(attn.add_k_proj(encoder_hidden_states), heads))
        prompt_v = fold(attn.add_v_proj(encoder_hidden_states), heads)  # (BH, T, d) or (BH, d, T)
        head_dim = query.shape[1] if first else query.shape[-1]
        scale = head_dim**-0.5  # SDPA's default scale, as the MM-EDiT processor uses

        if self.normalizer == "exact":
            exact = self.exact_image_rows_channels_first if first else self.exact_image_rows
            out_image = exact(query * scale, query_features, key_features, value_c, prompt_k, prompt_v)
        else:
            image_tokens, prompt_tokens = query.shape[token_axis], prompt_k.shape[token_axis]
            eta = image_tokens / (image_tokens + prompt_tokens)
            linear = self.linear(query_features, key_features, value_c, first)
            softmax = self.softmax_rows(query * scale, prompt_k, prompt_v, batch, first)
            out_image = eta * linear + (1 - eta) * softmax
        out_image = attn.to_out[1](attn.to_out[0](unfold(out_image, batch).to(hidden_states.dtype)))
        if attn.context_pre_only:
            return out_image, None

        if self.prompt_image_keys == "full":
            image_k = norm(attn.norm_k, fold(key, heads))  # all N image tokens
            image_v = fold(value, heads)
        else:
            image_k, image_v = key_c, value_c  # the N / s^2 compressed tokens
        keys = torch.cat([image_k, prompt_k], dim=token_axis)
        values = torch.cat([image_v, prompt_v], dim=token_axis)
        out_prompt = self.softmax_rows(prompt_q * scale, keys, values, batch, first)
        out_prompt = attn.to_add_out(unfold(out_prompt, batch).to(encoder_hidden_states.dtype))
        return out_image, out_prompt

    def softmax_rows(self, query, key, value, batch, channels_first: bool):
        """Scaled query against keys/values, folded: tokens (BH, N, d) or channels-first (BH, d, N)."""
        if channels_first:
            return softmax_attention_channels_first(query, key, value, batch, None, self.softmax.split_heads)
        key_t = key.transpose(1, 2)  # (BH, d, M)
        if self.softmax.split_heads:
            return split_head_softmax_attention(query, key_t, value, batch)
        return softmax_attention(query, key_t, value)

    def exact_image_rows(self, query, query_features, key_features, value_c, prompt_k, prompt_v):
        """The "exact" shared normaliser, with every sum scaled by 1/M like `linear_attention`.

        out = (e^-m q (K^T V) + sum_p e^{s_p - m} v_p) / (e^-m q K^T 1 + sum_p e^{s_p - m} + eps),
        m = max(0, max_p s_p); numerator and normaliser of both parts each from one matmul.
        Token layout: query (BH, N, d), keys/values (BH, M, d), prompt (BH, T, d).
        """
        keys = key_features.shape[1]
        scores = torch.bmm(query, prompt_k.transpose(1, 2))  # (BH, N, T)
        shift = scores.amax(dim=-1, keepdim=True).clamp_min(0)  # (BH, N, 1)
        weights = torch.exp(scores - shift) * (1.0 / keys)  # (BH, N, T)
        damp = torch.exp(-shift)  # (BH, N, 1)
        value_ones = append_ones(value_c, dim=-1)  # (BH, M, d+1)
        key_value = torch.bmm((key_features * (1.0 / keys)).transpose(1, 2), value_ones)  # (BH, d, d+1)
        both = damp * torch.bmm(query_features, key_value)  # (BH, N, d+1)
        both = both + torch.bmm(weights, append_ones(prompt_v, dim=-1))  # (BH, N, d+1)
        head_dim = value_c.shape[-1]
        return both[:, :, :head_dim] / (both[:, :, head_dim:] + normaliser_guard(self.eps, keys, query.dtype))

    def exact_image_rows_channels_first(self, query, query_features, key_features, value_c, prompt_k, prompt_v):
        """`exact_image_rows` with queries (BH, d, N), keys/values (BH, d, M), prompt (BH, d, T)."""
        keys = key_features.shape[-1]
        scores = torch.bmm(prompt_k.transpose(1, 2), query)  # (BH, T, N): prompt keys on axis 1
        shift = scores.amax(dim=1, keepdim=True).clamp_min(0)  # (BH, 1, N)
        weights = torch.exp(scores - shift) * (1.0 / keys)  # (BH, T, N)
        damp = torch.exp(-shift)  # (BH, 1, N)
        value_ones = append_ones(value_c, dim=1)  # (BH, d+1, M)
        value_key = torch.bmm(value_ones, (key_features * (1.0 / keys)).transpose(1, 2))  # (BH, d+1, d)
        both = damp * torch.bmm(value_key, query_features)  # (BH, d+1, N)
        both = both + torch.bmm(append_ones(prompt_v, dim=1), weights)  # (BH, d+1, N)
        head_dim = value_c.shape[1]
        return both[:, :head_dim] / (both[:, head_dim:] + normaliser_guard(self.eps, keys, query.dtype))


def _bmm_form(processor):
    if isinstance(processor, MMEDiTBMMAttnProcessor | EDiTBMMAttnProcessor):
        return None
    if isinstance(processor, MMEDiTAttnProcessor):
        return MMEDiTBMMAttnProcessor.like(processor)
    if isinstance(processor, EDiTAttnProcessor):
        return EDiTBMMAttnProcessor.like(processor)
    return None


class LinearAttentionBMM(MobilePass):
    name = "linear_attention_bmm"
    serves = (
        "all backends: EDiT linear attention as rank-3 bmm (heads in batch, ones column for the "
        "normaliser, K and eps scaled by 1/M against fp16 overflow); costs a ones column and a scale"
    )

    def apply(self, model: nn.Module) -> int:
        return swap_processors(model, _bmm_form)
