"""Diagnostic: one row of images per model for the same six captions (seed 1, each model's
recorded sampling), rows stacked into one PNG.

    python look.py OUT.png MODEL [MODEL ...]
"""

import sys

from PIL import Image

from edit_mobile.runtime.evaluate import Settings, image_maker

CAPTIONS = [
    "a small red square in the center on a white background",
    "a small blue square in the top left on a yellow background",
    "a small green square in the right on a black background",
    "a small white square in the bottom on a purple background",
    "a small red circle in the center on a white background",
    "a large blue square in the top left on a yellow background",
]
SIDE = 256


def main() -> None:
    out, models = sys.argv[1], sys.argv[2:]
    grid = Image.new("RGB", (SIDE * len(CAPTIONS), SIDE * len(models)))
    for row, model in enumerate(models):
        for column, image in enumerate(image_maker(model, None)(CAPTIONS, Settings(seed=1), None)):
            grid.paste(image, (column * SIDE, row * SIDE))
    grid.save(out, optimize=True)


if __name__ == "__main__":
    main()
