"""MM-EDiT for Stable Diffusion 3 / 3.5: SD3's transformer with hybrid joint attention.

Every joint attention (`attn`) uses `MMEDiTAttnProcessor`; SD3.5's MMDiT-X layers also have
an image-only self-attention (`attn2`), which becomes plain EDiT attention.
"""

from __future__ import annotations

from diffusers import SD3Transformer2DModel
from diffusers.configuration_utils import register_to_config

from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.edit_attention import EDiTAttnProcessor
from edit_mobile.models.mm_edit_attention import MMEDiTAttnProcessor
from edit_mobile.models.token_grid import TokenGridForward


class SD3MMEDiTTransformer2DModel(TokenGridForward, SD3Transformer2DModel):
    """SD3Transformer2DModel with MM-EDiT attention; options recorded as `edit_config`."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 128,
        patch_size: int = 2,
        in_channels: int = 16,
        num_layers: int = 18,
        attention_head_dim: int = 64,
        num_attention_heads: int = 18,
        joint_attention_dim: int = 4096,
        caption_projection_dim: int = 1152,
        pooled_projection_dim: int = 2048,
        out_channels: int = 16,
        pos_embed_max_size: int = 96,
        dual_attention_layers: tuple[int, ...] = (),
        qk_norm: str | None = None,
        edit_config: dict | None = None,
    ):
        super().__init__(
            sample_size=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            num_layers=num_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim,
            caption_projection_dim=caption_projection_dim,
            pooled_projection_dim=pooled_projection_dim,
            out_channels=out_channels,
            pos_embed_max_size=pos_embed_max_size,
            dual_attention_layers=dual_attention_layers,
            qk_norm=qk_norm,
        )
        options = EDiTConfig.from_dict(edit_config)
        width = num_attention_heads * attention_head_dim
        for block in self.transformer_blocks:
            block.attn.set_processor(MMEDiTAttnProcessor(width, options))
            if block.attn2 is not None:
                block.attn2.set_processor(EDiTAttnProcessor(width, options))
