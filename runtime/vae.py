"""The VAE decoder that turns the denoised latents into pixels.

A diffusers AutoencoderKL from a local folder (a `vae/` folder, or the one inside the model's
pipeline folder), or, for the tiny presets that have no real weights, a small AutoencoderKL
initialised at random from a seed: same interface and 8x upsampling, latent channels 4
(PixArt-Sigma, SDXL's VAE) or 16 (SD3), the real models' latent scaling, pictures of noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.models.families import get_family
from edit_mobile.runtime.manifest import Manifest


def tiny_vae(family: str, seed: int = 0):
    """A seeded random AutoencoderKL with the family's latent layout and 8x upsampling."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 32, 32),  # 4 levels: 3 upsamplings = 8x
            layers_per_block=1,
            latent_channels=get_family(family).latent_channels,
            norm_num_groups=8,
            **get_family(family).vae_scaling(),
        )
    return vae.eval()


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
    from diffusers import AutoencoderKL

    folder = Path(folder) if folder is not None else vae_folder_for(manifest)
    if folder is None:
        if not is_tiny_architecture(manifest):
            raise UserError(
                f"{manifest.model.get('source')} needs its VAE to make images: pass --vae DIR "
                "(a diffusers AutoencoderKL folder, e.g. the pipeline's vae/)"
            )
        return tiny_vae(manifest.family, seed)
    try:
        vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a VAE from {folder}: {' '.join(str(err).split())}; pass a diffusers AutoencoderKL folder") from err
    return vae.eval()


@torch.no_grad()
def decode(vae, latents: torch.Tensor, family: str) -> torch.Tensor:
    """(1, C, h, w) denoised latents -> (1, 3, 8h, 8w) image in [0, 1]; the shift is the
    family's to apply (Family.vae_shift)."""
    scaled = latents / vae.config.scaling_factor + get_family(family).vae_shift(vae.config)
    image = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]  # (1, 3, H, W) in [-1, 1]
    return (image.float() / 2 + 0.5).clamp(0, 1)
