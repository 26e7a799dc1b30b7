"""Diagnostic: continue a PixArt shapes teacher at 256 px with a fresh cosine lr: does shape learn?
python cont256.py SRC OUT STEPS LR"""
import sys, copy, json
from pathlib import Path
import numpy as np, torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from transformers import T5EncoderModel
from edit_mobile.training import train_teacher as tt
from edit_mobile.training.loop import TrainingLog, cosine_lr, seed_everything
src, out, steps, lr = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
seed_everything(5)
vae_folder = Path("pretrained/shapes-vae")
vae = AutoencoderKL.from_pretrained(vae_folder).eval().requires_grad_(False)
recipe = tt.PixArtRecipe(0)
recipe.text.encoder = T5EncoderModel.from_pretrained(src / "text_encoder").eval().requires_grad_(False)
model = PixArtTransformer2DModel.from_pretrained(src / "transformer").train().requires_grad_(True)
ema = copy.deepcopy(model).eval().requires_grad_(False)
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
rng = np.random.default_rng(11); gen = torch.Generator().manual_seed(12)
scenes, latents = tt.cached_dataset(vae_folder, vae, 8000, 0, Path("build/shapes/cache"), 256)
x0 = recipe.to_model_space(latents, vae)
out.mkdir(parents=True)
log = TrainingLog(out, steps, "cont256")
for step in range(steps):
    for g in opt.param_groups: g["lr"] = cosine_lr(step, steps, lr, warmup=50)
    loss = tt.training_step(recipe, model, scenes, x0, 32, rng, gen)
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    with torch.no_grad():
        for s, l in zip(ema.parameters(), model.parameters()): s.lerp_(l, 1 - 0.998)
    log.step(step + 1, (step + 1) * 32, loss=loss.item())
log.close()
recipe.pipeline(ema, vae).save_pretrained(out, safe_serialization=True)
