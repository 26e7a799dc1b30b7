"""Shapes-world images and captions as training tensors.

Images are rendered on the fly (exact, anti-aliased) from training scenes only: no object of a
training image is a held-out (colour, shape, position) triple, for the VAE as for the teachers.
"""

from __future__ import annotations

import numpy as np
import torch

from edit_mobile.shapes import make_caption, render_array, sample_scene

IMAGE_SIZE = 256  # 32 x 32 latents, 16 x 16 = 256 image tokens at patch 2
ONE_OBJECT_SHARE = 0.6  # the targets are judged on one-object captions; two-object ones teach binding


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) floats in [0, 255] -> (3, H, W) in [-1, 1], the VAE's range."""
    return torch.from_numpy(pixels).float().permute(2, 0, 1) / 127.5 - 1.0


def training_scene(rng: np.random.Generator):
    return sample_scene(rng, n_objects=1 if rng.random() < ONE_OBJECT_SHARE else 2)


def render_batch(scenes, rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """The scenes rendered, each with its own jitter: (B, 3, S, S) in [-1, 1]."""
    return torch.stack([to_tensor(render_array(s, image_size, seed=int(rng.integers(2**31)))) for s in scenes])


def captioned_batch(rng: np.random.Generator, batch: int, image_size: int = IMAGE_SIZE):
    """`batch` random training scenes: (captions, images (B, 3, S, S) in [-1, 1])."""
    scenes = [training_scene(rng) for _ in range(batch)]
    captions = [make_caption(scene, rng) for scene in scenes]
    return captions, render_batch(scenes, rng, image_size)


def crop_batch(rng: np.random.Generator, batch: int, crop: int, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Random `crop`-pixel crops of training images, most of them on an object's edge (flat
    background alone teaches a VAE nothing): (B, 3, crop, crop) in [-1, 1]."""
    if crop == image_size:
        return captioned_batch(rng, batch, image_size)[1]
    crops = []
    for _ in range(batch):
        _, image = captioned_batch(rng, 1, image_size)
        image = image[0]
        if rng.random() < 0.8:  # centre near a non-background pixel
            background = image[:, 0, 0][:, None, None]
            ys, xs = torch.nonzero((image - background).abs().sum(0) > 0.1, as_tuple=True)
            pick = int(rng.integers(len(ys)))
            cy, cx = int(ys[pick]), int(xs[pick])
        else:
            cy, cx = (int(v) for v in rng.integers(0, image_size, size=2))
        top = int(np.clip(cy - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, image_size - crop))
        left = int(np.clip(cx - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, image_size - crop))
        crops.append(image[:, top : top + crop, left : left + crop])
    return torch.stack(crops)
