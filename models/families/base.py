"""What a model family knows, as one object: its classes, the denoiser's inputs and how they
map to the diffusers forward, its sampler's defaults, its latent space and its resolution rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# A pipeline folder's own recommended sampling (steps, guidance), written by the training that
# made it; diffusers has no place for it and ignores the file.
SAMPLING_FILE = "edit_mobile_sampling.json"
# `Family.text_encoder` of SD3's three encoders (CLIP-L, CLIP-G, T5), built by calibration's own
# class; any other layout is one encoder from `text_encoder_parts`.
CLIP_T5_LAYOUT = "clip+t5"


@dataclass(frozen=True)
class TensorSpec:
    """One denoiser input or output: its name (as the diffusers forward calls it) and shape."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


class Family:
    """Subclasses live one a file in models/families/ and set the class attributes."""

    name: str = ""
    description: str = ""
    teacher_class: type = object
    student_class: type = object
    # Prompt and sampling defaults: those of the family's diffusers pipeline.
    default_prompt_tokens: int = 0
    default_steps: int = 0
    default_guidance: float = 0.0
    # Latent space of the family's VAE: pixels per latent cell (side), channels, scaling.
    vae_scale: int = 8
    latent_channels: int = 0
    vae_scaling_factor: float = 1.0
    vae_shift_factor: float | None = None
    # The text encoder layout ("clip+t5": SD3's three encoders; any other: one encoder whose last
    # hidden states and mask are the prompt, its parts from `text_encoder_parts`), and the kind
    # the calibration manifest records.
    text_encoder: str = ""
    # Compression stride every resolution must allow, teachers included, so that a teacher and
    # its EDiT student are exported, calibrated and compared at the same sizes.
    student_compression_stride: int = 2

    def presets(self) -> dict[str, tuple[dict, str]]:
        """Named models of this family built from their configs: name -> (transformer config,
        description). The student of each is NAME-edit."""
        return {}

    # --- the denoiser's inputs --------------------------------------------------------------

    def prompt_inputs(self, config, batch: int, tokens: int) -> list[TensorSpec]:
        """The prompt-level inputs (embeddings, mask or pooled vector) in call order."""
        raise NotImplementedError

    def sampling_defaults(self, pipeline_folder: Path | None) -> tuple[int, float]:
        """(steps, guidance): the folder's own recommendation (SAMPLING_FILE) where it has one,
        else the family pipeline's defaults."""
        steps, guidance = self.default_steps, self.default_guidance
        path = Path(pipeline_folder) / SAMPLING_FILE if pipeline_folder is not None else None
        if path is None or not path.is_file():
            return steps, guidance
        return read_sampling(path, steps, guidance)

    def default_prompt_tokens_of(self, pipeline_folder: Path | None) -> int:
        """The prompt length of a model that comes with this pipeline folder (None: no folder)."""
        return self.default_prompt_tokens

    def out_channels(self, model) -> int:
        return model.config.out_channels

    def forward_kwargs(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named denoiser inputs -> keyword arguments of the diffusers forward."""
        return dict(named)

    def conditioning_input(self) -> str:
        """The name of the input beside hidden_states / encoder_hidden_states / timestep."""
        raise NotImplementedError

    # --- conversion and sampling ------------------------------------------------------------

    def convert(self, teacher, options):
        raise NotImplementedError

    def scheduler_class(self):
        raise NotImplementedError

    def default_scheduler(self):
        raise NotImplementedError

    def scheduler(self, model_source=None):
        """The pipeline folder's own scheduler (scheduler/ in or beside the model folder), else
        the family's default."""
        cls = self.scheduler_class()
        if model_source is not None and Path(str(model_source)).is_dir():
            source = Path(str(model_source))
            for folder in (source / "scheduler", source.parent / "scheduler"):
                if (folder / "scheduler_config.json").is_file():
                    return cls.from_config(cls.load_config(folder))
        return self.default_scheduler()

    def diffusers_pipeline(self, transformer, text, vae, scheduler):
        """diffusers' own text-to-image pipeline of this family over the given parts (`text`: a
        calibration text encoder), the reference a pipeline artifact is validated against."""
        raise NotImplementedError

    def pipeline_call_options(self, prompt_tokens: int, pipeline_folder: Path | None = None) -> dict:
        """Keyword arguments that make the diffusers pipeline encode and draw as an artifact does
        (prompts `prompt_tokens` long in all; the folder's tokenizers fix how they split)."""
        return {}

    def diffusers_prompt_embeds(self, pipe, prompt: str, call_options: dict):
        """diffusers' own encoding of one prompt without guidance: the encoder_hidden_states the
        denoiser gets, (1, T, D)."""
        raise NotImplementedError

    def resolution_multiple(self, model, compression_stride: int | None = None) -> int:
        """Pixels per side must be a multiple of this: VAE x patch x compression stride."""
        stride = max(self.student_compression_stride, compression_stride or 1)
        return self.vae_scale * model.config.patch_size * stride

    def vae_shift(self, vae_config) -> float:
        """The shift this family's pipeline applies between the VAE and model latents: the VAE's
        shift_factor for families whose pipeline uses one (SD3), 0 otherwise (PixArt's pipeline
        never does, even with a VAE that carries one, like the shared shapes VAE)."""
        if self.vae_shift_factor is None:
            return 0.0
        return getattr(vae_config, "shift_factor", None) or 0.0

    def vae_class(self):
        """The diffusers class of the family's VAE (what a pipeline folder's vae/ holds)."""
        from diffusers import AutoencoderKL

        return AutoencoderKL

    def tiny_vae(self):
        """A small random VAE in this family's latent space, for the tiny presets (no real weights;
        edit_mobile.models.vae.tiny_vae seeds it): an AutoencoderKL, 4 levels = 8x."""
        from diffusers import AutoencoderKL

        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 32, 32),
            layers_per_block=1,
            latent_channels=self.latent_channels,
            norm_num_groups=8,
            **self.vae_scaling(),
        )

    def vae_scaling(self) -> dict[str, float]:
        scaling = {"scaling_factor": self.vae_scaling_factor}
        if self.vae_shift_factor is not None:
            scaling["shift_factor"] = self.vae_shift_factor
        return scaling


