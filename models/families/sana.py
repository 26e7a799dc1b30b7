"""SANA (diffusers SanaTransformer2DModel) and its EDiT student.

SANA is already a linear-attention DiT: its self-attention is ReLU linear attention over every
image token (SanaLinearAttnProcessor2_0), so the model exports as it is. Its EDiT student puts
ConvFusion queries and the Spatial Compressor's keys and values on that same ReLU kernel.

Inputs: latents, Gemma-2 prompt embeddings with their attention mask, timestep (as PixArt's).
Sampler: flow DPM-Solver++ 2M (DPMSolverMultistepScheduler with flow sigmas, shift 3.0, flow
prediction: the scheduler config of the Sana_*_diffusers pipelines). VAE: DC-AE f32c32 (32x
downsampling, 32 latent channels, scaling 0.41407, no shift). Prompts: 300 Gemma-2 tokens, no
complex human instruction; guidance 4.5 and 20 steps (SanaPipeline's defaults).
"""

from __future__ import annotations

from pathlib import Path

from diffusers import DPMSolverMultistepScheduler, SanaTransformer2DModel
from diffusers.configuration_utils import register_to_config

from edit_mobile.errors import UserError
from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.edit_attention import EDiTAttnProcessor
from edit_mobile.models.families.base import MaskedPromptFamily
from edit_mobile.models.token_grid import TokenGridForward

SANA_FLOW_SHIFT = 3.0


