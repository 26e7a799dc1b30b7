"""Mobile rewrite passes: one a file, composed here and nowhere else.

Each pass rewrites a diffusers model at the module level (attention processors, norms,
layouts) and keeps its float32 outputs; `apply_passes` runs the chosen ones, in the order of
`PASSES`, on a private copy. `default_passes(backend)` is what `edit-mobile export` uses
unless told otherwise.
"""

from __future__ import annotations

import copy

from torch import nn

from edit_mobile.errors import UserError
from edit_mobile.export.passes.base import MobilePass
from edit_mobile.export.passes.channels_first import ChannelsFirst
from edit_mobile.export.passes.conv_fusion_winograd import ConvFusionWinograd
from edit_mobile.export.passes.gelu_tanh_sigmoid import GeluTanhSigmoid
from edit_mobile.export.passes.group_norm_pooled import GroupNormPooled
from edit_mobile.export.passes.linear_attention_bmm import LinearAttentionBMM
from edit_mobile.export.passes.row_norm_matmul import RowNormMatmul
from edit_mobile.export.passes.row_norm_reduce import RowNormReduce
from edit_mobile.export.passes.softmax_attention_bmm import SoftmaxAttentionBMM
from edit_mobile.export.passes.split_head_attention import SplitHeadAttention
from edit_mobile.export.passes.token_convs import CompressorTokens, ConvFusionGemm
from edit_mobile.export.passes.upsample_nearest_deconv import UpsampleNearestDeconv

# Application order. Attention processors are swapped before the layout changes, because
# `channels_first` needs processors that understand the (B, C, 1, S) layout; ConvFusion's
# token forms before `group_norm_pooled`, which would otherwise take its GroupNorm. Asked for
# both, `conv_fusion_winograd` takes the ungrouped ConvFusions and `conv_fusion_gemm` the rest.
PASSES: dict[str, MobilePass] = {
    p.name: p
    for p in (
        LinearAttentionBMM(),
        ConvFusionWinograd(),
        ConvFusionGemm(),
        CompressorTokens(),
        SoftmaxAttentionBMM(),
        SplitHeadAttention(),
        GroupNormPooled(),
        UpsampleNearestDeconv(),
        RowNormMatmul(),
        RowNormReduce(),
        GeluTanhSigmoid(),
        ChannelsFirst(),
    )
}

# Why each list (see each pass's `serves`): XNNPACK has no GroupNorm, LayerNorm, 3-D mean,
# fp16 GELU, nearest resizing or fused SDPA, and the SDPA decomposition's safe softmax falls back
# to portable kernels.
# Vulkan has native GroupNorm / LayerNorm / reductions but no `any` (safe softmax). ONNX
# Runtime runs every op itself; the explicit softmax avoids the safe-softmax masking work, and
# ORT Mobile's NNAPI has no LayerNormalization and no InstanceNormalization (GroupNorm's ONNX form).
# Neural engines (Core ML, QNN) want the channels-first layout and per-head softmax.
# conv_fusion_gemm / compressor_tokens: measured on XNNPACK 4.5% faster, but 5-6x the run's peak
# memory (docs/bench_runs/token-convs), so no backend has them by default.
# conv_fusion_winograd: listed for xnnpack, taken only by the exports its `default_schemes` and
# `applies_to` name (float32 and int8-dynamic, up to 4096 image tokens); the measurements behind
# them are beside those, in conv_fusion_winograd.py.
_NEURAL_ENGINE = ["linear_attention_bmm", "split_head_attention", "group_norm_pooled", "channels_first"]
DEFAULT_PASSES: dict[str, list[str]] = {
    "xnnpack": [
        "linear_attention_bmm",
        "conv_fusion_winograd",
        "softmax_attention_bmm",
        "group_norm_pooled",
        "upsample_nearest_deconv",
        "row_norm_matmul",
        "gelu_tanh_sigmoid",
    ],
    "vulkan": ["linear_attention_bmm", "softmax_attention_bmm"],
    "onnx": ["linear_attention_bmm", "softmax_attention_bmm", "group_norm_pooled", "row_norm_reduce"],
    "coreml": _NEURAL_ENGINE,
    "coreml-pte": _NEURAL_ENGINE,
    "qnn": _NEURAL_ENGINE,
}


def default_passes(backend: str) -> list[str]:
    if backend not in DEFAULT_PASSES:
        raise UserError(f"no default passes for backend {backend!r}; known: {', '.join(DEFAULT_PASSES)}")
    return list(DEFAULT_PASSES[backend])


def check_pass_names(names: list[str]) -> list[str]:
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise UserError(f"unknown pass {unknown[0]!r}; choose from {', '.join(PASSES)}")
    return names


def apply_passes(model: nn.Module, names: list[str], share_weights: bool = False) -> nn.Module:
    """A rewritten copy of `model` with the named passes applied in `PASSES` order.

    `share_weights`: the copy holds `model`'s own parameters and buffers instead of a second copy
    of the weights (no pass writes them in place; a caller that casts or trains the copy must
    not share)."""
    chosen = set(check_pass_names(list(names)))
    shared = (*model.parameters(), *model.buffers()) if share_weights else ()
    rewritten = copy.deepcopy(model, {id(tensor): tensor for tensor in shared})
    for name, mobile_pass in PASSES.items():
        if name in chosen:
            mobile_pass.apply(rewritten)
    return rewritten.eval() if not model.training else rewritten


__all__ = ["DEFAULT_PASSES", "PASSES", "MobilePass", "apply_passes", "check_pass_names", "default_passes"]
