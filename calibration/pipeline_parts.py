"""The parts of a model's text-to-image pipeline, loaded once for whoever needs all of them:
`export --pipeline` (each part becomes methods of one program) and `validate --pipeline`
(diffusers' own pipeline assembled from the same parts is the reference).

A pipeline folder gives its tokenizer, text encoder, VAE and scheduler; a tiny preset (no real
weights) gets the seeded random text encoder and VAE the rest of the toolchain uses for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edit_mobile.errors import UserError


@dataclass
class PipelineParts:
    source: str
    family: object  # edit_mobile.models.families.Family
    transformer: object  # diffusers ModelMixin
    text: object  # a calibration text encoder with tokenize() and prompt_module()
    vae: object  # the family's diffusers VAE (AutoencoderKL; SANA's AutoencoderDC)
    scheduler: object  # a diffusers scheduler
    folder: Path | None  # the pipeline folder, None for a tiny preset
    prompt_tokens: int
    without_t5: bool = False  # SD3's CLIP encoders alone

    def diffusers_pipeline(self):
        """diffusers' own pipeline class for the family, made of these parts."""
        return self.family.diffusers_pipeline(self.transformer, self.text, self.vae, self.scheduler)


def load_pipeline_parts(source: str, prompt_tokens: int | None = None, without_t5: bool = False) -> PipelineParts:
    """Every part of `source` (a preset name or a local pipeline folder); `without_t5`: SD3's
    CLIP encoders only, zeros in T5's place (StableDiffusion3Pipeline without text_encoder_3).
    Raises UserError."""
    from edit_mobile.calibration.text_encoders import folder_text_encoder, random_text_encoder
    from edit_mobile.models import is_tiny, load_transformer, pipeline_folder_of, prompt_tokens_of
    from edit_mobile.models.families import family_of
    from edit_mobile.models.families.base import CLIP_T5_LAYOUT

    transformer = load_transformer(source)
    family = family_of(transformer)
    tokens = prompt_tokens or prompt_tokens_of(source, transformer)
    folder = _pipeline_folder(source) or pipeline_folder_of(source)
    specs = {spec.name: spec.shape for spec in family.prompt_inputs(transformer.config, 1, tokens)}
    width, pooled = specs["encoder_hidden_states"][-1], specs.get("pooled_projections", (None,))[-1]
    if folder is not None and (folder / "text_encoder").is_dir() and (folder / "vae").is_dir():
        text = folder_text_encoder(family.name, folder, tokens, width)
        from edit_mobile.models.vae import folder_vae

        vae = folder_vae(folder / "vae", family.name)
    elif is_tiny(source):
        from edit_mobile.models.vae import tiny_vae

        folder, text, vae = None, random_text_encoder(family.name, tokens, width, pooled), tiny_vae(family.name)
    else:
        raise UserError(f"{source} is not a pipeline folder (text_encoder/, tokenizer/, vae/, transformer/): "
                        "pass the diffusers pipeline folder the model belongs to")
    if without_t5:
        if family.text_encoder != CLIP_T5_LAYOUT:
            raise UserError(f"--without-t5 applies to SD3 models, whose CLIP encoders can stand alone; {source} is "
                            f"a {family.name} model: drop it")
        text = text.without_t5()
    return PipelineParts(source, family, transformer.eval(), text, vae, family.scheduler(folder), folder, tokens,
                         without_t5)


def _pipeline_folder(source: str) -> Path | None:
    path = Path(str(source))
    return path if (path / "model_index.json").is_file() else None
