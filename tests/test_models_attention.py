"""EDiT and MM-EDiT attention against explicit O(N^2) references of the formulas."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from edit_mobile.models import (
    EDiTAttnProcessor,
    EDiTConfig,
    MMEDiTAttnProcessor,
    relu_linear_attention,
)
from edit_mobile.models.edit_attention import image_to_tokens, split_heads, tokens_to_image

WIDTH, HEADS = 32, 4


def randomise(module):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.2)
    return module


def make_self_attention(qk_norm=None):
    return randomise(Attention(query_dim=WIDTH, heads=HEADS, dim_head=WIDTH // HEADS, bias=True, qk_norm=qk_norm, eps=1e-6))


def make_joint_attention(context_pre_only=False):
    attn = Attention(
        query_dim=WIDTH, heads=HEADS, dim_head=WIDTH // HEADS, bias=True, out_dim=WIDTH,
        added_kv_proj_dim=WIDTH, context_pre_only=context_pre_only, qk_norm="rms_norm", eps=1e-6,
    )
    return randomise(attn)


def reference_features(attn, processor, x, grid):
    """Q, K, V of the EDiT formula computed with explicit functional ops."""
    fusion = processor.conv_fusion
    image = tokens_to_image(x, grid)
    local = F.conv2d(image, fusion.local.weight, fusion.local.bias, padding=1, groups=fusion.local.groups)
    local = F.leaky_relu(F.group_norm(local, fusion.norm.num_groups, fusion.norm.weight, fusion.norm.bias), fusion.act.negative_slope)
    fused = x + image_to_tokens(F.conv2d(local, fusion.expand.weight, fusion.expand.bias))
    query = split_heads(F.linear(fused, attn.to_q.weight, attn.to_q.bias), HEADS)

    def compress(tokens, conv):
        return image_to_tokens(F.conv2d(tokens_to_image(tokens, grid), conv.weight, conv.bias, stride=2, padding=1, groups=WIDTH))

    key = split_heads(compress(attn.to_k(x), processor.key_compressor.conv), HEADS)
    value = split_heads(compress(attn.to_v(x), processor.value_compressor.conv), HEADS)
    if attn.norm_q is not None:
        query, key = attn.norm_q(query), attn.norm_k(key)
    return query, key, value


def materialised_linear_attention(query_features, key_features, value, eps):
    scores = query_features @ key_features.transpose(-1, -2)  # (B, heads, N, M), explicit
    return (scores / (scores.sum(-1, keepdim=True) + eps)) @ value


def merge(per_head):
    return per_head.transpose(1, 2).flatten(2)


@pytest.mark.parametrize("grid", [(4, 4), (4, 6), (8, 2), (6, 10)])
@pytest.mark.parametrize("qk_norm", [None, "rms_norm"])
def test_edit_attention_matches_materialised_reference(grid, qk_norm):
    attn = make_self_attention(qk_norm)
    processor = randomise(EDiTAttnProcessor(WIDTH, EDiTConfig()))
    processor.token_grid = grid
    attn.set_processor(processor)
    x = torch.randn(2, grid[0] * grid[1], WIDTH)
    query, key, value = reference_features(attn, processor, x, grid)
    expected = attn.to_out[0](merge(materialised_linear_attention(F.relu(query), F.relu(key), value, 1e-6)))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_relu_linear_attention_is_the_normalised_kernel_attention():
    q, k, v = F.relu(torch.randn(2, 3, 50, 8)), F.relu(torch.randn(2, 3, 13, 8)), torch.randn(2, 3, 13, 8)
    torch.testing.assert_close(relu_linear_attention(q, k, v, 1e-6), materialised_linear_attention(q, k, v, 1e-6), rtol=1e-5, atol=1e-5)


def test_initialisation_starts_from_the_teacher():
    processor = EDiTAttnProcessor(WIDTH, EDiTConfig())
    image = torch.randn(1, WIDTH, 8, 6)
    assert torch.count_nonzero(processor.conv_fusion(image)) == 0  # queries = teacher's
    compressed = processor.key_compressor(image_to_tokens(image), (8, 6))
    torch.testing.assert_close(compressed, image_to_tokens(F.avg_pool2d(image, 2)))


def run_mm_edit(config, context_pre_only=False, grid=(4, 6), prompt_tokens=5):
    attn = make_joint_attention(context_pre_only)
    processor = randomise(MMEDiTAttnProcessor(WIDTH, config))
    processor.token_grid = grid
    attn.set_processor(processor)
    x, context = torch.randn(2, grid[0] * grid[1], WIDTH), torch.randn(2, prompt_tokens, WIDTH)
    out_image, out_prompt = attn(x, encoder_hidden_states=context)
    query, key_c, value_c = reference_features(attn, processor, x, grid)
    prompt_q = attn.norm_added_q(split_heads(attn.add_q_proj(context), HEADS))
    prompt_k = attn.norm_added_k(split_heads(attn.add_k_proj(context), HEADS))
    prompt_v = split_heads(attn.add_v_proj(context), HEADS)
    full_k = attn.norm_k(split_heads(attn.to_k(x), HEADS))
    full_v = split_heads(attn.to_v(x), HEADS)
    return attn, (out_image, out_prompt), (query, key_c, value_c, prompt_q, prompt_k, prompt_v, full_k, full_v), x


def softmax_attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v


@pytest.mark.parametrize("prompt_keys", ["full", "compressed"])
def test_mm_edit_eta_matches_formula(prompt_keys):
    attn, (out_image, out_prompt), refs, x = run_mm_edit(EDiTConfig(mm_prompt_image_keys=prompt_keys))
    query, key_c, value_c, prompt_q, prompt_k, prompt_v, full_k, full_v = refs
    eta = x.shape[1] / (x.shape[1] + prompt_k.shape[2])
    image_rows = eta * materialised_linear_attention(F.relu(query), F.relu(key_c), value_c, 1e-6) + (1 - eta) * softmax_attention(query, prompt_k, prompt_v)
    image_keys, image_values = (full_k, full_v) if prompt_keys == "full" else (key_c, value_c)
    prompt_rows = softmax_attention(prompt_q, torch.cat([image_keys, prompt_k], 2), torch.cat([image_values, prompt_v], 2))
    torch.testing.assert_close(out_image, attn.to_out[0](merge(image_rows)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_prompt, attn.to_add_out(merge(prompt_rows)), rtol=1e-5, atol=1e-5)


def test_mm_edit_exact_normaliser_matches_four_block_reference():
    attn, (out_image, _), refs, _ = run_mm_edit(EDiTConfig(mm_normalizer="exact"))
    query, key_c, value_c, _, prompt_k, prompt_v, _, _ = refs
    # One row-normalised matrix over [compressed image keys | prompt keys]:
    # ReLU-kernel weights for the image block, exponential weights for the prompt block.
    image_block = F.relu(query) @ F.relu(key_c).transpose(-1, -2)
    prompt_block = torch.exp(query @ prompt_k.transpose(-1, -2) / query.shape[-1] ** 0.5)
    weights = torch.cat([image_block, prompt_block], dim=-1)
    rows = (weights / (weights.sum(-1, keepdim=True) + 1e-6)) @ torch.cat([value_c, prompt_v], dim=2)
    torch.testing.assert_close(out_image, attn.to_out[0](merge(rows)), rtol=1e-5, atol=1e-5)


def test_mm_edit_skips_prompt_rows_when_the_block_discards_them():
    _, (_, out_prompt), _, _ = run_mm_edit(EDiTConfig(), context_pre_only=True)
    assert out_prompt is None
