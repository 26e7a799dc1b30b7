"""Text to image over a loaded transformer artifact: what `edit-mobile generate` runs.

prompt -> text encoder (or cached embeddings) -> the family's diffusers scheduler
(PixArt-Sigma: DPM-Solver++ multistep; SD3: flow-matching Euler) with classifier-free
guidance -> VAE decoder -> PIL image. The denoiser is any Session (the artifact or the PyTorch
reference), called as exported: a batch-2 artifact takes the unconditional and conditional
branches in one call, a batch-1 artifact in two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from edit_mobile.calibration.sampler import guidance_calls
from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.session import Session

PROMPT_INPUTS = ("encoder_hidden_states", "encoder_attention_mask", "pooled_projections")


class PromptEncoder(Protocol):
    """What the pipeline needs from a text encoder: calibration's encoders have this shape."""

    def encode(self, prompts: list[str], guidance: bool):  # -> edit_mobile.calibration EncodedPrompts
        ...


class CachedEmbeddings:
    """Precomputed prompt embeddings (safetensors, the calibration stage's layout): row i is
    the i-th prompt; the prompt texts given are used only to count rows."""

    def __init__(self, path: str | os.PathLike, pooled: bool, guidance: bool):
        from edit_mobile.calibration.embeddings import load_precomputed

        self.encoded = load_precomputed(path, need_negative=guidance, need_pooled=pooled)

    def encode(self, prompts: list[str], guidance: bool):
        from edit_mobile.calibration.embeddings import EncodedPrompts

        available = len(self.encoded.positive)
        if len(prompts) > available:
            raise UserError(f"the embeddings file holds {available} prompts; {len(prompts)} were asked for")
        rows = list(range(len(prompts)))
        negative = self.encoded.negative if guidance else None
        return EncodedPrompts(self.encoded.positive.select(rows), negative, self.encoded.description)

    def __len__(self) -> int:
        return len(self.encoded.positive)


def prompt_encoder(manifest: Manifest, text_encoder: str | os.PathLike | None = None,
                   embeddings: str | os.PathLike | None = None, guidance: bool = True) -> PromptEncoder:
    """Cached embeddings, a local encoder folder, the model's pipeline folder, or (tiny presets)
    the calibration stage's seeded random encoder, the same one it calibrates with."""
    from edit_mobile.calibration.text_encoders import folder_text_encoder, random_text_encoder

    specs = {spec.name: spec for spec in manifest.inputs}
    _, tokens, width = specs["encoder_hidden_states"].shape
    if embeddings is not None:
        return CachedEmbeddings(embeddings, pooled="pooled_projections" in specs, guidance=guidance)
    from edit_mobile.models import pipeline_folder_of

    source = Path(str(manifest.model.get("source", "")))
    pipeline = pipeline_folder_of(manifest.model.get("source"))
    folder = Path(text_encoder) if text_encoder is not None else next(
        (f for f in (source, pipeline) if f is not None and (f / "text_encoder").is_dir()), None)
    if folder is not None:
        return folder_text_encoder(manifest.family, folder, tokens, width)
    from edit_mobile.runtime.vae import is_tiny_architecture

    if not is_tiny_architecture(manifest):
        raise UserError(
            f"{source} needs its text encoder to read prompts: pass --text-encoder DIR (a local pipeline "
            "folder) or --embeddings FILE.safetensors"
        )
    pooled = specs["pooled_projections"].shape[-1] if "pooled_projections" in specs else None
    return random_text_encoder(manifest.family, tokens, width, pooled)


@dataclass
class Generation:
    steps: int
    guidance: float
    seed: int


