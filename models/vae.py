"""The VAE decoder as a pipeline part: latents in the denoiser's space -> image in [0, 1].

`LatentDecoder` undoes the family's latent scaling and shift and decodes, exactly as diffusers'
pipelines do before their image processor; `export --pipeline` traces it as each `decode_HxW`
method, and the runtime decodes through it. `tiny_vae` is the seeded random AutoencoderKL the
tiny presets (no real weights) draw with.
"""

from __future__ import annotations

import torch
from torch import nn

from edit_mobile.models.families import get_family


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


class LatentDecoder(nn.Module):
    """(B, C, h, w) denoised latents -> (B, 3, 8h, 8w) float32 image in [0, 1]."""

    def __init__(self, vae, family: str):
        super().__init__()
        self.vae = vae
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(get_family(family).vae_shift(vae.config))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        scaled = latents / self.scaling + self.shift
        image = self.vae.decode(scaled.to(self.vae.dtype), return_dict=False)[0]  # in [-1, 1]
        return (image.float() / 2 + 0.5).clamp(0, 1)
