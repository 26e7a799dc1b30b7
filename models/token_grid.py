"""The image-token grid that EDiT's convolutions need, handed from the model to its processors."""

from __future__ import annotations

from torch import nn

from edit_mobile.errors import UserError


def latent_token_grid(latent_height: int, latent_width: int, patch_size: int) -> tuple[int, int]:
    if latent_height % patch_size or latent_width % patch_size:
        raise UserError(
            f"latent {latent_height}x{latent_width} is not divisible by the patch size {patch_size}; "
            f"use a resolution that is a multiple of {8 * patch_size} pixels"
        )
    return latent_height // patch_size, latent_width // patch_size


def set_token_grid(model: nn.Module, grid: tuple[int, int]) -> None:
    """Tell every grid-aware attention processor (anything with `token_grid`) the grid."""
    for module in model.modules():
        if hasattr(module, "token_grid"):
            module.token_grid = grid


class TokenGridForward:
    """Listed first among an EDiT model class's bases: its processors get the latents' token
    grid (per call: resolutions differ between calls) before the diffusers forward runs."""

    def forward(self, hidden_states, *args, **kwargs):
        set_token_grid(self, latent_token_grid(*hidden_states.shape[-2:], self.config.patch_size))
        return super().forward(hidden_states, *args, **kwargs)
