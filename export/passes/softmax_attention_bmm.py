"""Pass `softmax_attention_bmm`: softmax attention as explicit bmm + softmax + bmm.

Serves XNNPACK (and any delegate without a fused SDPA): torch.export decomposes
F.scaled_dot_product_attention into a "safe softmax" (eq(-inf), logical_not, any, where,
full_like over the whole (B, heads, N, M) score tensor) plus a scalar mul and expand copies.
XNNPACK takes none of those, so they ran on single-threaded portable kernels: at 1024 image
tokens, one PixArt layer spent ~29% of its ExecuTorch time there. Written as bmm / softmax /
bmm on folded heads, the whole attention is delegated. Cost: none in float32 (no row of a
PixArt or SD3 score matrix is fully masked, which is all the safe softmax guards against).
"""

from __future__ import annotations

from diffusers.models.attention_processor import AttnProcessor2_0, JointAttnProcessor2_0
from diffusers.models.transformers.sana_transformer import SanaAttnProcessor2_0
from torch import nn

from edit_mobile.export.passes.base import MobilePass, attention_modules
from edit_mobile.export.passes.softmax_processors import (
    JointSoftmaxAttnProcessor,
    SoftmaxAttnProcessor,
    SpatialSoftmaxAttnProcessor,
)


def bmm_softmax_form(processor, split_heads: bool, attn=None):
    """The folded-head form of a diffusers softmax processor, or None if it is not one."""
    if type(processor) is AttnProcessor2_0 and attn is not None and attn.group_norm is not None:
        return SpatialSoftmaxAttnProcessor(split_heads)  # a VAE's mid-block attention
    if type(processor) is AttnProcessor2_0:
        return SoftmaxAttnProcessor(split_heads)
    if type(processor) is SanaAttnProcessor2_0 and attn is not None and _plain_sana_cross_attention(attn):
        return SoftmaxAttnProcessor(split_heads)
    if type(processor) is JointAttnProcessor2_0:
        return JointSoftmaxAttnProcessor(split_heads)
    return None


class SoftmaxAttentionBMM(MobilePass):
    name = "softmax_attention_bmm"
    serves = (
        "XNNPACK / any delegate without fused SDPA: explicit bmm+softmax on folded heads instead of "
        "the safe-softmax decomposition that falls back to portable kernels; no cost"
    )

    def apply(self, model: nn.Module) -> int:
        swapped = 0
        for attn in attention_modules(model):
            new = bmm_softmax_form(attn.processor, False, attn)
            if new is not None:
                attn.set_processor(new)
                swapped += 1
        return swapped + eager_transformers_attention(model)


def _plain_sana_cross_attention(attn) -> bool:
    """SANA's cross-attention is AttnProcessor2_0's unless it normalises q / k across heads
    (SANA 1.5's qk_norm) or rescales its output: those stay as they are."""
    return attn.norm_q is None and attn.norm_k is None and attn.rescale_output_factor == 1.0


def eager_transformers_attention(model: nn.Module) -> int:
    """transformers models inside `model` (a pipeline's text encoders) switched from SDPA, which
    decomposes into the same safe softmax, to their eager matmul + softmax attention."""
    switched = 0
    for module in model.modules():
        config = getattr(module, "config", None)
        if hasattr(module, "set_attn_implementation") and getattr(config, "_attn_implementation", "") == "sdpa":
            module.set_attn_implementation("eager")
            switched += 1
    return switched
