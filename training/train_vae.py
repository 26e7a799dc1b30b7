"""Train the shapes world's VAE: a diffusers AutoencoderKL, 8x downsampling, 4 latent channels.

No mid-block attention. Two stages: 64 px crops (cheap, most of them on an object's edge), then
full 256 px images, because GroupNorm's statistics span the whole image: a VAE trained on crops
alone shifts the colours of small objects on full images (black on white came out green). Loss: L1 + MSE on pixels + a small KL term (as Stable Diffusion's VAE, minus
the adversarial part, which flat-coloured shapes do not need). At the end the latent scaling
(1 / std) and shift (mean) are measured on full images and written into the config, as SD3's
VAE carries both; PixArt's pipeline uses the scaling only.

    python -m edit_mobile.training.train_vae -o build/shapes/vae-crops --steps 2000
    python -m edit_mobile.training.train_vae -o build/shapes/vae --init build/shapes/vae-crops --crop 256 --batch 4 --steps 400 --lr 3e-4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from edit_mobile.training.loop import TrainingLog, cosine_lr, seed_everything
from edit_mobile.training.shapes_data import captioned_batch, crop_batch

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64),  # 4 levels: 3 downsamplings = 8x
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    mid_block_add_attention=False,  # local only: crops train what full images run
    sample_size=256,
)
KL_WEIGHT = 1e-6


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def train(output: Path, steps: int, batch: int, crop: int, seed: int, lr: float, init: Path | None = None) -> dict:
    seed_everything(seed)
    vae = build_vae() if init is None else _load(init)
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    log = TrainingLog(output, steps, "shapes VAE")
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=50)
        images = crop_batch(rng, batch, crop)  # (B, 3, crop, crop)
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        l1 = (reconstruction - images).abs().mean()
        mse = ((reconstruction - images) ** 2).mean()
        kl = posterior.kl().mean() / images[0].numel()
        loss = l1 + mse + KL_WEIGHT * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        log.step(step + 1, (step + 1) * batch, l1=l1.item(), mse=mse.item())
    summary = log.close()
    vae.eval()
    summary.update(set_latent_scaling(vae, rng))
    summary["reconstruction_psnr_db"] = reconstruction_psnr(vae, rng)
    vae.save_pretrained(output, safe_serialization=True)
    (output / "training.json").write_text(json.dumps(
        {"seed": seed, "steps": steps, "batch": batch, "crop": crop, "lr": lr, **summary}, indent=2) + "\n")
    return summary


def _load(folder: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(folder, low_cpu_mem_usage=False)


@torch.no_grad()
def set_latent_scaling(vae, rng: np.random.Generator, images: int = 64) -> dict:
    """scaling_factor = 1 / std and shift_factor = mean of the latents of full images."""
    _, batch = captioned_batch(rng, images)
    latents = vae.encode(batch).latent_dist.mode()  # (N, 4, 32, 32)
    shift, std = latents.mean().item(), latents.std().item()
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=shift)
    return {"latent_mean": shift, "latent_std": std}


@torch.no_grad()
def reconstruction_psnr(vae, rng: np.random.Generator, images: int = 32) -> float:
    """PSNR in dB of full 256 px reconstructions (peak 2: images span [-1, 1])."""
    _, batch = captioned_batch(rng, images)
    output = vae.decode(vae.encode(batch).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((output - batch) ** 2).mean().item()
    return 10 * np.log10(4.0 / mse)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="new folder for the VAE")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="start from this VAE (the second, full-image stage)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.output.mkdir(parents=True, exist_ok=False)
    summary = train(args.output, args.steps, args.batch, args.crop, args.seed, args.lr, args.init)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
