"""Attention cores in rank-3 batched-matmul form, shared by the attention passes.

Heads are folded into the batch axis: a (B, N, C) token tensor becomes (B*heads, N, d), row
b*heads + h, the order diffusers' `prepare_attention_mask` uses. Every backend we target has a
rank-3 batched matmul; none needs einsum, 5-D tensors or a fused SDPA kernel. Two layouts:

- token layout, (B, N, C), what diffusers computes in: `fold_heads` -> (B*heads, N, d);
- channels-first layout, (B, C, 1, S), what neural engines want: `fold_heads_channels_first`
  -> (B*heads, d, S), a free view because each head's channels are contiguous.
"""

from __future__ import annotations

import torch


def fold_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B*heads, N, d)."""
    batch, length, channels = tokens.shape
    per_head = tokens.view(batch, length, heads, channels // heads)  # (B, N, heads, d)
    return per_head.transpose(1, 2).reshape(batch * heads, length, channels // heads)


def fold_heads_transposed(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, M, C) -> (B*heads, d, M): keys laid out for Q @ K^T in one permute."""
    batch, length, channels = tokens.shape
    per_head = tokens.view(batch, length, heads, channels // heads)  # (B, M, heads, d)
    return per_head.permute(0, 2, 3, 1).reshape(batch * heads, channels // heads, length)


def unfold_heads(folded: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*heads, N, d) -> (B, N, heads*d)."""
    rows, length, head_dim = folded.shape
    heads = rows // batch
    per_head = folded.view(batch, heads, length, head_dim)  # (B, heads, N, d)
    return per_head.transpose(1, 2).reshape(batch, length, heads * head_dim)


def fold_heads_channels_first(image: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, 1, S) or (B, C, h, w) -> (B*heads, d, S): a view, no copy."""
    batch, channels = image.shape[:2]
    return image.reshape(batch * heads, channels // heads, -1)


def unfold_heads_channels_first(folded: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*heads, d, S) -> (B, C, 1, S): a view, no copy."""
    rows, head_dim, length = folded.shape
    return folded.reshape(batch, rows // batch * head_dim, 1, length)


def add_key_bias(scores: torch.Tensor, bias: torch.Tensor | None, batch: int, key_axis: int) -> torch.Tensor:
    """Add a per-key additive mask (B, 1, M) or (B, M) to folded scores.

    scores: (B*heads, N, M) with key_axis=-1, or (B*heads, M, S) with key_axis=1. The add
    goes through a rank-4 view so the mask broadcasts over heads without repeating it.
    """
    if bias is None:
        return scores
    rows, first, second = scores.shape
    keys = bias.reshape(batch, -1)  # (B, M)
    if key_axis == -1:
        bias4 = keys.view(batch, 1, 1, second)  # (B, 1, 1, M)
    else:
        bias4 = keys.view(batch, 1, first, 1)  # (B, 1, M, 1)
    scores4 = scores.view(batch, rows // batch, first, second)  # (B, heads, ., .)
    return (scores4 + bias4.to(scores.dtype)).view(rows, first, second)


def softmax_attention(
    query: torch.Tensor, key_t: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q K^T + bias) V on folded tensors; the softmax scale is already in `query`.

    query: (BH, N, d), key_t: (BH, d, M), value: (BH, M, d) -> (BH, N, d).
    """
    scores = torch.bmm(query, key_t)  # (BH, N, M)
    if bias is not None:
        scores = add_key_bias(scores, bias, bias.shape[0], key_axis=-1)
    weights = torch.softmax(scores, dim=-1)  # (BH, N, M)
    return torch.bmm(weights, value)  # (BH, N, d)


def split_head_softmax_attention(
    query: torch.Tensor,
    key_t: torch.Tensor,
    value: torch.Tensor,
    batch: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """`softmax_attention` one head at a time: each head's (B, N, M) scores are made, used
    and dropped before the next, so the largest live intermediate is 1/heads of the fused one
    (Apple's "Principle 2: chunking large intermediate tensors").

    Shapes as `softmax_attention`; `batch` is B, so BH / B heads.
    """
    rows = query.shape[0]
    heads = rows // batch
    per_head = []
    for head in range(heads):
        rows_of_head = slice(head, rows, heads) if batch > 1 else slice(head, head + 1)
        scores = torch.bmm(query[rows_of_head], key_t[rows_of_head])  # (B, N, M)
        if bias is not None:
            scores = scores + bias.reshape(batch, 1, -1).to(scores.dtype)  # (B, 1, M) mask
        weights = torch.softmax(scores, dim=-1)  # (B, N, M)
        per_head.append(torch.bmm(weights, value[rows_of_head]))  # (B, N, d)
    stacked = torch.stack(per_head, dim=1)  # (B, heads, N, d)
    return stacked.reshape(rows, *stacked.shape[2:])  # (BH, N, d)


def append_ones(values: torch.Tensor, dim: int) -> torch.Tensor:
    """`values` with one slice of ones appended along `dim`: the ones column (or row) that
    makes the matmul against V give the normaliser K^T 1 as well.

    Not F.pad(value=1.0): in an fp16 XNNPACK partition, a pad downstream of ops XNNPACK
    moves to fp32 (its fallback on CPUs without fp16 arithmetic, e.g. the x86 hosts that
    export and validate run on; PooledGroupNorm's statistics are such ops) fills with the
    low 16 bits of 1.0f, i.e. 0 (a fill of 1.002 gave 2.0), and the normaliser vanishes.
    0 * v + 1 is exactly 1 for finite v, and mul, add and cat carry no fill value.
    """
    ones = values.narrow(dim, 0, 1) * 0.0 + 1.0
    return torch.cat([values, ones], dim=dim)


def linear_attention(
    query_features: torch.Tensor, key_features: torch.Tensor, value: torch.Tensor, eps: float
) -> torch.Tensor:
    """ReLU-kernel linear attention, numerator and normaliser from one matmul.

    y_i = q_i (sum_j k_j^T v_j) / (q_i sum_j k_j + eps), with K pre-scaled by 1/M and eps by
    1/M too, so the ratio is unchanged while every sum is a mean: in fp16 the sums over 16384
    tokens stay far below 65504. See `normaliser_guard` for eps / M in fp16.

    query_features: (BH, N, d) >= 0, key_features: (BH, M, d) >= 0, value: (BH, M, d).
    """
    keys = key_features.shape[1]
    key_scaled = key_features * (1.0 / keys)  # (BH, M, d): sums become means
    value_ones = append_ones(value, dim=-1)  # (BH, M, d+1): last col 1
    key_value = torch.bmm(key_scaled.transpose(1, 2), value_ones)  # (BH, d, d+1): [K^T V | K^T 1]
    both = torch.bmm(query_features, key_value)  # (BH, N, d+1)
    head_dim = value.shape[-1]
    numerator = both[:, :, :head_dim]  # (BH, N, d)
    normaliser = both[:, :, head_dim:]  # (BH, N, 1)
    return numerator / (normaliser + normaliser_guard(eps, keys, query_features.dtype))


def normaliser_guard(eps: float, keys: int, dtype: torch.dtype) -> float:
    """eps / M, floored at the smallest normal number of `dtype`.

    In float32 that is exactly eps / M (6e-11 at M = 16384 is far above the floor), so the
    result is unchanged. In fp16 eps / M would round to 0, and a token whose ReLU query
    features are all zero would give 0 / 0 = NaN; the floor (6.1e-5) keeps it 0 and moves no
    other row: their normalisers are many orders larger.
    """
    return max(eps / keys, torch.finfo(dtype).tiny)


def linear_attention_channels_first(
    query_features: torch.Tensor, key_features: torch.Tensor, value: torch.Tensor, eps: float
) -> torch.Tensor:
    """`linear_attention` in channels-first layout: no token-sized transpose of Q or V.

    query_features: (BH, d, S) >= 0, key_features: (BH, d, M) >= 0, value: (BH, d, M)
    -> (BH, d, S).
    """
    keys = key_features.shape[-1]
    key_scaled = key_features * (1.0 / keys)  # (BH, d, M)
    value_ones = append_ones(value, dim=1)  # (BH, d+1, M): last row 1
    value_key = torch.bmm(value_ones, key_scaled.transpose(1, 2))  # (BH, d+1, d): [V K^T ; 1 K^T]
    both = torch.bmm(value_key, query_features)  # (BH, d+1, S)
    head_dim = value.shape[1]
    numerator = both[:, :head_dim]  # (BH, d, S)
    normaliser = both[:, head_dim:]  # (BH, 1, S)
    return numerator / (normaliser + normaliser_guard(eps, keys, query_features.dtype))


def softmax_attention_channels_first(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch: int,
    bias: torch.Tensor | None = None,
    split_heads: bool = False,
) -> torch.Tensor:
    """softmax attention with keys on the channel axis of the scores, as Apple's reference
    does: scores (BH, M, S) = K^T (BH, M, d) @ Q (BH, d, S), softmax over M, then
    V (BH, d, M) @ P (BH, M, S). Only K is transposed; the token-sized Q and output are not.

    query (scale applied): (BH, d, S), key, value: (BH, d, M) -> (BH, d, S).
    """
    rows = query.shape[0]
    heads = rows // batch
    key_t = key.transpose(1, 2)  # (BH, M, d)

    def attend(q, k_t, v):
        scores = torch.bmm(k_t, q)  # (b, M, S)
        if bias is not None:
            scores = add_key_bias(scores, bias, batch, key_axis=1)
        return torch.bmm(v, torch.softmax(scores, dim=1))  # (b, d, S)

    if not split_heads:
        return attend(query, key_t, value)
    per_head = []
    for head in range(heads):
        rows_of_head = slice(head, rows, heads) if batch > 1 else slice(head, head + 1)
        per_head.append(attend(query[rows_of_head], key_t[rows_of_head], value[rows_of_head]))
    stacked = torch.stack(per_head, dim=1)  # (B, heads, d, S)
    return stacked.reshape(rows, *stacked.shape[2:])  # (BH, d, S)
