"""The shapes world's trained models, shipped with the package as diffusers pipeline folders.

Shipped: the VAE (`shapes-vae/`), the PixArt teacher (`shapes-pixart/`) and the SD3 teacher
(`shapes-sd3/`), 24.1 MB of weights together. The teachers' pipeline folders are made by
`make shapes` (compacted for shipping by training/shipping.py) and installed here; the presets
`shapes-pixart` / `shapes-sd3` say so when they are missing.

`shapes-pixart/` and `shapes-sd3/` are complete pipeline folders (model_index.json, scheduler/,
tokenizer*/, text_encoder*/, vae/, transformer/) made by `make shapes` (edit_mobile.training);
diffusers' PixArtSigmaPipeline / StableDiffusion3Pipeline load them as they are.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
# The shapes VAE (diffusers AutoencoderKL, 8x, 4 latent channels), shared by both pipelines:
# their vae/ folders are links to it.
VAE_FOLDER = ROOT / "shapes-vae"


def pipeline_folder(name: str) -> Path | None:
    """The shipped pipeline folder of a shapes preset (`shapes-pixart`, `shapes-sd3`), if built."""
    folder = ROOT / name
    return folder if (folder / "model_index.json").is_file() else None
