"""ReLU-kernel linear attention: the O(N d^2) core of EDiT."""

from __future__ import annotations

import torch


def relu_linear_attention(
    query_features: torch.Tensor, key_features: torch.Tensor, value: torch.Tensor, eps: float
) -> torch.Tensor:
    """y_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) sum_j phi(k_j) + eps).

    Features are already passed through the kernel (ReLU), so they are non-negative.
    query_features: (B, heads, N, d); key_features, value: (B, heads, M, d).
    """
    key_value = key_features.transpose(-1, -2) @ value  # (B, heads, d, d)
    key_sum = key_features.sum(dim=-2, keepdim=True)  # (B, heads, 1, d)
    numerator = query_features @ key_value  # (B, heads, N, d)
    normaliser = query_features @ key_sum.transpose(-1, -2)  # (B, heads, N, 1)
    return numerator / (normaliser + eps)
