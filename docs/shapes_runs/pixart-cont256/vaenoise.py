"""How fragile is the shapes VAE decoder to off-manifold latents? Score decode(encode(x) + noise)."""
import sys, numpy as np, torch
from PIL import Image
from diffusers import AutoencoderKL
from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.shapes import render_array, sample_training_captions, score
from edit_mobile.training.shapes_data import to_tensor
vae = AutoencoderKL.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else VAE_FOLDER).eval()
caps = sample_training_captions(48, seed=5)
imgs = torch.stack([to_tensor(render_array(c.scene, 256, seed=i)) for i, c in enumerate(caps)])
with torch.no_grad():
    lat = vae.encode(imgs).latent_dist.mode()
    sf = vae.config.scaling_factor
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.3):
        g = torch.Generator().manual_seed(0)
        z = lat + sigma / sf * torch.randn(lat.shape, generator=g)  # sigma in model (scaled) units
        out = torch.cat([vae.decode(z[i:i+16]).sample for i in range(0, 48, 16)]).clamp(-1, 1)
        pics = [Image.fromarray(((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)) for t in out]
        e = score(pics, [c.scene for c in caps])
        print(sigma, round(e["prompt_accuracy"], 3), {k: round(v, 2) for k, v in e["per_attribute"].items()}, flush=True)
