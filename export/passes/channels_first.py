"""Pass `channels_first`: PixArt's image path in the (B, C, 1, S) layout of neural engines.

Serves Core ML (ANE) and QNN, after Apple's ml-ane-transformers:
- "Principle 1: picking the right data format": activations stay (B, C, 1, S) from the patch
  embedding to the output, so the channel axis is the one the engine vectorises over;
- every Linear of the image and prompt paths is the equivalent 1x1 Conv2d, LayerNorm
  normalises over the channel axis (dim 1);
- "Principle 3: minimising memory copies": no token-sized transpose remains. The patch
  embedding's (B, C, h, w) output is already channels-first (a view), attention folds heads
  as views, and the output projection + unpatchify is one stride-p ConvTranspose2d that
  writes (B, C_out, H, W) directly. Only the prompt (B, T, 4096) is transposed, once.
Cost: none in arithmetic; CPU delegates (XNNPACK) prefer the token layout, so it is not a
default there. PixArt family only (SD3's joint blocks keep the token layout).

The model keeps its class (a generated subclass `ChannelsFirst<Class>` overriding only
`forward`), so `model_family`, `is_edit` and the config are unchanged.
"""

from __future__ import annotations

import torch
from diffusers import PixArtTransformer2DModel
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from edit_mobile.errors import UserError
from edit_mobile.export.passes.base import MobilePass, swap_children, swap_processors
from edit_mobile.export.passes.linear_attention_bmm import EDiTBMMAttnProcessor, _bmm_form
from edit_mobile.export.passes.row_norm_matmul import MatmulRowNorm
from edit_mobile.export.passes.softmax_attention_bmm import bmm_softmax_form
from edit_mobile.export.passes.softmax_processors import SoftmaxAttnProcessor
from edit_mobile.models.token_grid import latent_token_grid, set_token_grid


