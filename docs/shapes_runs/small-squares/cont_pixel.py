"""Diagnostic: continue a shipped shapes teacher at 256 px with a pixel term added to its latent
loss: at noise levels below MAX_SIGMA, the teacher's x0 estimate and the true latent are both
decoded by the (frozen) shapes VAE on a CROP x CROP latent window around one object, and their
L1 distance weighs PIXEL_WEIGHT. Why: a small square and a small circle differ in ~4 latent
pixels of 1024 by a fraction of the latent's spread, so the latent loss barely tells them
apart; the decoded corners are a whole shape's difference. Both crops go through the same
decoder, so its GroupNorm statistics (image-wide) cancel out of the comparison.

    python docs/shapes_runs/small-squares/cont_pixel.py {sd3|pixart} OUT STEPS PEAK_LR PIXEL_WEIGHT   # e.g. sd3 OUT 600 2e-4 1.0
(PIXEL_WEIGHT 0 is the control: the same continuation with the latent loss alone.)
"""

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.training import train_teacher
from edit_mobile.training.loop import TrainingLog, cosine_lr, seed_everything

MAX_SIGMA = 0.6  # above it the x0 estimate is a blur of many images: no pixel target is right
CROP = 12  # latent pixels (96 px): a large object (0.28 of 32 = 9) and its rim fit
MAX_CROPS = 8  # decoded crops a step: the decoder at 96 px costs more than the teacher's step


def object_crops(x0: torch.Tensor, generator: torch.Generator) -> list[tuple[int, int]]:
    """For each latent, the corner of a CROP window centred on a random object pixel."""
    mask = train_teacher.object_weights(x0)[:, 0] > 1
    corners = []
    size = x0.shape[-1]
    for m in mask:
        where = m.nonzero()
        if len(where) == 0:
            corners.append((size // 2 - CROP // 2,) * 2)
            continue
        y, x = where[torch.randint(len(where), (1,), generator=generator)].squeeze(0).tolist()
        corners.append(tuple(min(max(v - CROP // 2, 0), size - CROP) for v in (y, x)))
    return corners


def pixel_loss(vae, to_latents, x0_hat, x0, corners, keep) -> torch.Tensor:
    """Mean L1 of the decoded crops (pixels in [-1, 1]) over the kept samples."""
    if not keep.any():
        return x0.new_zeros(())
    rows = keep.nonzero().squeeze(1).tolist()[:MAX_CROPS]
    crop = lambda z, i: z[i, :, corners[i][0]:corners[i][0] + CROP, corners[i][1]:corners[i][1] + CROP]  # noqa: E731
    predicted = torch.stack([crop(x0_hat, i) for i in rows])
    true = torch.stack([crop(x0, i) for i in rows])
    with torch.no_grad():
        target = vae.decode(to_latents(true)).sample
    return (vae.decode(to_latents(predicted)).sample - target).abs().mean()


def shipped_teacher(family: str, peak: float):
    """The VAE, the family's recipe holding the shipped teacher (trained text encoders, float32
    transformer in training mode), and (model, EMA copy, AdamW at `peak`), seeded."""
    source = Path(f"pretrained/shapes-{family}")
    seed_everything(5)
    vae = AutoencoderKL.from_pretrained(VAE_FOLDER).eval().requires_grad_(False)
    recipe = train_teacher.RECIPES[family](0)
    recipe.text.load_trained(source)
    model = type(recipe.model).from_pretrained(source / "transformer", torch_dtype=torch.float32)
    model = model.train().requires_grad_(True)
    recipe.model = model
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.01)
    return vae, recipe, (model, ema, optimizer)


def main() -> None:
    family, out, steps, peak, weight = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    vae, recipe, (model, ema, optimizer) = shipped_teacher(family, peak)
    rng, generator = np.random.default_rng(11), torch.Generator().manual_seed(12)
    scenes, latents = train_teacher.cached_dataset(VAE_FOLDER, vae, 8000, 0, Path("build/shapes/cache"), 256)
    x0_all = recipe.to_model_space(latents, vae)
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor if family == "sd3" else 0.0
    to_latents = lambda z: z / scale + shift  # noqa: E731  (inverse of to_model_space)

    captured = {}
    original_noised = train_teacher.flow_noised

    def noised(x0, gen):  # keep what the pixel term needs from the recipe's own loss
        noisy, timestep, target = original_noised(x0, gen)
        captured.update(x0=x0, noisy=noisy, sigma=timestep / 1000)
        return noisy, timestep, target

    def weighted_mse(prediction, target, weights):
        captured["prediction"] = prediction
        return original_mse(prediction, target, weights)

    original_mse = train_teacher.weighted_mse
    train_teacher.flow_noised, train_teacher.weighted_mse = noised, weighted_mse
    out.mkdir(parents=True)
    log = TrainingLog(out, steps, f"continue {family}, pixel weight {weight}")
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, peak, warmup=50)
        latent_loss = train_teacher.training_step(recipe, model, scenes, x0_all, 32, rng, generator)
        x0, sigma = captured["x0"], captured["sigma"]
        x0_hat = captured["noisy"] - sigma.view(-1, 1, 1, 1) * captured["prediction"]  # v = noise - x0
        pixels = pixel_loss(vae, to_latents, x0_hat, x0, object_crops(x0, generator), sigma < MAX_SIGMA)
        train_teacher.step_with_ema(latent_loss + weight * pixels, model, ema, optimizer)
        log.step(step + 1, (step + 1) * 32, loss=latent_loss.item(), pixel=pixels.item())
    log.close()
    recipe.pipeline(ema, vae).save_pretrained(out, safe_serialization=True)
    train_teacher.write_sampling(out, recipe)


if __name__ == "__main__":
    main()