class TextToImage:
    def __init__(self, denoiser: Session, encoder: PromptEncoder, vae, model_source: str | None = None):
        self.denoiser = denoiser
        self.manifest = denoiser.manifest
        self.encoder = encoder
        self.vae = vae
        self.model_source = model_source
        self.specs = {spec.name: spec for spec in self.manifest.inputs}
        latent = self.specs["hidden_states"].shape  # (B, C, h, w)
        self.latent_shape = (1, *latent[1:])
        if vae.config.latent_channels != latent[1]:
            raise UserError(
                f"the VAE has {vae.config.latent_channels} latent channels but the artifact's latents have {latent[1]}; "
                "pass the VAE of this model family"
            )

    def default_settings(self, steps: int | None = None, guidance: float | None = None, seed: int = 0) -> Generation:
        from edit_mobile.models import pipeline_folder_of
        from edit_mobile.models.families import get_family

        default_steps, default_guidance = get_family(self.manifest.family).sampling_defaults(
            pipeline_folder_of(self.model_source))
        return Generation(default_steps if steps is None else steps,
                          default_guidance if guidance is None else guidance, seed)

    def encode(self, prompts: list[str], guidance: float):
        encoded = self.encoder.encode(prompts, guidance > 1.0)
        for part in filter(None, (encoded.positive, encoded.negative)):
            for name, tensor in part.as_inputs().items():
                if name in self.specs and tuple(tensor.shape[1:]) != self.specs[name].shape[1:]:
                    raise UserError(
                        f"the text encoder gives {name} of shape {list(tensor.shape[1:])} per prompt but the artifact "
                        f"takes {list(self.specs[name].shape[1:])}; use the model's own encoder"
                    )
        return encoded

    @torch.no_grad()
    def latents(self, encoded, index: int, settings: Generation, progress=None) -> torch.Tensor:
        """Denoise one prompt (row `index` of `encoded`) from seeded noise; (1, C, h, w)."""
        from edit_mobile.models.families import get_family

        guided = settings.guidance > 1.0
        positive = _prompt_inputs(encoded.positive.select(index))
        branches = [_prompt_inputs(encoded.negative_for(index)), positive] if guided else [positive]
        scheduler = get_family(self.manifest.family).scheduler(self.model_source)
        return sample(scheduler, self.latent_shape, settings,
                      lambda latents, timestep: self._denoise(branches, latents, timestep), progress)

    def _denoise(self, branches: list[dict], latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """Noise predictions for each branch, (G, Cout, h, w), in as many calls as the export needs."""
        calls = guidance_calls(self.manifest.batch, branches)
        return torch.cat([self._call(group, latents, timestep) for group in calls])[: len(branches)]

    def _call(self, group: list[dict], latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        named = stacked_inputs(group, latents, timestep)
        missing = [name for name in self.denoiser.input_names if name not in named]
        if missing:
            raise UserError(f"the prompt embeddings provide no {', '.join(missing)}, which the artifact takes")
        return next(iter(self.denoiser.run({name: named[name] for name in self.denoiser.input_names}).values()))

    def image(self, latents: torch.Tensor):
        from edit_mobile.runtime.vae import decode

        _check_finite(latents, "the final latents")
        pixels = decode(self.vae, latents, self.manifest.family)[0]  # (3, H, W) in [0, 1]
        _check_finite(pixels, "the VAE decoder's image")
        return to_pil(pixels)

    def __call__(self, prompt: str, settings: Generation, progress=None):
        encoded = self.encode([prompt], settings.guidance)
        return self.image(self.latents(encoded, 0, settings, progress))


def stacked_inputs(group: list[dict], latents: torch.Tensor, timestep: torch.Tensor) -> dict[str, torch.Tensor]:
    """One call's named inputs: the branches' prompt inputs stacked, the latents and timestep repeated."""
    size = len(group)
    named = {name: torch.cat([branch[name] for branch in group]) for name in group[0]}
    named["hidden_states"] = latents.expand(size, *latents.shape[1:]).contiguous()  # (G, C, h, w)
    named["timestep"] = timestep.expand(size).contiguous()  # (G,)
    return named


def to_pil(pixels: torch.Tensor):
    """(3, H, W) or (1, 3, H, W) pixels in [0, 1] -> an RGB PIL image (rounded half to even)."""
    from PIL import Image

    pixels = pixels[0] if pixels.dim() == 4 else pixels
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())


def sample(scheduler, latent_shape: tuple[int, ...], settings: Generation, predict, progress=None,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """The sampling loop of diffusers' pipelines: seeded noise (torch.randn, as diffusers draws
    it, unless `noise` is given), then for each of the scheduler's timesteps one guided
    prediction and one scheduler step. `predict(latents, timestep)` gives the noise prediction
    of every guidance branch, (G, Cout, h, w): (unconditional, conditional) when
    settings.guidance > 1, else (conditional,)."""
    if settings.steps < 1:
        raise UserError(f"--steps {settings.steps} must be at least 1")
    scheduler.set_timesteps(settings.steps)
    if noise is None:
        noise = torch.randn(latent_shape, generator=torch.Generator().manual_seed(settings.seed))
    latents = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    channels = latent_shape[1]
    for step, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, t) if hasattr(scheduler, "scale_model_input") else latents
        prediction = predict(model_input, t.to(torch.float32).reshape(1))  # (G, Cout, h, w)
        _check_finite(prediction, f"the denoiser's output at step {step + 1} of {settings.steps} (t={float(t):g})")
        if settings.guidance > 1.0:
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + settings.guidance * (conditional - unconditional)
        if prediction.shape[1] == 2 * channels:  # PixArt's learned variance: keep the noise half
            prediction = prediction[:, :channels]
        latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
        if progress is not None:
            progress()
    return latents


class NonFiniteOutput(UserError):
    """A NaN or inf where an image was being made: the image would be black or garbage."""


def _check_finite(tensor: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteOutput(f"{what} holds NaN or inf, so no image was written; validate the artifact "
                              "(edit-mobile validate) and re-export it")


def _prompt_inputs(embeddings) -> dict[str, torch.Tensor]:
    return {name: tensor.float() for name, tensor in embeddings.as_inputs().items() if name in PROMPT_INPUTS}


def build_pipeline(denoiser: Session, text_encoder=None, embeddings=None, vae=None, guidance: float = 4.5) -> TextToImage:
    from edit_mobile.models import pipeline_folder_of
    from edit_mobile.runtime.vae import load_vae

    manifest = denoiser.manifest
    source = str(manifest.model.get("source", ""))
    encoder = prompt_encoder(manifest, text_encoder, embeddings, guidance=guidance > 1.0)
    folder = source if Path(source).is_dir() else pipeline_folder_of(source)
    return TextToImage(denoiser, encoder, load_vae(manifest, vae), model_source=folder)
