"""Prompt accuracy of a shapes pipeline folder at a size and guidance, 20 DPM-Solver steps, N
captions of each set (seeds 0..N-1, as `edit-mobile evaluate`): what eval.txt holds.

    python eval_at.py FOLDER SIZE N [GUIDANCE]      # e.g. OUT 256 32 2.0
"""

import sys

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging

from edit_mobile.runtime.evaluate import captions_of
from edit_mobile.shapes import score


def main() -> None:
    folder, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    guidance = float(sys.argv[4]) if len(sys.argv) > 4 else 4.5
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for name in ("seen", "heldout", "two"):
        captioned = captions_of(name, count, 0)
        captions, images = [c.caption for c in captioned], []
        for start in range(0, count, 8):
            chunk = captions[start : start + 8]
            generators = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
            with torch.no_grad():
                images += pipe(chunk, height=size, width=size, num_inference_steps=20, guidance_scale=guidance,
                               generator=generators, use_resolution_binning=False).images
        result = score(images, [c.scene for c in captioned])
        print(name, (round(result["prompt_accuracy"], 3), round(result["attribute_accuracy"], 3),
                     {k: round(v, 2) for k, v in result["per_attribute"].items()}), flush=True)


if __name__ == "__main__":
    main()
