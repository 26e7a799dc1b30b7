"""The VAE decoder as a pipeline part: latents in the denoiser's space -> image in [0, 1].

`LatentDecoder` undoes the family's latent scaling and shift and decodes, exactly as diffusers'
pipelines do before their image processor; `export --pipeline` traces it as each `decode_HxW`
method, and the runtime decodes through it. `tiny_vae` is the seeded random VAE the tiny presets
(no real weights) draw with.
"""

from __future__ import annotations

import torch
from torch import nn

from edit_mobile.models.families import get_family


def tiny_vae(family: str, seed: int = 0):
    """The family's small random VAE (`Family.tiny_vae`: its latent layout and upsampling), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = get_family(family).tiny_vae()
    return vae.eval()


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
