"""Is the shipped SD3 teacher overfit to its 8000 training images? Its loss on training latents
against fresh ones, at fixed noise levels, object pixels and all pixels (diagnostic).

    python docs/shapes_runs/small-squares-not-data/overfit_probe.py pretrained/shapes-sd3 256

Needs the training latents `make shapes` cached in build/shapes/cache."""
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusion3Pipeline

from edit_mobile.models.families import family_of
from edit_mobile.shapes import make_caption
from edit_mobile.training.train_teacher import cached_dataset, encode_dataset, object_weights

torch.set_num_threads(2)
folder, count = sys.argv[1], int(sys.argv[2])
pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
vae, model = pipe.vae, pipe.transformer.eval()
family = family_of(model)
MAXLEN = family.pipeline_call_options(family.default_prompt_tokens_of(Path(folder)), Path(folder))["max_sequence_length"]
print("max_sequence_length", MAXLEN)
train_scenes, train_latents = cached_dataset(Path("pretrained/shapes-vae"), vae, 8000, 0, Path("build/shapes/cache"), 256)
fresh_scenes, fresh_latents = encode_dataset(vae, count, 12345, 256)
rng = np.random.default_rng(0)
pick = rng.choice(len(train_scenes), count, replace=False)
sets = {"train": ([train_scenes[i] for i in pick], train_latents[torch.from_numpy(pick)]),
        "fresh": (fresh_scenes, fresh_latents)}
with torch.no_grad():
    for name, (scenes, latents) in sets.items():
        x0_all = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        caption_rng = np.random.default_rng(1)
        captions = [make_caption(s, caption_rng) for s in scenes]
        row = []
        for sigma in (0.2, 0.4, 0.6, 0.8):
            gen = torch.Generator().manual_seed(3)
            obj_err, all_err = [], []
            for start in range(0, count, 32):
                x0 = x0_all[start:start + 32]
                emb, _, pooled, _ = pipe.encode_prompt(captions[start:start + 32], None, None,
                                                       do_classifier_free_guidance=False, max_sequence_length=MAXLEN)
                noise = torch.randn(x0.shape, generator=gen)
                noisy = (1 - sigma) * x0 + sigma * noise
                t = torch.full((x0.shape[0],), sigma * 1000)
                pred = model(noisy, encoder_hidden_states=emb, pooled_projections=pooled, timestep=t, return_dict=False)[0]
                err = ((pred - (noise - x0)) ** 2).mean(1, keepdim=True)
                mask = object_weights(x0) > 1
                obj_err.append(err[mask].mean().item())
                all_err.append(err.mean().item())
            row.append(f"s={sigma}: obj {np.mean(obj_err):.4f} all {np.mean(all_err):.4f}")
        print(name, " | ".join(row), flush=True)
