"""What a denoiser step takes and returns, and the wrapper every exporter traces."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ModelMixin
from torch import nn

from edit_mobile.cli_args import check_prompt_tokens, parse_resolution
from edit_mobile.errors import UserError
from edit_mobile.models.conversion import edit_options, model_family

VAE_SCALE = 8  # pixels per latent cell, for the VAEs of PixArt-Sigma and SD3
# Prompt tokens per family: PixArt-Sigma's T5 at 120; SD3's CLIP (77) + T5 (256).
DEFAULT_PROMPT_TOKENS = {"pixart": 120, "sd3": 77 + 256}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def required_multiple(model: ModelMixin) -> int:
    """Pixels per side must be a multiple of this: VAE x patch x (EDiT compression stride)."""
    options = edit_options(model)
    return VAE_SCALE * model.config.patch_size * (options.compression_stride if options else 1)


def default_resolution(model: ModelMixin) -> tuple[int, int]:
    side = model.config.sample_size * VAE_SCALE
    return side, side


@dataclass(frozen=True)
class TransformerSignature:
    family: str
    resolution: tuple[int, int]  # pixels (H, W)
    latent_hw: tuple[int, int]
    prompt_tokens: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def of(
        cls,
        model: ModelMixin,
        height_px: int | None = None,
        width_px: int | None = None,
        batch: int = 1,
        prompt_tokens: int | None = None,
    ) -> TransformerSignature:
        family = model_family(model)
        if height_px is None:
            height_px, width_px = default_resolution(model)
        width_px = height_px if width_px is None else width_px
        parse_resolution(f"{height_px}x{width_px}")  # the same bounds as the command line
        multiple = required_multiple(model)
        if height_px % multiple or width_px % multiple:
            raise UserError(
                f"resolution {height_px}x{width_px} is not divisible by {multiple} "
                f"(VAE {VAE_SCALE} x patch {model.config.patch_size}"
                f"{' x compression stride' if multiple > VAE_SCALE * model.config.patch_size else ''}); "
                f"use a multiple of {multiple} pixels per side"
            )
        if batch < 1:
            raise UserError(f"batch {batch} must be at least 1")
        latent = (height_px // VAE_SCALE, width_px // VAE_SCALE)
        tokens = DEFAULT_PROMPT_TOKENS[family] if prompt_tokens is None else check_prompt_tokens(prompt_tokens)
        config = model.config
        inputs = [TensorSpec("hidden_states", (batch, config.in_channels, *latent))]
        if family == "pixart":
            inputs += [
                TensorSpec("encoder_hidden_states", (batch, tokens, config.caption_channels)),
                TensorSpec("encoder_attention_mask", (batch, tokens)),
            ]
        else:
            inputs += [
                TensorSpec("encoder_hidden_states", (batch, tokens, config.joint_attention_dim)),
                TensorSpec("pooled_projections", (batch, config.pooled_projection_dim)),
            ]
        inputs.append(TensorSpec("timestep", (batch,)))
        out_channels = model.out_channels if family == "pixart" else config.out_channels
        outputs = (TensorSpec("noise_pred", (batch, out_channels, *latent)),)
        return cls(family, (height_px, width_px), latent, tokens, tuple(inputs), outputs)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Plausible inputs: Gaussian latents and embeddings, a mid-schedule timestep, and
        (PixArt) a prompt mask keeping the first tokens, as a padded T5 prompt has."""
        generator = torch.Generator().manual_seed(seed)
        tensors = []
        for spec in self.inputs:
            if spec.name == "timestep":
                tensors.append(torch.rand(spec.shape, generator=generator) * 999.0)
            elif spec.name == "encoder_attention_mask":
                kept = torch.randint(1, spec.shape[1] + 1, (spec.shape[0], 1), generator=generator)
                tensors.append((torch.arange(spec.shape[1])[None] < kept).float())
            else:
                tensors.append(torch.randn(spec.shape, generator=generator))
        return tuple(tensors)


class DenoiserWrapper(nn.Module):
    """One denoiser step with positional tensor inputs in signature order -> noise prediction.

    PixArt: (hidden_states, encoder_hidden_states, encoder_attention_mask, timestep).
    SD3:    (hidden_states, encoder_hidden_states, pooled_projections, timestep).
    """

    def __init__(self, model: ModelMixin):
        super().__init__()
        self.model = model
        self.family = model_family(model)

    def forward(self, hidden_states, encoder_hidden_states, conditioning, timestep) -> torch.Tensor:
        if self.family == "pixart":
            extra = {"encoder_attention_mask": conditioning}
        else:
            extra = {"pooled_projections": conditioning}
        return self.model(
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep,
            return_dict=False,
            **extra,
        )[0]
