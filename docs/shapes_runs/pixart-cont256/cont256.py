"""Diagnostic: continue a PixArt shapes teacher at 256 px with a fresh warm-up and cosine
learning rate: does shape learn? (build/exp/px-full2 was the scene-reading run's folder.)

    python cont256.py SRC_PIPELINE_FOLDER OUT STEPS PEAK_LR     # e.g. ... OUT 1500 3e-4
"""

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from transformers import T5EncoderModel

from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.training import train_teacher
from edit_mobile.training.loop import TrainingLog, cosine_lr, seed_everything


def continue_teacher(source: Path, out: Path, steps: int, peak: float, label: str = "cont256") -> None:
    """Continue `source`'s teacher at 256 px for `steps` (warm-up 50, cosine to 0 from `peak`);
    its EMA (decay 0.998) is saved as a pipeline folder in `out`."""
    seed_everything(5)
    vae = AutoencoderKL.from_pretrained(VAE_FOLDER).eval().requires_grad_(False)
    recipe = train_teacher.PixArtRecipe(0)
    recipe.text.encoder = T5EncoderModel.from_pretrained(source / "text_encoder", torch_dtype=torch.float32)
    recipe.text.encoder.eval().requires_grad_(False)
    model = PixArtTransformer2DModel.from_pretrained(source / "transformer", torch_dtype=torch.float32)
    model = model.train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.01)
    rng, generator = np.random.default_rng(11), torch.Generator().manual_seed(12)
    scenes, latents = train_teacher.cached_dataset(VAE_FOLDER, vae, 8000, 0, Path("build/shapes/cache"), 256)
    x0 = recipe.to_model_space(latents, vae)
    run_continuation(recipe, vae, (model, ema, optimizer), (scenes, x0), (rng, generator), out, steps, peak, label)


def run_continuation(recipe, vae, trained, data, randomness, out: Path, steps: int, peak: float, label: str) -> None:
    """`steps` of the recipe's loss on `data` (scenes, model-space latents), batch 32, warm-up 50
    and cosine to 0 from `peak`; `trained` is (model, EMA, optimizer), `randomness` the numpy
    and torch generators; the EMA is saved as a pipeline folder in `out`, the log beside it."""
    model, ema, optimizer = trained
    scenes, x0 = data
    rng, generator = randomness
    out.mkdir(parents=True)
    log = TrainingLog(out, steps, label)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, peak, warmup=50)
        loss = train_teacher.training_step(recipe, model, scenes, x0, 32, rng, generator)
        train_teacher.step_with_ema(loss, model, ema, optimizer)
        log.step(step + 1, (step + 1) * 32, loss=loss.item())
    log.close()
    recipe.pipeline(ema, vae).save_pretrained(out, safe_serialization=True)


def main() -> None:
    continue_teacher(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))


if __name__ == "__main__":
    main()
