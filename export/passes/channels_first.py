"""Pass `channels_first`: the image path in the (B, C, 1, S) layout of neural engines.

Serves Core ML (ANE) and QNN, after Apple's ml-ane-transformers:
- "Principle 1: picking the right data format": activations stay (B, C, 1, S) from the patch
  embedding to the output, so the channel axis is the one the engine vectorises over;
- every Linear on image or prompt tokens is the equivalent 1x1 Conv2d, LayerNorm normalises
  over the channel axis (dim 1), per-head q/k norms over the head's channel axis;
- "Principle 3: minimising memory copies": no token-sized transpose of image activations
  remains. The patch embedding's (B, C, h, w) output is already channels-first (a view),
  heads fold as views, and the output projection + unpatchify is one stride-p
  ConvTranspose2d writing (B, C_out, H, W). The prompt is transposed once, at the input;
  softmax attention transposes only its keys (the prompt's, for EDiT) and linear attention
  its N/4 compressed keys, which a backend's matmul can take transposed.
Cost: no arithmetic; CPU delegates (XNNPACK) prefer the token layout, so it is not a
default there. PixArt and SD3 families (teachers and EDiT / MM-EDiT students).

The model keeps its class (a generated subclass `ChannelsFirst<Class>` overriding only
`forward`), so `model_family`, `is_edit` and the config are unchanged.
"""

from __future__ import annotations

from diffusers import PixArtTransformer2DModel, SD3Transformer2DModel
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from edit_mobile.errors import UserError
from edit_mobile.export.passes.base import MobilePass, swap_children, swap_processors
from edit_mobile.export.passes.channels_first_layers import conv1x1_from_linear
from edit_mobile.export.passes.channels_first_pixart import (
    ChannelsFirstPixArtForward,
    install_pixart,
)
from edit_mobile.export.passes.channels_first_sd3 import ChannelsFirstSD3Forward, install_sd3
from edit_mobile.export.passes.linear_attention_bmm import EDiTBMMAttnProcessor, _bmm_form
from edit_mobile.export.passes.softmax_attention_bmm import bmm_softmax_form
from edit_mobile.export.passes.softmax_processors import (
    JointSoftmaxAttnProcessor,
    SoftmaxAttnProcessor,
)

# family base class -> (forward mixin, installer, token-path modules whose Linears become convs)
FAMILIES = {
    PixArtTransformer2DModel: (ChannelsFirstPixArtForward, install_pixart, ("caption_projection",)),
    SD3Transformer2DModel: (ChannelsFirstSD3Forward, install_sd3, ("context_embedder",)),
}
_CHANNELS_FIRST_CLASSES: dict[type, type] = {}


def channels_first_class(cls: type, mixin: type) -> type:
    if cls not in _CHANNELS_FIRST_CLASSES:
        _CHANNELS_FIRST_CLASSES[cls] = type(f"ChannelsFirst{cls.__name__}", (mixin, cls), {})
    return _CHANNELS_FIRST_CLASSES[cls]


def _layout_aware_processor(processor):
    """Attention processors that accept (B, C, 1, S): ours; diffusers' and EDiT's are swapped."""
    if isinstance(processor, EDiTBMMAttnProcessor | SoftmaxAttnProcessor | JointSoftmaxAttnProcessor):
        return None
    new = _bmm_form(processor) or bmm_softmax_form(processor, split_heads=False)
    if new is None:
        raise UserError(f"channels_first has no channels-first form of {type(processor).__name__}; drop the pass")
    return new


def _linears_to_convs(model: nn.Module, token_modules: tuple[str, ...]) -> int:
    """Every Linear of attention, feed-forward and the prompt embedding becomes a 1x1 conv;
    the adaptive-norm and timestep linears act on (B, features) and stay."""
    to_conv = lambda child: conv1x1_from_linear(child) if type(child) is nn.Linear else None  # noqa: E731
    swapped = 0
    for module in list(model.modules()):
        if isinstance(module, Attention | FeedForward):
            swapped += swap_children(module, to_conv)
    for name in token_modules:
        part = getattr(model, name, None)
        if type(part) is nn.Linear:
            setattr(model, name, conv1x1_from_linear(part))
            swapped += 1
        elif part is not None:
            swapped += swap_children(part, to_conv)
    return swapped


class ChannelsFirst(MobilePass):
    name = "channels_first"
    serves = (
        "Core ML (ANE) / QNN: (B, C, 1, S) layout, Linear as 1x1 Conv2d, LayerNorm over channels, "
        "no token-sized transposes of image activations (ANE principles 1 and 3); no arithmetic cost"
    )

    def applies_to(self, model: nn.Module, image_tokens: int | None = None) -> bool:
        return any(isinstance(model, base) for base in FAMILIES)  # others keep the token layout

    def apply(self, model: nn.Module) -> int:
        family = next((base for base in FAMILIES if isinstance(model, base)), None)
        if family is None:
            raise UserError(f"channels_first supports PixArt and SD3 transformers, not {type(model).__name__}")
        mixin, install, token_modules = FAMILIES[family]
        if isinstance(model, mixin):
            return 0
        rewritten = swap_processors(model, _layout_aware_processor)
        rewritten += _linears_to_convs(model, token_modules)
        rewritten += install(model)
        model.__class__ = channels_first_class(type(model), mixin)
        return rewritten
