"""Pass `split_head_attention`: softmax attention one head at a time.

Serves Core ML (ANE) and QNN: Apple's "Principle 2: chunking large intermediate tensors".
Each head's score matrix (B, N, M) is made and consumed before the next, so the largest live
intermediate is 1/heads of the fused (B*heads, N, M) one and fits the engine's on-chip
memory; the heads run as separate small matmuls. Cost: heads x more (smaller) ops; on CPU
delegates the fused form is faster, so it is not a default there.

Applies to the prompt interactions (PixArt cross-attention, MM-EDiT image->prompt and
prompt rows), to any remaining full softmax attention (teachers) and to a VAE's mid-block
attention (its GroupNorm and residual kept).

The saving needs a backend that keeps the heads' program order. XNNPACK (ExecuTorch 1.5.1)
does not: fusing a partition into one subgraph re-sorts it breadth-first (all heads' QK^T,
then all softmaxes, then all PV), so every head's scores are live at once; measured on one
PixArt-Sigma layer at 4096 tokens, its workspace was 1.07 GiB split vs 1.13 GiB fused,
while ExecuTorch's own memory plan of the same graph fell from 2.0 GiB to 0.21 GiB.
"""

from __future__ import annotations

from torch import nn

from edit_mobile.export.passes.base import MobilePass, attention_modules
from edit_mobile.export.passes.softmax_attention_bmm import bmm_softmax_form
from edit_mobile.export.passes.softmax_processors import SoftmaxAttention


class SplitHeadAttention(MobilePass):
    name = "split_head_attention"
    serves = (
        "Core ML / QNN: softmax attention one head at a time so each score matrix fits on-chip "
        "(ANE principle 2); costs heads x more, smaller ops"
    )

    def apply(self, model: nn.Module) -> int:
        switched = 0
        for module in model.modules():
            if isinstance(module, SoftmaxAttention) and not module.split_heads:
                module.split_heads = True  # processors already in folded form (fused)
                switched += 1
        for attn in attention_modules(model):  # the module too: a VAE's attention has its own form
            new = bmm_softmax_form(attn.processor, True, attn)
            if new is not None:
                attn.set_processor(new)
                switched += 1
        return switched
