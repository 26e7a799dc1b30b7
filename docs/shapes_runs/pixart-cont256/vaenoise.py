"""How fragile is the shapes VAE decoder to off-manifold latents? The checker's score of
decode(encode(x) + sigma * noise) for 48 rendered scenes, sigma in model (scaled) units.

    python vaenoise.py [VAE_FOLDER]
"""

import sys

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.shapes import render_array, sample_training_captions, score
from edit_mobile.training.shapes_data import to_tensor


def main() -> None:
    vae = AutoencoderKL.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else VAE_FOLDER).eval()
    captioned = sample_training_captions(48, seed=5)
    images = torch.stack([to_tensor(render_array(c.scene, 256, seed=i)) for i, c in enumerate(captioned)])
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mode()
        for sigma in (0.0, 0.05, 0.1, 0.2, 0.3):
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
            noisy = latents + sigma / vae.config.scaling_factor * noise
            decoded = torch.cat([vae.decode(noisy[i : i + 16]).sample for i in range(0, 48, 16)]).clamp(-1, 1)
            pictures = [Image.fromarray(((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
                        for t in decoded]
            result = score(pictures, [c.scene for c in captioned])
            per_attribute = {k: round(v, 2) for k, v in result["per_attribute"].items()}
            print(sigma, round(result["prompt_accuracy"], 3), per_attribute, flush=True)


if __name__ == "__main__":
    main()
