"""Diagnostic: continue the shipped PixArt shapes teacher at 256 px, with today's object weights
or with objects weighed by the inverse of their area (so a small object's pixels count like a
large one's): do small shapes learn?

    python cont_weighted.py OUT STEPS PEAK_LR {uniform|area}     # e.g. OUT 600 2e-4 area
"""

import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from transformers import T5EncoderModel

from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.training import train_teacher
from edit_mobile.training.loop import TrainingLog, cosine_lr, seed_everything

SOURCE = Path("pretrained/shapes-pixart")
LARGE_SIDE = 0.28  # of the image side (edit_mobile.shapes.world.SIZE_FRACTION)
MAX_SCALE = 4.0


def area_weights(x0: torch.Tensor) -> torch.Tensor:
    """train_teacher.object_weights with the object term scaled by (a large object's area / this
    image's object area), clamped to [1, MAX_SCALE]: a small object's pixels weigh about 3x more."""
    median = x0.flatten(2).median(dim=2).values[..., None, None]
    objects = ((x0 - median).norm(dim=1, keepdim=True) > train_teacher.OBJECT_THRESHOLD).float()
    objects = F.max_pool2d(objects, 3, stride=1, padding=1)
    large = (LARGE_SIDE * x0.shape[-1] + 2) ** 2  # with its one-pixel rim
    scale = (large / objects.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)).clamp(1.0, MAX_SCALE)
    return 1 + train_teacher.OBJECT_WEIGHT * scale * objects


def main() -> None:
    out, steps, peak, weighting = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    if weighting == "area":
        train_teacher.object_weights = area_weights
    seed_everything(5)
    vae = AutoencoderKL.from_pretrained(VAE_FOLDER).eval().requires_grad_(False)
    recipe = train_teacher.PixArtRecipe(0)
    recipe.text.encoder = T5EncoderModel.from_pretrained(SOURCE / "text_encoder", torch_dtype=torch.float32).eval().requires_grad_(False)
    model = PixArtTransformer2DModel.from_pretrained(SOURCE / "transformer", torch_dtype=torch.float32)
    model = model.train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.01)
    rng, generator = np.random.default_rng(11), torch.Generator().manual_seed(12)
    scenes, latents = train_teacher.cached_dataset(VAE_FOLDER, vae, 8000, 0, Path("build/shapes/cache"), 256)
    x0 = recipe.to_model_space(latents, vae)
    out.mkdir(parents=True)
    log = TrainingLog(out, steps, f"continue, {weighting} object weights")
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, peak, warmup=50)
        loss = train_teacher.training_step(recipe, model, scenes, x0, 32, rng, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for shadow, live in zip(ema.parameters(), model.parameters(), strict=True):
                shadow.lerp_(live, 1 - train_teacher.EMA_DECAY)
        log.step(step + 1, (step + 1) * 32, loss=loss.item())
    log.close()
    recipe.pipeline(ema, vae).save_pretrained(out, safe_serialization=True)
    train_teacher.write_sampling(out, recipe)


if __name__ == "__main__":
    main()
