"""PixArt-Sigma (diffusers PixArtTransformer2DModel) and its EDiT student.

Inputs: latents, T5 prompt embeddings with their attention mask, timestep. Sampler: DPM-Solver++
2M (DPMSolverMultistepScheduler's defaults, as PixArt-Sigma's diffusers conversion ships it);
the transformer also predicts a learned variance, dropped before the step. VAE: SDXL's
(4 latent channels, scaling 0.13025). Prompts: 300 T5 tokens (PixArtSigmaPipeline's
max_sequence_length); guidance 4.5 and 20 steps (the pipeline's defaults).
"""

from __future__ import annotations

from pathlib import Path

from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

from edit_mobile.models.families.base import MaskedPromptFamily
from edit_mobile.models.pixart_edit import PixArtEDiTTransformer2DModel
from edit_mobile.models.text_encoders import random_t5, t5_parts

PIXART_SIGMA_XL = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    cross_attention_dim=1152,
    caption_channels=4096,
    patch_size=2,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    use_additional_conditions=False,
)

# name -> (transformer config, description): models built from their configs with random
# weights (nothing here reaches a model hub); NAME-edit is the student.
PRESETS = {
    "tiny-pixart": (
        {**PIXART_SIGMA_XL, "num_attention_heads": 4, "attention_head_dim": 16, "num_layers": 2,
         "cross_attention_dim": 64, "caption_channels": 32, "sample_size": 16},
        "PixArt-Sigma layout, width 64, 2 layers, 128 px default: tests and the demo",
    ),
    "pixart-sigma-xl-512": ({**PIXART_SIGMA_XL, "sample_size": 64}, "PixArt-Sigma XL/2 at 512 px"),
    "pixart-sigma-xl-1024": ({**PIXART_SIGMA_XL, "sample_size": 128}, "PixArt-Sigma XL/2 at 1024 px"),
}


class PixArtFamily(MaskedPromptFamily):
    name = "pixart"
    description = "PixArt-Sigma DiT; EDiT student"
    teacher_class = PixArtTransformer2DModel
    student_class = PixArtEDiTTransformer2DModel
    default_prompt_tokens = 300
    default_steps = 20
    default_guidance = 4.5
    latent_channels = 4
    vae_scaling_factor = 0.13025
    text_encoder = "t5"

    def presets(self) -> dict[str, tuple[dict, str]]:
        return PRESETS

    def out_channels(self, model) -> int:
        return model.out_channels  # twice the latent channels: noise and learned variance

    def text_encoder_parts(self, folder: Path):
        return t5_parts(folder)

    def random_text_encoder_parts(self, width: int, seed: int = 0):
        model, tokenizer = random_t5(width, seed)
        return tokenizer, model

    def scheduler_class(self):
        return DPMSolverMultistepScheduler

    def default_scheduler(self):
        return DPMSolverMultistepScheduler()

    def diffusers_pipeline(self, transformer, text, vae, scheduler):
        from diffusers import PixArtSigmaPipeline

        return PixArtSigmaPipeline(tokenizer=text.tokenizer, text_encoder=text.text_encoder, vae=vae,
                                   transformer=transformer, scheduler=scheduler)

    def pipeline_call_options(self, prompt_tokens: int, pipeline_folder: Path | None = None) -> dict:
        # No caption cleaning (bs4/ftfy) and no resolution binning: the artifact draws at the
        # size asked, its prompt lower-cased and stripped, `prompt_tokens` long.
        return {"use_resolution_binning": False, "clean_caption": False, "max_sequence_length": prompt_tokens}

    def diffusers_prompt_embeds(self, pipe, prompt: str, call_options: dict):
        return pipe.encode_prompt(prompt, do_classifier_free_guidance=False, num_images_per_prompt=1,
                                  max_sequence_length=call_options["max_sequence_length"], clean_caption=False)[0]

    def convert(self, teacher, options):
        from edit_mobile.models.conversion import to_edit

        return to_edit(teacher, options)


FAMILY = PixArtFamily()
