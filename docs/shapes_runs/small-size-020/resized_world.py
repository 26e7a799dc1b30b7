"""Diagnostic: a shapes world whose small objects are SMALL_SIDE of the image side (shipped: 0.14),
for a continuation and its evaluation. Importing this module patches the world and the checker
in place (the size table and the small / large threshold derived from it).

    python resized_world.py continue {sd3|pixart} OUT STEPS PEAK_LR   # continue the shipped teacher
    python resized_world.py errors MODEL SAMPLES                        # shape_errors.py in this world
    python resized_world.py evaluate MODEL SAMPLES                      # prompt accuracy, seen + held-out
"""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import torch

from edit_mobile.shapes import checker, world

SMALL_SIDE = 0.20  # 51 px, 6.4 latent pixels: about 3 x 3 patch-2 tokens (0.14 is 2 x 2)
HERE = Path(__file__).resolve().parent
world.SIZE_FRACTION["small"] = SMALL_SIDE
checker.LARGE_MIN_SIDE = float(np.sqrt(SMALL_SIDE * world.SIZE_FRACTION["large"]))


def continue_teacher(family: str, out: Path, steps: int, peak: float) -> None:
    """The shipped teacher, continued at 256 px on this world's scenes (latent loss, warm-up 50 and
    cosine to 0, EMA 0.998 saved as a pipeline folder), as ../small-squares/cont_pixel.py without
    its pixel term."""
    from edit_mobile.pretrained import VAE_FOLDER
    from edit_mobile.training import train_teacher

    sys.path[:0] = [str(HERE.parent / "pixart-cont256"), str(HERE.parent / "small-squares")]
    from cont256 import run_continuation
    from cont_pixel import shipped_teacher

    vae, recipe, trained = shipped_teacher(family, peak)
    randomness = np.random.default_rng(11), torch.Generator().manual_seed(12)
    cache = Path(f"build/exp/cache-small{SMALL_SIDE:.2f}")  # not the shipped world's cache
    scenes, latents = train_teacher.cached_dataset(VAE_FOLDER, vae, 4000, 0, cache, 256)
    data = scenes, recipe.to_model_space(latents, vae)
    run_continuation(recipe, vae, trained, data, randomness, out, steps, peak, f"continue {family}, small side {SMALL_SIDE}")
    train_teacher.write_sampling(out, recipe)


def evaluate(model: str, samples: int) -> None:
    from edit_mobile.runtime.evaluate import Settings
    from edit_mobile.runtime.evaluate import evaluate as run

    report, _ = run(model, sets=("seen", "heldout"), samples=samples, settings=Settings(seed=1))
    print(json.dumps(report, indent=1))


def main() -> None:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "continue":
        continue_teacher(args[0], Path(args[1]), int(args[2]), float(args[3]))
    elif command == "errors":
        sys.argv = ["shape_errors.py", *args]
        runpy.run_path(str(HERE.parent / "small-shapes-diagnosis" / "shape_errors.py"), run_name="__main__")
    elif command == "evaluate":
        evaluate(args[0], int(args[1]))


if __name__ == "__main__":
    main()
