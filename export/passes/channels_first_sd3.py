"""SD3 / SD3.5 (and the MM-EDiT student) in the channels-first layout: joint block and forward.

The adaptive-norm linears act on the (B, C) conditioning and stay Linear; their outputs become
(B, C, 1, 1) modulations. Everything on image or prompt tokens is channels-first.
"""

from __future__ import annotations

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.normalization import AdaLayerNormContinuous, SD35AdaLayerNormZeroX
from torch import nn

from edit_mobile.export.passes.channels_first_layers import (
    ChannelsFirstLayerNorm,
    ChannelsFirstPatchEmbed,
    ChannelsFirstUnpatchify,
    per_channel,
)
from edit_mobile.models.token_grid import latent_token_grid, set_token_grid


class ChannelsFirstAdaNorm(nn.Module):
    """AdaLayerNormZero / SD35AdaLayerNormZeroX / AdaLayerNormContinuous on (B, C, 1, S).

    Returns the normalised input and the modulations, each (B, C, 1, 1), in the order of the
    module's chunks: 6 (zero), 9 (zero, dual attention) or (scale, shift) (continuous).
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.continuous = isinstance(norm, AdaLayerNormContinuous)
        self.chunks = 2 if self.continuous else 9 if isinstance(norm, SD35AdaLayerNormZeroX) else 6
        self.linear = norm.linear  # on (B, C) conditioning: stays a Linear
        self.norm = ChannelsFirstLayerNorm(norm.norm)

    def forward(self, image: torch.Tensor, conditioning: torch.Tensor):
        emb = self.linear(torch.nn.functional.silu(conditioning).to(image.dtype))  # (B, k*C)
        return self.norm(image), [per_channel(part) for part in emb.chunk(self.chunks, dim=1)]

    def modulate(self, image: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """AdaLayerNormContinuous: norm(x) * (1 + scale) + shift."""
        normed, (scale, shift) = self(image, conditioning)
        return normed * (1 + scale) + shift


class ChannelsFirstJointBlock(nn.Module):
    """JointTransformerBlock (SD3, SD3.5 MMDiT-X) on (B, C, 1, S) image and (B, C, 1, T) prompt."""

    def __init__(self, block: nn.Module):
        super().__init__()
        if getattr(block, "_chunk_size", None) is not None:
            raise ValueError("channels-first joint block: chunked feed-forward is not supported")
        self.dual = block.use_dual_attention
        self.context_pre_only = block.context_pre_only
        self.norm1 = ChannelsFirstAdaNorm(block.norm1)
        self.norm1_context = ChannelsFirstAdaNorm(block.norm1_context)
        self.attn, self.attn2, self.ff = block.attn, block.attn2, block.ff
        self.norm2 = ChannelsFirstLayerNorm(block.norm2)
        if not self.context_pre_only:
            self.norm2_context = ChannelsFirstLayerNorm(block.norm2_context)
            self.ff_context = block.ff_context

    def forward(self, image, prompt, temb):
        """image: (B, C, 1, S), prompt: (B, C, 1, T), temb: (B, C) -> (prompt or None, image)."""
        normed, mods = self.norm1(image, temb)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods[:6]
        if self.context_pre_only:
            norm_prompt = self.norm1_context.modulate(prompt, temb)
        else:
            normed_prompt, context_mods = self.norm1_context(prompt, temb)
            c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = context_mods
            norm_prompt = normed_prompt * (1 + c_scale_msa) + c_shift_msa

        attn_out, prompt_out = self.attn(normed * (1 + scale_msa) + shift_msa, encoder_hidden_states=norm_prompt)
        image = image + gate_msa * attn_out
        if self.dual:
            shift_msa2, scale_msa2, gate_msa2 = mods[6:]
            image = image + gate_msa2 * self.attn2(normed * (1 + scale_msa2) + shift_msa2)
        image = image + gate_mlp * self.ff(self.norm2(image) * (1 + scale_mlp) + shift_mlp)
        if self.context_pre_only:
            return None, image
        prompt = prompt + c_gate_msa * prompt_out
        ff_prompt = self.ff_context(self.norm2_context(prompt) * (1 + c_scale_mlp) + c_shift_mlp)
        return prompt + c_gate_mlp * ff_prompt, image


class ChannelsFirstSD3Forward:
    """Mixin overriding SD3Transformer2DModel.forward for the modules `install_sd3` put in place."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        pooled_projections: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        block_controlnet_hidden_states=None,
        joint_attention_kwargs=None,
        return_dict: bool = True,
        skip_layers=None,
    ):
        if block_controlnet_hidden_states is not None or joint_attention_kwargs or skip_layers:
            raise ValueError("channels-first SD3 takes no controlnet states, attention kwargs or skipped layers")
        grid = latent_token_grid(*hidden_states.shape[-2:], self.config.patch_size)
        set_token_grid(self, grid)  # MM-EDiT processors need it; a teacher has none
        image = self.pos_embed(hidden_states)  # (B, C, 1, S)
        temb = self.time_text_embed(timestep, pooled_projections)  # (B, C)
        prompt = encoder_hidden_states.transpose(1, 2).unsqueeze(2)  # (B, joint, 1, T): the one transpose
        prompt = self.context_embedder(prompt)  # (B, C, 1, T)
        for block in self.transformer_blocks:
            prompt, image = block(image, prompt, temb)
        image = self.norm_out.modulate(image, temb)
        output = self.proj_out(image.view(*image.shape[:2], *grid))  # (B, C_out, H, W)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)


def install_sd3(model: nn.Module) -> int:
    """Swap SD3's token-layout modules for channels-first ones; returns how many."""
    model.pos_embed = ChannelsFirstPatchEmbed(model.pos_embed)
    model.transformer_blocks = nn.ModuleList(ChannelsFirstJointBlock(b) for b in model.transformer_blocks)
    model.norm_out = ChannelsFirstAdaNorm(model.norm_out)
    model.proj_out = ChannelsFirstUnpatchify(model.proj_out, model.config.patch_size, model.out_channels)
    return 3 + len(model.transformer_blocks)
