"""Stable Diffusion 3 / 3.5 (diffusers SD3Transformer2DModel, MMDiT-X layers included) and its
MM-EDiT student.

Inputs: latents, joint prompt embeddings (77 CLIP-L/G tokens + T5 tokens), pooled CLIP
projections, timestep. Sampler: FlowMatchEulerDiscreteScheduler with shift 3.0 (the SD3-medium
and SD3.5-medium scheduler configs). VAE: 16 latent channels, scaling 1.5305, shift 0.0609.
Prompts: 77 + 256 tokens; guidance 7.0 and 28 steps (StableDiffusion3Pipeline's defaults).
"""

from __future__ import annotations

from pathlib import Path

from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from edit_mobile.models.families.base import (
    CLIP_T5_LAYOUT,
    Family,
    TensorSpec,
    tokenizer_max_length,
)
from edit_mobile.models.sd3_mm_edit import SD3MMEDiTTransformer2DModel

CLIP_TOKENS = 77
SD3_SHIFT = 3.0

SD35_MEDIUM = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=384,
    dual_attention_layers=tuple(range(13)),
    qk_norm="rms_norm",
)

# name -> (transformer config, description); NAME-edit is the MM-EDiT student.
PRESETS = {
    "tiny-sd3": (
        {**SD35_MEDIUM, "num_layers": 2, "attention_head_dim": 16, "num_attention_heads": 4,
         "joint_attention_dim": 32, "caption_projection_dim": 64, "pooled_projection_dim": 32,
         "sample_size": 16, "pos_embed_max_size": 64, "dual_attention_layers": (0,)},
        "SD3.5 (MMDiT-X) layout, width 64, 2 layers, 128 px default: tests and the demo",
    ),
    "sd35-medium": (SD35_MEDIUM, "Stable Diffusion 3.5 Medium's transformer"),
}


class SD3Family(Family):
    name = "sd3"
    description = "Stable Diffusion 3 / 3.5 MM-DiT; MM-EDiT student"
    teacher_class = SD3Transformer2DModel
    student_class = SD3MMEDiTTransformer2DModel
    default_prompt_tokens = CLIP_TOKENS + 256
    default_steps = 28
    default_guidance = 7.0
    latent_channels = 16
    vae_scaling_factor = 1.5305
    vae_shift_factor = 0.0609
    text_encoder = CLIP_T5_LAYOUT

    def presets(self) -> dict[str, tuple[dict, str]]:
        return PRESETS

    def prompt_inputs(self, config, batch: int, tokens: int) -> list[TensorSpec]:
        return [TensorSpec("encoder_hidden_states", (batch, tokens, config.joint_attention_dim)),
                TensorSpec("pooled_projections", (batch, config.pooled_projection_dim))]

    def conditioning_input(self) -> str:
        return "pooled_projections"

    def scheduler_class(self):
        return FlowMatchEulerDiscreteScheduler

    def default_prompt_tokens_of(self, pipeline_folder: Path | None) -> int:
        """CLIP's model_max_length + T5's, at most 256 (StableDiffusion3Pipeline's default
        max_sequence_length), read from the folder's tokenizer/ and tokenizer_3/ configs."""
        if pipeline_folder is None or not (pipeline_folder / "tokenizer" / "tokenizer_config.json").is_file():
            return self.default_prompt_tokens
        clip = tokenizer_max_length(pipeline_folder / "tokenizer", CLIP_TOKENS)
        t5 = min(256, tokenizer_max_length(pipeline_folder / "tokenizer_3", 256))
        return clip + t5

    def default_scheduler(self):
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SD3_SHIFT)

    def diffusers_pipeline(self, transformer, text, vae, scheduler):
        from diffusers import StableDiffusion3Pipeline

        (tokenizer, clip_l), (tokenizer_2, clip_g) = text.clip_l, text.clip_g
        tokenizer_3, t5 = text.t5 if text.t5 is not None else (None, None)
        return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=clip_l,
                                        tokenizer=tokenizer, text_encoder_2=clip_g, tokenizer_2=tokenizer_2,
                                        text_encoder_3=t5, tokenizer_3=tokenizer_3)

    def pipeline_call_options(self, prompt_tokens: int, pipeline_folder: Path | None = None) -> dict:
        """T5's share of the prompt: what is left after CLIP's model_max_length tokens."""
        clip = CLIP_TOKENS
        if pipeline_folder is not None:
            clip = tokenizer_max_length(Path(pipeline_folder) / "tokenizer", CLIP_TOKENS)
        return {"max_sequence_length": prompt_tokens - clip}

    def diffusers_prompt_embeds(self, pipe, prompt: str, call_options: dict):
        return pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False,
                                  max_sequence_length=call_options["max_sequence_length"])[0]

    def convert(self, teacher, options):
        from edit_mobile.models.conversion import to_mm_edit

        return to_mm_edit(teacher, options)


FAMILY = SD3Family()
