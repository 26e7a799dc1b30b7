"""How robust the shapes VAE's decoder is to errors in its latents (diagnostic).

    python docs/shapes_runs/small-squares/noise_probe.py pretrained/shapes-vae 24

For each small shape: `count` exact renders (seen scenes, 256 px) encoded (posterior mode),
Gaussian noise of r latent standard deviations added, decoded and checked; prints the share read
right and the median fill (square 1.0, circle 0.785, triangle 0.5)."""

import sys

import numpy as np
import torch
from diffusers import AutoencoderKL

from edit_mobile.shapes import check_image
from edit_mobile.shapes.world import Scene, ShapeObject, render_array, sample_scene

LEVELS = (0.0, 0.05, 0.1, 0.2, 0.3)


def scenes_of(shape: str, size: str, count: int) -> list[Scene]:
    rng = np.random.default_rng(3)
    found = []
    while len(found) < count:
        scene = sample_scene(rng)
        obj = scene.objects[0]
        if obj.shape == shape:
            found.append(Scene((ShapeObject(obj.colour, shape, size, obj.position),), scene.background))
    return found


@torch.no_grad()
def main() -> None:
    vae = AutoencoderKL.from_pretrained(sys.argv[1]).eval()
    count = int(sys.argv[2])
    std = 1 / vae.config.scaling_factor
    generator = torch.Generator().manual_seed(0)
    for size in ("small", "large"):
        for shape in ("square", "circle", "triangle"):
            scenes = scenes_of(shape, size, count)
            images = torch.tensor(np.stack([render_array(s, 256, seed=i) for i, s in enumerate(scenes)]))
            pixels = (images.permute(0, 3, 1, 2).float() / 127.5 - 1)
            latents = vae.encode(pixels).latent_dist.mode()
            row = []
            for level in LEVELS:
                noisy = latents + level * std * torch.randn(latents.shape, generator=generator)
                decoded = ((vae.decode(noisy).sample.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
                checks = [check_image(d.round().astype(np.uint8), s).objects[0] for d, s in zip(decoded, scenes, strict=True)]
                right = sum(c.found is not None and c.found.shape == shape for c in checks)
                fills = sorted(c.found.fill for c in checks if c.found)
                row.append(f"r {level:.2f}: {right:2d}/{count} fill {fills[len(fills) // 2] if fills else float('nan'):.2f}")
            print(f"{size:5s} {shape:8s} " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
