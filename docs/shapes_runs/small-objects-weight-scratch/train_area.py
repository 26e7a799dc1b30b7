"""Diagnostic: train a shapes teacher from nothing with `make shapes`' recipe, each object's loss
weight scaled by (a large object's area / its own area), clamped to [1, MAX_SCALE], so that a
small object's pixels count as much, together, as a large one's. ../small-objects-weight found
600 continuation steps of this on a trained teacher change nothing and left open whether it
matters while shapes are first learnt; this asks that.

    python train_area.py {sd3|pixart} OUT
"""

import sys

import torch
import torch.nn.functional as F

from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.training import make_shapes, train_teacher

shipped_object_weights = train_teacher.object_weights  # main() replaces the module's with area_weights
LARGE_SIDE = 0.28  # of the image side (edit_mobile.shapes.world.SIZE_FRACTION)
MAX_SCALE = 4.0


def components(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) labels of the 8-connected components of a 0/1 mask (0 off the mask): each
    pixel takes the largest index in its component, spread by 3 x 3 max-pooling."""
    height, width = mask.shape[-2:]
    index = torch.arange(1, height * width + 1, dtype=mask.dtype).view(1, 1, height, width)
    labels = mask * index
    for _ in range(height * width):
        spread = F.max_pool2d(labels, 3, stride=1, padding=1) * mask
        if torch.equal(spread, labels):
            break
        labels = spread
    return labels


def area_weights(x0: torch.Tensor) -> torch.Tensor:
    """train_teacher.object_weights with each object's term scaled by its area against a large
    object's (both with the one-pixel rim)."""
    objects = (shipped_object_weights(x0) > 1).float()  # the shipped rule's object mask, rim included
    labels = components(objects).long()
    areas = torch.stack([torch.bincount(row.flatten(), minlength=row.numel() + 1) for row in labels])
    own_area = torch.gather(areas, 1, labels.flatten(1)).view_as(objects).float()
    large = (LARGE_SIDE * x0.shape[-1] + 2) ** 2
    scale = (large / own_area.clamp_min(1.0)).clamp(1.0, MAX_SCALE)
    return 1 + train_teacher.OBJECT_WEIGHT * scale * objects


def main() -> None:
    family, out = sys.argv[1], sys.argv[2]
    train_teacher.object_weights = area_weights
    train_teacher.main(["--family", family, "--vae", str(VAE_FOLDER), "-o", out,
                        "--stages", make_shapes.TEACHER_STAGES[family], "--cache", "build/shapes/cache"])


if __name__ == "__main__":
    main()
