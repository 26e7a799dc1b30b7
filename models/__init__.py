"""EDiT and MM-EDiT models on diffusers: attention processors, model classes, conversion,
presets, and the denoiser signature every exporter traces."""

# Loaded on first use: the CLI imports edit_mobile.models.config for `--help`, which must not pull
# in torch and diffusers (10 s) for a usage line.
from edit_mobile.safe_read import lazy_exports

_LAZY = {
    "ConvFusion": "edit_mobile.models.edit_attention",
    "DenoiserWrapper": "edit_mobile.models.signature",
    "EDiTAttnProcessor": "edit_mobile.models.edit_attention",
    "EDiTConfig": "edit_mobile.models.config",
    "MMEDiTAttnProcessor": "edit_mobile.models.mm_edit_attention",
    # diffusers' pipeline loader reads a component's base class off the library a model_index.json
    # names ("edit_mobile.models" for our students) to pick the loading method.
    "ModelMixin": "diffusers",
    "PRESETS": "edit_mobile.models.presets",
    "PixArtEDiTTransformer2DModel": "edit_mobile.models.pixart_edit",
    "SD3MMEDiTTransformer2DModel": "edit_mobile.models.sd3_mm_edit",
    "SpatialCompressor": "edit_mobile.models.edit_attention",
    "TensorSpec": "edit_mobile.models.signature",
    "TransformerSignature": "edit_mobile.models.signature",
    "build_preset": "edit_mobile.models.presets",
    "convert": "edit_mobile.models.conversion",
    "default_resolution": "edit_mobile.models.signature",
    "edit_options": "edit_mobile.models.conversion",
    "is_edit": "edit_mobile.models.conversion",
    "is_tiny": "edit_mobile.models.presets",
    "load_transformer": "edit_mobile.models.presets",
    "model_family": "edit_mobile.models.conversion",
    "parse_resolution": "edit_mobile.cli_args",
    "pipeline_folder_of": "edit_mobile.models.presets",
    "prompt_tokens_of": "edit_mobile.models.presets",
    "preset_names": "edit_mobile.models.presets",
    "relu_linear_attention": "edit_mobile.models.linear_attention",
    "to_edit": "edit_mobile.models.conversion",
    "to_mm_edit": "edit_mobile.models.conversion",
    "to_teacher": "edit_mobile.models.conversion",
}


__getattr__ = lazy_exports(__name__, _LAZY)


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
    "pipeline_folder_of",
    "preset_names",
    "prompt_tokens_of",
    "relu_linear_attention",
    "to_edit",
    "to_mm_edit",
    "to_teacher",
]
