"""The shapes world's trained models, shipped with the package as diffusers pipeline folders.

Shipped: the VAE (`shapes-vae/`), the PixArt teacher (`shapes-pixart/`), the SD3 teacher
(`shapes-sd3/`) and the students distilled from them (`shapes-pixart-edit/`: EDiT,
`shapes-sd3-edit/`: MM-EDiT), all weights in fp16 (loaded as float32). The pipeline folders are
made by `make shapes` (compacted for shipping by training/shipping.py) and installed here; the
presets `shapes-pixart[-edit]` / `shapes-sd3[-edit]` say so when they are missing.

Each is a complete pipeline folder (model_index.json, scheduler/, tokenizer*/, text_encoder*/,
vae/, transformer/) that diffusers' PixArtSigmaPipeline / StableDiffusion3Pipeline load as they
are (a student's transformer class is edit_mobile.models'); a student's folders other than
transformer/ are links to its teacher's.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
# The shapes VAE (diffusers AutoencoderKL, 8x, 4 latent channels), shared by both pipelines:
# their vae/ folders are links to it.
VAE_FOLDER = ROOT / "shapes-vae"


def pipeline_folder(name: str) -> Path | None:
    """The shipped pipeline folder of a shapes preset (`shapes-pixart`, `shapes-sd3-edit`, ...), if built."""
    folder = ROOT / name
    return folder if (folder / "model_index.json").is_file() else None
