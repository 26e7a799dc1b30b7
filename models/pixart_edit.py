"""EDiT for PixArt-Sigma: PixArt's transformer with EDiT attention in every self-attention (attn1).

Cross-attention to the prompt (attn2) stays softmax attention: it is O(N T), already linear.
"""

from __future__ import annotations

from diffusers import PixArtTransformer2DModel
from diffusers.configuration_utils import register_to_config

from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.edit_attention import EDiTAttnProcessor
from edit_mobile.models.token_grid import TokenGridForward


class PixArtEDiTTransformer2DModel(TokenGridForward, PixArtTransformer2DModel):
    """PixArtTransformer2DModel whose attn1 layers use `EDiTAttnProcessor`.

    The EDiT options are recorded in the config (`edit_config`), so `save_pretrained` /
    `from_pretrained` round-trip the whole student in one folder.
    """

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: int | None = 8,
        num_layers: int = 28,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        cross_attention_dim: int | None = 1152,
        attention_bias: bool = True,
        sample_size: int = 128,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int | None = 1000,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_single",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        interpolation_scale: int | None = None,
        use_additional_conditions: bool | None = None,
        caption_channels: int | None = None,
        attention_type: str | None = "default",
        edit_config: dict | None = None,
    ):
        super().__init__(
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers=num_layers,
            dropout=dropout,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=cross_attention_dim,
            attention_bias=attention_bias,
            sample_size=sample_size,
            patch_size=patch_size,
            activation_fn=activation_fn,
            num_embeds_ada_norm=num_embeds_ada_norm,
            upcast_attention=upcast_attention,
            norm_type=norm_type,
            norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps,
            interpolation_scale=interpolation_scale,
            use_additional_conditions=use_additional_conditions,
            caption_channels=caption_channels,
            attention_type=attention_type,
        )
        options = EDiTConfig.from_dict(edit_config)
        width = num_attention_heads * attention_head_dim
        for block in self.transformer_blocks:
            block.attn1.set_processor(EDiTAttnProcessor(width, options))
