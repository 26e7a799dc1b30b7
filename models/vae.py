"""The VAE decoder as a pipeline part: latents in the denoiser's space -> image in [0, 1].

`LatentDecoder` undoes the family's latent scaling and shift and decodes, exactly as diffusers'
pipelines do before their image processor; `export --pipeline` traces it as each `decode_HxW`
method, and the runtime decodes through it. `tiny_vae` is the seeded random VAE the tiny presets
(no real weights) draw with.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edit_mobile.errors import UserError
from edit_mobile.models.families import get_family


def tiny_vae(family: str, seed: int = 0):
    """The family's small random VAE (`Family.tiny_vae`: its latent layout and upsampling), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = get_family(family).tiny_vae()
    return vae.eval()


def folder_vae(folder: Path, family: str):
    """The family's VAE (`Family.vae_class`) from a local diffusers folder, or one line saying why not."""
    cls = get_family(family).vae_class()
    try:
        found = cls.load_config(folder, local_files_only=True).get("_class_name", cls.__name__)
        if found != cls.__name__:
            raise ValueError(f"its config names {found}; {family} models decode with {cls.__name__}")
        return cls.from_pretrained(folder, use_safetensors=True, local_files_only=True).eval()
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a VAE from {folder}: {' '.join(str(err).split())}; "
                        f"pass a diffusers {cls.__name__} folder") from err


class LatentDecoder(nn.Module):
    """(B, C, h, w) denoised latents -> (B, 3, s h, s w) float32 image in [0, 1] (s: the VAE's scale)."""

    def __init__(self, vae, family: str):
        super().__init__()
        self.vae = vae
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(get_family(family).vae_shift(vae.config))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        scaled = latents / self.scaling + self.shift
        image = self.vae.decode(scaled.to(self.vae.dtype), return_dict=False)[0]  # in [-1, 1]
        return (image.float() / 2 + 0.5).clamp(0, 1)