def conv1x1_from_linear(linear: nn.Linear) -> nn.Conv2d:
    """The 1x1 Conv2d computing `linear` over the channel axis of (B, C, 1, S)."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    conv.weight = nn.Parameter(linear.weight.detach()[:, :, None, None], requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        conv.bias = linear.bias
    return conv.to(linear.weight.device)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of (B, C, 1, S), as Apple's LayerNormANE."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        layer_norm = type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1
        if not (layer_norm or (isinstance(norm, MatmulRowNorm) and norm.centre)):  # row_norm_matmul may run first
            raise ValueError(f"channels-first LayerNorm replaces a LayerNorm over one axis, got {norm}")
        self.eps, self.weight, self.bias = norm.eps, norm.weight, norm.bias

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        centred = image - image.mean(dim=1, keepdim=True)  # (B, C, 1, S)
        out = centred * torch.rsqrt((centred * centred).mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class ChannelsFirstPatchEmbed(nn.Module):
    """diffusers PatchEmbed (PixArt: sincos positions, no norm) returning (B, C, 1, S)."""

    def __init__(self, patch_embed: nn.Module):
        super().__init__()
        if patch_embed.layer_norm or patch_embed.pos_embed_max_size or not patch_embed.flatten:
            raise UserError("channels_first supports PixArt's patch embedding only; drop the pass for this model")
        self.proj = patch_embed.proj
        tokens = patch_embed.pos_embed  # (1, S0, C) or None
        channels_first = None if tokens is None else tokens.transpose(1, 2).unsqueeze(2).contiguous()
        self.register_buffer("pos_embed", channels_first, persistent=False)  # (1, C, 1, S0)
        self.grid = (patch_embed.height, patch_embed.width)
        self.base_size, self.interpolation_scale = patch_embed.base_size, patch_embed.interpolation_scale

    def positions(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """Sin-cos positions for `grid` as (1, C, 1, S), as PatchEmbed computes them."""
        if grid == self.grid:
            return self.pos_embed.to(like.dtype)
        tokens = get_2d_sincos_pos_embed(
            embed_dim=self.pos_embed.shape[1],
            grid_size=grid,
            base_size=self.base_size,
            interpolation_scale=self.interpolation_scale,
            device=like.device,
            output_type="pt",
        ).float()[None]  # (1, S, C), computed while tracing: a constant in the program
        return tokens.transpose(1, 2).unsqueeze(2).to(like.dtype)  # (1, C, 1, S)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        image = self.proj(latent)  # (B, C, h, w)
        batch, channels, height, width = image.shape
        flat = image.view(batch, channels, 1, height * width)  # (B, C, 1, S): a view
        if self.pos_embed is None:
            return flat
        return flat + self.positions((height, width), flat)


class ChannelsFirstUnpatchify(nn.Module):
    """PixArt's proj_out (Linear C -> p*p*C_out) + unpatchify as one ConvTranspose2d.

    proj_out row (pi*p + qi)*C_out + c feeds output pixel (c, hi*p + pi, wi*p + qi); a
    stride-p, kernel-p transposed conv maps input pixel (hi, wi) to exactly that p x p block,
    with weight[k, c, pi, qi] = W[(pi*p + qi)*C_out + c, k]. The bias differs per (pi, qi),
    which ConvTranspose2d's per-channel bias cannot hold, so it is added as a (C_out, p, p)
    tile.
    """

    def __init__(self, proj_out: nn.Linear, patch: int, out_channels: int):
        super().__init__()
        width = proj_out.in_features
        weight = proj_out.weight.detach().view(patch, patch, out_channels, width)  # (p, p, C_out, C)
        self.unpatchify = nn.ConvTranspose2d(width, out_channels, patch, stride=patch, bias=False)
        self.unpatchify.weight = nn.Parameter(weight.permute(3, 2, 0, 1).contiguous())  # (C, C_out, p, p)
        bias = proj_out.bias.detach().view(patch, patch, out_channels).permute(2, 0, 1)  # (C_out, p, p)
        self.register_buffer("bias_tile", bias.contiguous()[None], persistent=False)  # (1, C_out, p, p)
        self.patch = patch

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.unpatchify(image)  # (B, C_out, H, W)
        tiles = (out.shape[-2] // self.patch, out.shape[-1] // self.patch)
        return out + self.bias_tile.repeat(1, 1, *tiles)  # bias tile: a constant after tracing


class ChannelsFirstPixArtBlock(nn.Module):
    """BasicTransformerBlock (norm_type ada_norm_single) on (B, C, 1, S), same submodules."""

    def __init__(self, block: nn.Module):
        super().__init__()
        if block.norm_type != "ada_norm_single" or block.pos_embed is not None or block.attn2 is None:
            raise UserError("channels_first supports PixArt blocks (ada_norm_single) only; drop the pass")
        self.scale_shift_table = block.scale_shift_table  # (6, C)
        self.norm1 = ChannelsFirstLayerNorm(block.norm1)
        self.norm2 = ChannelsFirstLayerNorm(block.norm2)
        self.attn1, self.attn2, self.ff = block.attn1, block.attn2, block.ff

    def forward(self, image, prompt, prompt_bias, timestep):
        """image: (B, C, 1, S), prompt: (B, C, 1, T), prompt_bias: (B, 1, T) or None, timestep: (B, 6C)."""
        batch, channels = image.shape[:2]
        table = self.scale_shift_table[None] + timestep.reshape(batch, 6, channels)  # (B, 6, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            part.reshape(batch, channels, 1, 1) for part in table.chunk(6, dim=1)
        )  # each (B, C, 1, 1)
        normed = self.norm1(image) * (1 + scale_msa) + shift_msa
        image = image + gate_msa * self.attn1(normed)
        image = image + self.attn2(image, encoder_hidden_states=prompt, attention_mask=prompt_bias)
        normed = self.norm2(image) * (1 + scale_mlp) + shift_mlp
        return image + gate_mlp * self.ff(normed)


class ChannelsFirstPixArtForward:
    """Mixin overriding PixArtTransformer2DModel.forward; the blocks and heads it calls are
    the channels-first modules the pass installed."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        added_cond_kwargs=None,
        cross_attention_kwargs=None,
        attention_mask=None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        if added_cond_kwargs or cross_attention_kwargs or attention_mask is not None:
            raise ValueError("channels-first PixArt takes no added conditions, attention kwargs or self-attention mask")
        batch = hidden_states.shape[0]
        patch = self.config.patch_size
        grid = latent_token_grid(*hidden_states.shape[-2:], patch)
        set_token_grid(self, grid)  # EDiT processors need it; a teacher has none
        prompt_bias = None
        if encoder_attention_mask is not None:
            prompt_bias = encoder_attention_mask
            if prompt_bias.ndim == 2:  # keep/discard mask -> additive bias, as diffusers does
                prompt_bias = ((1 - prompt_bias.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)  # (B, 1, T)

        image = self.pos_embed(hidden_states)  # (B, C, 1, S)
        timestep, embedded_timestep = self.adaln_single(
            timestep, added_cond_kwargs, batch_size=batch, hidden_dtype=image.dtype
        )  # (B, 6C), (B, C)
        prompt = encoder_hidden_states.transpose(1, 2).unsqueeze(2)  # (B, caption, 1, T): the one transpose
        prompt = self.caption_projection(prompt)  # (B, C, 1, T)
        for block in self.transformer_blocks:
            image = block(image, prompt, prompt_bias, timestep)

        channels = image.shape[1]
        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)  # (B, 1, C) each
        image = self.norm_out(image) * (1 + scale.reshape(batch, channels, 1, 1)) + shift.reshape(batch, channels, 1, 1)
        output = self.proj_out(image.view(batch, channels, *grid))  # (B, C_out, H, W)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)