class SanaEDiTTransformer2DModel(TokenGridForward, SanaTransformer2DModel):
    """SanaTransformer2DModel whose attn1 layers use `EDiTAttnProcessor` in place of SANA's
    ReLU linear attention; cross-attention (attn2) and the GLUMBConv feed-forward are unchanged.
    The EDiT options are recorded in the config (`edit_config`)."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 32,
        out_channels: int | None = 32,
        num_attention_heads: int = 70,
        attention_head_dim: int = 32,
        num_layers: int = 20,
        num_cross_attention_heads: int | None = 20,
        cross_attention_head_dim: int | None = 112,
        cross_attention_dim: int | None = 2240,
        caption_channels: int = 2304,
        mlp_ratio: float = 2.5,
        dropout: float = 0.0,
        attention_bias: bool = False,
        sample_size: int = 32,
        patch_size: int = 1,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        interpolation_scale: int | None = None,
        guidance_embeds: bool = False,
        guidance_embeds_scale: float = 0.1,
        qk_norm: str | None = None,
        timestep_scale: float = 1.0,
        edit_config: dict | None = None,
    ):
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            num_layers=num_layers,
            num_cross_attention_heads=num_cross_attention_heads,
            cross_attention_head_dim=cross_attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            caption_channels=caption_channels,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            attention_bias=attention_bias,
            sample_size=sample_size,
            patch_size=patch_size,
            norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps,
            interpolation_scale=interpolation_scale,
            guidance_embeds=guidance_embeds,
            guidance_embeds_scale=guidance_embeds_scale,
            qk_norm=qk_norm,
            timestep_scale=timestep_scale,
        )
        options = EDiTConfig.from_dict(edit_config)
        width = num_attention_heads * attention_head_dim
        for block in self.transformer_blocks:
            block.attn1.set_processor(EDiTAttnProcessor(width, options))

# transformer/config.json of Efficient-Large-Model/Sana_1600M_1024px_diffusers and
# Sana_600M_512px_diffusers, written from the published configs as we know them (they cannot be
# downloaded here) and SanaTransformer2DModel's defaults: no positional embedding, patch 1 on the
# DC-AE's 32x latents; 600M is width 1152 (36 x 32) over 28 layers, 1600M width 2240 over 20.
SANA_1600M = dict(
    in_channels=32,
    out_channels=32,
    num_attention_heads=70,
    attention_head_dim=32,
    num_layers=20,
    num_cross_attention_heads=20,
    cross_attention_head_dim=112,
    cross_attention_dim=2240,
    caption_channels=2304,
    mlp_ratio=2.5,
    dropout=0.0,
    attention_bias=False,
    sample_size=32,
    patch_size=1,
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    interpolation_scale=None,
    guidance_embeds=False,
    qk_norm=None,
    timestep_scale=1.0,
)
SANA_600M = {**SANA_1600M, "num_attention_heads": 36, "num_layers": 28, "num_cross_attention_heads": 16,
             "cross_attention_head_dim": 72, "cross_attention_dim": 1152, "sample_size": 16}

# name -> (transformer config, description); NAME-edit is the EDiT student.
PRESETS = {
    "tiny-sana": (
        {**SANA_600M, "num_attention_heads": 4, "attention_head_dim": 16, "num_layers": 2,
         "num_cross_attention_heads": 4, "cross_attention_head_dim": 16, "cross_attention_dim": 64,
         "caption_channels": 32, "sample_size": 4},
        "SANA layout, width 64, 2 layers, 128 px default (4 x 4 latents): tests",
    ),
    "sana-600m-512": (SANA_600M, "SANA 600M at 512 px"),
    "sana-1600m-1024": (SANA_1600M, "SANA 1600M at 1024 px"),
}


class SanaFamily(MaskedPromptFamily):
    name = "sana"
    description = "SANA linear-attention DiT; EDiT student"
    teacher_class = SanaTransformer2DModel
    student_class = SanaEDiTTransformer2DModel
    default_prompt_tokens = 300
    default_steps = 20
    default_guidance = 4.5
    vae_scale = 32
    latent_channels = 32
    vae_scaling_factor = 0.41407
    text_encoder = "gemma2"

    def presets(self) -> dict[str, tuple[dict, str]]:
        return PRESETS

    def out_channels(self, model) -> int:
        return model.config.out_channels or model.config.in_channels

    def resolution_multiple(self, model, compression_stride: int | None = None) -> int:
        """VAE x patch (32 for every published SANA): the student's compressor pads odd token
        grids (ceil(h / s) keys), so it takes the teacher's sizes without the stride factor."""
        return self.vae_scale * model.config.patch_size

    def vae_class(self):
        from diffusers import AutoencoderDC

        return AutoencoderDC

    def tiny_vae(self):
        """A DC-AE of 6 levels (5 pixel-shuffle upsamplings = 32x), narrow and attention-free."""
        from diffusers import AutoencoderDC

        levels = 6
        return AutoencoderDC(latent_channels=self.latent_channels, attention_head_dim=8,
                             encoder_block_types=("ResBlock",) * levels, decoder_block_types=("ResBlock",) * levels,
                             encoder_block_out_channels=(8, 8, 16, 16, 32, 32),
                             decoder_block_out_channels=(8, 8, 16, 16, 32, 32),
                             encoder_layers_per_block=(1,) * levels, decoder_layers_per_block=(1,) * levels,
                             encoder_qkv_multiscales=((),) * levels, decoder_qkv_multiscales=((),) * levels,
                             scaling_factor=self.vae_scaling_factor)

    def text_encoder_parts(self, folder: Path):
        """Gemma-2 (SanaPipeline's): its tokenizer pads left, which the pipeline turns right."""
        import torch
        from transformers import AutoTokenizer, Gemma2Model

        if not (folder / "text_encoder" / "config.json").is_file():
            raise UserError(f"{folder} has no text_encoder/config.json; pass a SANA pipeline folder "
                            "(text_encoder/, tokenizer/)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
            encoder = Gemma2Model.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load the Gemma-2 encoder from {folder}: {' '.join(str(err).split())}") from err
        tokenizer.padding_side = "right"
        return tokenizer, encoder.eval()

    def random_text_encoder_parts(self, width: int, seed: int = 0):
        """ByT5's byte tokenizer and a 2-layer Gemma2Model of hidden size `width`."""
        import torch
        from transformers import ByT5Tokenizer, Gemma2Config, Gemma2Model

        tokenizer = ByT5Tokenizer()
        config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * min(width, 256),
                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                              query_pre_attn_scalar=16, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id, bos_token_id=None, attn_implementation="eager")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = Gemma2Model(config)
        return tokenizer, encoder.eval()

    def scheduler_class(self):
        return DPMSolverMultistepScheduler

    def default_scheduler(self):
        return DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=SANA_FLOW_SHIFT,
                                           prediction_type="flow_prediction", algorithm_type="dpmsolver++",
                                           solver_order=2)

    def diffusers_pipeline(self, transformer, text, vae, scheduler):
        from diffusers import SanaPipeline

        return SanaPipeline(tokenizer=text.tokenizer, text_encoder=text.text_encoder, vae=vae,
                            transformer=transformer, scheduler=scheduler)

    def pipeline_call_options(self, prompt_tokens: int, pipeline_folder: Path | None = None) -> dict:
        # No complex human instruction (the pipeline's default prefixes a long chat prompt), no
        # caption cleaning and no resolution binning: the prompt alone, `prompt_tokens` long.
        return {"use_resolution_binning": False, "clean_caption": False, "max_sequence_length": prompt_tokens,
                "complex_human_instruction": None}

    def diffusers_prompt_embeds(self, pipe, prompt: str, call_options: dict):
        return pipe.encode_prompt(prompt, do_classifier_free_guidance=False, num_images_per_prompt=1,
                                  max_sequence_length=call_options["max_sequence_length"], clean_caption=False,
                                  complex_human_instruction=None)[0]

    def convert(self, teacher, options):
        # SANA's ReLU linear attention -> EDiT's: the same kernel, with ConvFusion queries and
        # compressed keys / values; every SANA weight is reused.
        from edit_mobile.models.conversion import student_of

        return student_of(teacher, self.name, options)


FAMILY = SanaFamily()
