"""Does the SD3 teacher keep small squares of its own training images better than fresh ones?
SDEdit from step k of 20 on one-object scenes of one small shape: training latents vs fresh ones
(diagnostic; needs the training latents `make shapes` cached in build/shapes/cache).

    python docs/shapes_runs/small-squares-not-data/memorised_probe.py pretrained/shapes-sd3 24 square 0,12,16,18"""
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline

sys.path.insert(0, "docs/shapes_runs/noise-level-probe")
from sdedit_probe import finish  # noqa: E402

from edit_mobile.shapes import check_image, make_caption  # noqa: E402
from edit_mobile.training.train_teacher import cached_dataset, encode_dataset  # noqa: E402

torch.set_num_threads(2)
folder, count, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
starts = [int(v) for v in sys.argv[4].split(",")]
pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
is_pixart = "PixArt" in type(pipe).__name__
guidance = 2.0 if is_pixart else 3.0
vae = pipe.vae
train_scenes, train_latents = cached_dataset(Path("pretrained/shapes-vae"), vae, 8000, 0, Path("build/shapes/cache"), 256)


def wanted(s):
    return len(s.objects) == 1 and s.objects[0].size == "small" and s.objects[0].shape == shape


rows = [i for i, s in enumerate(train_scenes) if wanted(s)][:count]
sets = {"train": ([train_scenes[i] for i in rows], train_latents[torch.tensor(rows)])}
fresh_scenes, fresh_latents = encode_dataset(vae, count * 40, 999, 256)
keep = [i for i, s in enumerate(fresh_scenes) if wanted(s)][:count]
sets["fresh"] = ([fresh_scenes[i] for i in keep], fresh_latents[torch.tensor(keep)])
for name, (scenes, latents) in sets.items():
    x0 = latents * vae.config.scaling_factor if is_pixart else (latents - vae.config.shift_factor) * vae.config.scaling_factor
    rng = np.random.default_rng(1)
    captions = [make_caption(s, rng) for s in scenes]
    for start in starts:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = finish(pipe, captions, x0, noise, start, guidance, is_pixart)
        checks = [check_image(img, s) for img, s in zip(out, scenes, strict=True)]
        fills = sorted(c.objects[0].found.fill for c in checks if c.objects[0].found)
        print(f"{name} ({len(scenes)}) start {start}: shape right {sum(c.shape for c in checks)}/{len(scenes)}, "
              f"median fill {fills[len(fills) // 2]:.2f}", flush=True)