_CHANNELS_FIRST_CLASSES: dict[type, type] = {}


def channels_first_class(cls: type) -> type:
    if cls not in _CHANNELS_FIRST_CLASSES:
        _CHANNELS_FIRST_CLASSES[cls] = type(f"ChannelsFirst{cls.__name__}", (ChannelsFirstPixArtForward, cls), {})
    return _CHANNELS_FIRST_CLASSES[cls]


def _layout_aware_processor(processor):
    """Attention processors that accept (B, C, 1, S): ours; diffusers' and EDiT's are swapped."""
    if isinstance(processor, EDiTBMMAttnProcessor | SoftmaxAttnProcessor):
        return None
    return _bmm_form(processor) or bmm_softmax_form(processor, split_heads=False)


class ChannelsFirst(MobilePass):
    name = "channels_first"
    serves = (
        "Core ML (ANE) / QNN: (B, C, 1, S) layout, Linear as 1x1 Conv2d, LayerNorm over channels, "
        "no token-sized transposes (ANE principles 1 and 3); PixArt only, no arithmetic cost"
    )

    def apply(self, model: nn.Module) -> int:
        if not isinstance(model, PixArtTransformer2DModel):
            raise UserError(
                f"channels_first supports PixArt transformers, not {type(model).__name__}; "
                "leave the pass out (--passes) for this model"
            )
        if isinstance(model, ChannelsFirstPixArtForward):
            return 0
        rewritten = swap_processors(model, _layout_aware_processor)
        rewritten += self._linears_to_convs(model)
        model.pos_embed = ChannelsFirstPatchEmbed(model.pos_embed)
        model.transformer_blocks = nn.ModuleList(ChannelsFirstPixArtBlock(b) for b in model.transformer_blocks)
        model.norm_out = ChannelsFirstLayerNorm(model.norm_out)
        model.proj_out = ChannelsFirstUnpatchify(model.proj_out, model.config.patch_size, model.out_channels)
        model.__class__ = channels_first_class(type(model))
        return rewritten + 3 + len(model.transformer_blocks)

    @staticmethod
    def _linears_to_convs(model: nn.Module) -> int:
        """Every Linear in the blocks and the caption projection; adaLN stays (it acts on (B, .))."""
        swapped = 0
        to_conv = lambda child: conv1x1_from_linear(child) if type(child) is nn.Linear else None  # noqa: E731
        for part in (model.transformer_blocks, model.caption_projection):
            if part is not None:
                swapped += swap_children(part, to_conv)
        return swapped


__all__ = ["ChannelsFirst", "ChannelsFirstLayerNorm", "conv1x1_from_linear"]
