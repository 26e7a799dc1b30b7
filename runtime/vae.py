"""The VAE decoder that turns the denoised latents into pixels.

The family's diffusers VAE from a local folder (a `vae/` folder, or the one inside the model's
pipeline folder), or, for the tiny presets that have no real weights, a small one of the family's
(an 8x AutoencoderKL with 4 (PixArt-Sigma) or 16 (SD3) latent channels; SANA's 32x DC-AE)
initialised at random from a seed: the real models' latent scaling, pictures of noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.models.vae import LatentDecoder, folder_vae, tiny_vae
from edit_mobile.runtime.manifest import Manifest


def is_tiny_architecture(manifest: Manifest) -> bool:
    from edit_mobile.models import is_tiny

    return is_tiny(manifest.model.get("source"), manifest.model.get("config") or {})


def vae_folder_for(manifest: Manifest) -> Path | None:
    """The `vae/` of the pipeline folder the model came from (a local folder or a shipped preset)."""
    from edit_mobile.models import pipeline_folder_of

    source = Path(str(manifest.model.get("source", "")))
    pipeline = pipeline_folder_of(manifest.model.get("source"))
    candidates = (source / "vae", source.parent / "vae") + ((pipeline / "vae",) if pipeline else ())
    return next((folder for folder in candidates if (folder / "config.json").is_file()), None)


def load_vae(manifest: Manifest, folder: str | os.PathLike | None = None, seed: int = 0):
    folder = Path(folder) if folder is not None else vae_folder_for(manifest)
    if folder is None:
        if not is_tiny_architecture(manifest):
            raise UserError(
                f"{manifest.model.get('source')} needs its VAE to make images: pass --vae DIR "
                "(a diffusers VAE folder, e.g. the pipeline's vae/)"
            )
        return tiny_vae(manifest.family, seed)
    return folder_vae(folder, manifest.family)


@torch.no_grad()
def decode(vae, latents: torch.Tensor, family: str) -> torch.Tensor:
    """(1, C, h, w) denoised latents -> (1, 3, s h, s w) image in [0, 1] (models.vae.LatentDecoder)."""
    return LatentDecoder(vae, family)(latents)
