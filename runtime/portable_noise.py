"""The initial latent noise the demo apps draw (android_demo LatentNoise.java, its Swift twin):
SplitMix64 words, the top 53 bits as uniforms in [0, 1), Box-Muller on consecutive pairs. The
same on every device; `generate --noise portable` draws it too, so that a phone and this machine
make the same image from the same seed (torch.randn, diffusers' noise, is not reproducible on a
phone)."""

from __future__ import annotations

import numpy as np
import torch


def portable_gaussians(seed: int, count: int) -> np.ndarray:
    """`count` standard Gaussians (float64); uint64 arithmetic wraps as Java's long does."""
    pairs = (count + 1) // 2
    k = np.arange(1, 2 * pairs + 1, dtype=np.uint64)
    z = np.uint64(seed % 2**64) + k * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log(1.0 - uniform[0::2]))
    angle = 2.0 * np.pi * uniform[1::2]
    out = np.empty(2 * pairs)
    out[0::2], out[1::2] = radius * np.cos(angle), radius * np.sin(angle)
    return out[:count]


def portable_latents(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The apps' initial latents of `shape` (NCHW order), float32, before init_noise_sigma."""
    count = int(np.prod(shape))
    return torch.from_numpy(portable_gaussians(seed, count).astype(np.float32)).reshape(shape)
