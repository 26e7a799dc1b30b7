"""Diagnostic: continue the shipped PixArt shapes teacher at 256 px, with today's object weights
or with objects weighed by the inverse of their area (so a small object's pixels count like a
large one's): do small shapes learn? The continuation is ../pixart-cont256's.

    python cont_weighted.py OUT STEPS PEAK_LR {uniform|area}     # e.g. OUT 600 2e-4 area
"""

import sys
from pathlib import Path

import torch

from edit_mobile.training import train_teacher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pixart-cont256"))
from cont256 import continue_teacher  # noqa: E402

SOURCE = Path("pretrained/shapes-pixart")
LARGE_SIDE = 0.28  # of the image side (edit_mobile.shapes.world.SIZE_FRACTION)
MAX_SCALE = 4.0
shipped_object_weights = train_teacher.object_weights  # main() may replace the module's with area_weights


def area_weights(x0: torch.Tensor) -> torch.Tensor:
    """train_teacher.object_weights with the object term scaled by (a large object's area / this
    image's object area), clamped to [1, MAX_SCALE]: a small object's pixels weigh about 3x more."""
    objects = (shipped_object_weights(x0) > 1).float()  # the shipped rule's object mask, rim included
    large = (LARGE_SIDE * x0.shape[-1] + 2) ** 2  # with its one-pixel rim
    scale = (large / objects.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)).clamp(1.0, MAX_SCALE)
    return 1 + train_teacher.OBJECT_WEIGHT * scale * objects


def main() -> None:
    out, steps, peak, weighting = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    if weighting == "area":
        train_teacher.object_weights = area_weights
    continue_teacher(SOURCE, out, steps, peak, f"continue, {weighting} object weights")
    train_teacher.write_sampling(out, train_teacher.PixArtRecipe)


if __name__ == "__main__":
    main()
