"""PixArt-Sigma (and its EDiT student) in the channels-first layout: block and forward."""

from __future__ import annotations

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from edit_mobile.errors import UserError
from edit_mobile.export.passes.channels_first_layers import (
    ChannelsFirstLayerNorm,
    ChannelsFirstPatchEmbed,
    ChannelsFirstUnpatchify,
    per_channel,
)
from edit_mobile.models.token_grid import latent_token_grid, set_token_grid


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
            per_channel(part.reshape(batch, channels)) for part in table.chunk(6, dim=1)
        )  # each (B, C, 1, 1)
        normed = self.norm1(image) * (1 + scale_msa) + shift_msa
        image = image + gate_msa * self.attn1(normed)
        image = image + self.attn2(image, encoder_hidden_states=prompt, attention_mask=prompt_bias)
        normed = self.norm2(image) * (1 + scale_mlp) + shift_mlp
        return image + gate_mlp * self.ff(normed)


class ChannelsFirstPixArtForward:
    """Mixin overriding PixArtTransformer2DModel.forward; the blocks and heads it calls are
    the channels-first modules `install_pixart` put in place."""

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
        grid = latent_token_grid(*hidden_states.shape[-2:], self.config.patch_size)
        set_token_grid(self, grid)  # EDiT processors need it; a teacher has none
        prompt_bias = encoder_attention_mask
        if prompt_bias is not None and prompt_bias.ndim == 2:  # keep/discard mask -> additive bias
            prompt_bias = ((1 - prompt_bias.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)  # (B, 1, T)

        image = self.pos_embed(hidden_states)  # (B, C, 1, S)
        timestep, embedded_timestep = self.adaln_single(
            timestep, added_cond_kwargs, batch_size=batch, hidden_dtype=image.dtype
        )  # (B, 6C), (B, C)
        prompt = encoder_hidden_states.transpose(1, 2).unsqueeze(2)  # (B, caption, 1, T): the one transpose
        prompt = self.caption_projection(prompt)  # (B, C, 1, T)
        for block in self.transformer_blocks:
            image = block(image, prompt, prompt_bias, timestep)

        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)  # (B, 1, C)
        image = self.norm_out(image) * (1 + per_channel(scale[:, 0])) + per_channel(shift[:, 0])
        output = self.proj_out(image.view(*image.shape[:2], *grid))  # (B, C_out, H, W)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)


def install_pixart(model: nn.Module) -> int:
    """Swap PixArt's token-layout modules for channels-first ones; returns how many."""
    model.pos_embed = ChannelsFirstPatchEmbed(model.pos_embed)
    model.transformer_blocks = nn.ModuleList(ChannelsFirstPixArtBlock(b) for b in model.transformer_blocks)
    model.norm_out = ChannelsFirstLayerNorm(model.norm_out)
    model.proj_out = ChannelsFirstUnpatchify(model.proj_out, model.config.patch_size, model.out_channels)
    return 3 + len(model.transformer_blocks)
