"""EDiT and MM-EDiT models on diffusers: attention processors, model classes, conversion,
presets, and the denoiser signature every exporter traces."""

from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.conversion import (
    convert,
    edit_options,
    is_edit,
    model_family,
    to_edit,
    to_mm_edit,
    to_teacher,
)
from edit_mobile.models.edit_attention import ConvFusion, EDiTAttnProcessor, SpatialCompressor
from edit_mobile.models.linear_attention import relu_linear_attention
from edit_mobile.models.mm_edit_attention import MMEDiTAttnProcessor
from edit_mobile.models.pixart_edit import PixArtEDiTTransformer2DModel
from edit_mobile.models.presets import (
    PRESETS,
    build_preset,
    is_tiny,
    load_transformer,
    preset_names,
)
from edit_mobile.models.sd3_mm_edit import SD3MMEDiTTransformer2DModel
from edit_mobile.models.signature import (
    DenoiserWrapper,
    TensorSpec,
    TransformerSignature,
    default_resolution,
    parse_resolution,
)

__all__ = [
    "PRESETS",
    "ConvFusion",
    "DenoiserWrapper",
    "EDiTAttnProcessor",
    "EDiTConfig",
    "MMEDiTAttnProcessor",
    "PixArtEDiTTransformer2DModel",
    "SD3MMEDiTTransformer2DModel",
    "SpatialCompressor",
    "TensorSpec",
    "TransformerSignature",
    "build_preset",
    "is_tiny",
    "convert",
    "default_resolution",
    "edit_options",
    "is_edit",
    "load_transformer",
    "model_family",
    "parse_resolution",
    "preset_names",
    "relu_linear_attention",
    "to_edit",
    "to_mm_edit",
    "to_teacher",
]
