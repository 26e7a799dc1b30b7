"""What a denoiser step takes and returns, and the wrapper every exporter traces."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ModelMixin
from torch import nn

from edit_mobile.cli_args import check_prompt_tokens, parse_resolution
from edit_mobile.errors import UserError
from edit_mobile.models.conversion import edit_options
from edit_mobile.models.families import family_of
from edit_mobile.models.families.base import TensorSpec


def required_multiple(model: ModelMixin) -> int:
    """Pixels per side must be a multiple of this: the family's rule (VAE x patch x the EDiT
    compression stride, for teachers too, so that both forms take the same sizes)."""
    options = edit_options(model)
    return family_of(model).resolution_multiple(model, options.compression_stride if options else None)


def default_resolution(model: ModelMixin) -> tuple[int, int]:
    side = model.config.sample_size * family_of(model).vae_scale
    return side, side


@dataclass(frozen=True)
class TransformerSignature:
    family: str
    resolution: tuple[int, int]  # pixels (H, W)
    latent_hw: tuple[int, int]
    prompt_tokens: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    patch_size: int = 1

    @classmethod
    def of(
        cls,
        model: ModelMixin,
        height_px: int | None = None,
        width_px: int | None = None,
        batch: int = 1,
        prompt_tokens: int | None = None,
    ) -> TransformerSignature:
        family = family_of(model)
        if height_px is None:
            height_px, width_px = default_resolution(model)
        width_px = height_px if width_px is None else width_px
        parse_resolution(f"{height_px}x{width_px}")  # the same bounds as the command line
        multiple, vae_scale = required_multiple(model), family.vae_scale
        if height_px % multiple or width_px % multiple:
            raise UserError(
                f"resolution {height_px}x{width_px} is not divisible by {multiple} "
                f"(VAE {vae_scale} x patch {model.config.patch_size} x compression stride "
                f"{multiple // (vae_scale * model.config.patch_size)}); "
                f"use a multiple of {multiple} pixels per side, e.g. "
                f"{nearest_multiple(height_px, multiple)}x{nearest_multiple(width_px, multiple)}"
            )
        if batch < 1:
            raise UserError(f"batch {batch} must be at least 1")
        latent = (height_px // vae_scale, width_px // vae_scale)
        tokens = family.default_prompt_tokens if prompt_tokens is None else check_prompt_tokens(prompt_tokens)
        config = model.config
        inputs = [TensorSpec("hidden_states", (batch, config.in_channels, *latent)),
                  *family.prompt_inputs(config, batch, tokens),
                  TensorSpec("timestep", (batch,))]
        outputs = (TensorSpec("noise_pred", (batch, family.out_channels(model), *latent)),)
        return cls(family.name, (height_px, width_px), latent, tokens, tuple(inputs), outputs, config.patch_size)

    @property
    def image_tokens(self) -> int:
        """Image tokens the transformer sees at this resolution (latent pixels / patch area)."""
        return (self.latent_hw[0] // self.patch_size) * (self.latent_hw[1] // self.patch_size)

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
    """One denoiser step with positional tensor inputs in signature order -> noise prediction:
    (hidden_states, the family's prompt inputs..., timestep), passed to the diffusers forward
    by name (the family maps them)."""

    def __init__(self, model: ModelMixin):
        super().__init__()
        self.model = model
        self.family = family_of(model)
        self.input_names = ["hidden_states", *(spec.name for spec in self.family.prompt_inputs(model.config, 1, 1)),
                            "timestep"]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"the denoiser takes {', '.join(self.input_names)}; got {len(inputs)} tensors")
        named = self.family.forward_kwargs(dict(zip(self.input_names, inputs, strict=True)))
        hidden_states = named.pop("hidden_states")
        return self.model(hidden_states, **named, return_dict=False)[0]


def nearest_multiple(pixels: int, multiple: int) -> int:
    """The multiple of `multiple` nearest `pixels` (the larger on a tie), never 0."""
    return max(multiple, (pixels + multiple // 2) // multiple * multiple)
