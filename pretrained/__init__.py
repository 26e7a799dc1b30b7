"""The shapes world's trained models, shipped with the package as diffusers pipeline folders.

`shapes-pixart/` and `shapes-sd3/` are complete pipeline folders (model_index.json, scheduler/,
tokenizer*/, text_encoder*/, vae/, transformer/) made by `make shapes` (edit_mobile.training);
diffusers' PixArtSigmaPipeline / StableDiffusion3Pipeline load them as they are.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def pipeline_folder(name: str) -> Path | None:
    """The shipped pipeline folder of a shapes preset (`shapes-pixart`, `shapes-sd3`), if built."""
    folder = ROOT / name
    return folder if (folder / "model_index.json").is_file() else None
