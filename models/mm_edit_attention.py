"""MM-EDiT hybrid attention for the joint attention of an MM-DiT block (SD3 / SD3.5).

The joint softmax over [image; prompt] tokens splits into four interactions:

    image  -> image : EDiT linear attention (ConvFusion queries, compressed keys/values)
    image  -> prompt: softmax (SDPA)
    prompt -> image : softmax over [K_I; K_P] (full or compressed K_I, an option)
    prompt -> prompt: softmax, in the same call

Image rows mix the two parts, by eta = N_I / (N_I + N_T) (default) or with one shared
normaliser of the ReLU and exponential kernels ("exact").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.edit_attention import EDiTAttnProcessor, merge_heads, split_heads
from edit_mobile.models.linear_attention import relu_linear_attention


def exact_hybrid_attention(
    query: torch.Tensor,
    query_features: torch.Tensor,
    key_features: torch.Tensor,
    value_compressed: torch.Tensor,
    prompt_key: torch.Tensor,
    prompt_value: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Image rows normalised jointly over ReLU-kernel image keys and exp-kernel prompt keys.

    out_i = (phi(q_i) sum_j phi(k_j)^T v_j + sum_p e^{s_ip} v_p)
            / (phi(q_i) sum_j phi(k_j) + sum_p e^{s_ip} + eps),   s_ip = q_i . k_p / sqrt(d)
    Both sums are scaled by e^{-m_i}, m_i = max(0, max_p s_ip), so nothing overflows.
    """
    scale = query.shape[-1] ** -0.5
    scores = (query @ prompt_key.transpose(-1, -2)) * scale  # (B, heads, N_I, N_T)
    shift = scores.amax(dim=-1, keepdim=True).clamp_min(0)  # (B, heads, N_I, 1)
    weights = torch.exp(scores - shift)  # (B, heads, N_I, N_T)
    damp = torch.exp(-shift)  # (B, heads, N_I, 1)
    key_value = key_features.transpose(-1, -2) @ value_compressed  # (B, heads, d, d)
    key_sum = key_features.sum(dim=-2, keepdim=True).transpose(-1, -2)  # (B, heads, d, 1)
    numerator = damp * (query_features @ key_value) + weights @ prompt_value  # (B, heads, N_I, d)
    normaliser = damp * (query_features @ key_sum) + weights.sum(-1, keepdim=True)  # (.., N_I, 1)
    return numerator / (normaliser + eps)


class MMEDiTAttnProcessor(EDiTAttnProcessor):
    """Processor for SD3's joint attention (`JointTransformerBlock.attn`)."""

    def __init__(self, channels: int, config: EDiTConfig):
        super().__init__(channels, config)
        self.normalizer = config.mm_normalizer
        self.prompt_image_keys = config.mm_prompt_image_keys

    def prompt_projections(self, attn, encoder_hidden_states: torch.Tensor):
        """Prompt queries, keys, values, each (B, heads, N_T, d), with the teacher's norms."""
        query = split_heads(attn.add_q_proj(encoder_hidden_states), attn.heads)
        key = split_heads(attn.add_k_proj(encoder_hidden_states), attn.heads)
        value = split_heads(attn.add_v_proj(encoder_hidden_states), attn.heads)
        if attn.norm_added_q is not None:
            query = attn.norm_added_q(query)
        if attn.norm_added_k is not None:
            key = attn.norm_added_k(key)
        return query, key, value

    def image_rows(self, image, prompt_key, prompt_value, prompt_tokens: int) -> torch.Tensor:
        query, query_features, key_features, _, value_compressed, _, _ = image
        if self.normalizer == "exact":
            return exact_hybrid_attention(
                query, query_features, key_features, value_compressed, prompt_key, prompt_value, self.eps
            )
        image_tokens = query.shape[2]
        eta = image_tokens / (image_tokens + prompt_tokens)
        linear = relu_linear_attention(query_features, key_features, value_compressed, self.eps)
        softmax = F.scaled_dot_product_attention(query, prompt_key, prompt_value)  # (B, heads, N_I, d)
        return eta * linear + (1 - eta) * softmax

    def prompt_rows(self, image, prompt_query, prompt_key, prompt_value) -> torch.Tensor:
        _, _, _, key_compressed, value_compressed, full_key, full_value = image
        if self.prompt_image_keys == "full":
            image_key, image_value = full_key, full_value  # (B, heads, N_I, d)
        else:
            image_key, image_value = key_compressed, value_compressed  # (B, heads, N_I/4, d)
        keys = torch.cat([image_key, prompt_key], dim=2)
        values = torch.cat([image_value, prompt_value], dim=2)
        return F.scaled_dot_product_attention(prompt_query, keys, values)  # (B, heads, N_T, d)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("MMEDiTAttnProcessor replaces a joint attention; pass encoder_hidden_states")
        need_full_keys = self.prompt_image_keys == "full" and not attn.context_pre_only
        image = self.edit_features(attn, hidden_states, with_full_keys=need_full_keys)
        prompt_query, prompt_key, prompt_value = self.prompt_projections(attn, encoder_hidden_states)
        out_image = self.image_rows(image, prompt_key, prompt_value, encoder_hidden_states.shape[1])
        out_image = attn.to_out[1](attn.to_out[0](merge_heads(out_image).to(hidden_states.dtype)))
        if attn.context_pre_only:
            # The last SD3 block discards the prompt stream: skip the prompt rows entirely.
            return out_image, None
        out_prompt = self.prompt_rows(image, prompt_query, prompt_key, prompt_value)
        out_prompt = attn.to_add_out(merge_heads(out_prompt).to(encoder_hidden_states.dtype))
        return out_image, out_prompt