def tokenizer_max_length(folder: Path, default: int) -> int:
    """The model_max_length a tokenizer folder's tokenizer_config.json states, else `default`."""
    import json

    try:
        value = json.loads((folder / "tokenizer_config.json").read_text()).get("model_max_length", default)
    except (OSError, ValueError):
        return default
    return value if isinstance(value, int) and 0 < value <= 4096 else default


def read_sampling(path: Path, steps: int, guidance: float) -> tuple[int, float]:
    import json

    from edit_mobile.errors import UserError

    try:
        data = json.loads(path.read_text())
        steps, guidance = int(data.get("steps", steps)), float(data.get("guidance", guidance))
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a sampling file ({err}); it holds {{\"steps\": N, \"guidance\": G}}: "
                        "fix or delete it") from err
    if not (1 <= steps <= 1000 and 0.0 <= guidance <= 100.0):
        raise UserError(f"{path}: steps {steps} / guidance {guidance} out of range (1-1000, 0-100); fix or delete it")
    return steps, guidance


class MaskedPromptFamily(Family):
    """A family conditioned on prompt embeddings and their attention mask (PixArt, SANA), its
    prompt length the folder tokenizer's, at most the pipeline's max_sequence_length."""

    def prompt_inputs(self, config, batch: int, tokens: int) -> list[TensorSpec]:
        return [TensorSpec("encoder_hidden_states", (batch, tokens, config.caption_channels)),
                TensorSpec("encoder_attention_mask", (batch, tokens))]

    def default_prompt_tokens_of(self, pipeline_folder: Path | None) -> int:
        """A folder whose tokenizer reads shorter prompts (the shapes world's: 32) needs no more."""
        if pipeline_folder is None:
            return self.default_prompt_tokens
        return min(self.default_prompt_tokens, tokenizer_max_length(pipeline_folder / "tokenizer", self.default_prompt_tokens))

    def conditioning_input(self) -> str:
        return "encoder_attention_mask"

    # --- the text encoder: one tokenizer and one encoder ---------------------------------------

    def text_encoder_parts(self, folder: Path):
        """(tokenizer, encoder) of a pipeline folder, loaded in float32 and padding on the right."""
        raise NotImplementedError

    def random_text_encoder_parts(self, width: int, seed: int = 0):
        """(tokenizer, encoder) of output width `width`, seeded, for the tiny presets."""
        raise NotImplementedError
