"""Side by side: the same prompts and seeds through the artifact and through PyTorch.

`edit-mobile validate --images` writes one PNG: a row per prompt, the artifact's image left,
the reference's right, captioned with the prompt and the image PSNR (8-bit pixels, peak 255),
so that a person sees at a glance whether a numeric gap is a visible one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edit_mobile.closeness import peak_psnr_db
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.session import Session

DEFAULT_PROMPTS = 3
DEFAULT_IMAGE_STEPS = 10
CAPTION_HEIGHT = 28
GAP = 4
MIN_SHOWN_WIDTH = 256


def image_psnr(first, second) -> float:
    """PSNR of two 8-bit images, peak 255 (the image convention, not the tensors')."""
    return peak_psnr_db(np.asarray(first), np.asarray(second), 255.0)


def compare_images(manifest: Manifest, session: Session, reference: Session, output: str | os.PathLike,
                   prompts: list[str] | None = None, steps: int = DEFAULT_IMAGE_STEPS, seed: int = 0,
                   guidance: float | None = None, text_encoder=None, embeddings=None, vae=None,
                   write=None) -> dict:
    """Images by the artifact and by the reference, side by side in one PNG. `write(path, image)`
    writes it (default: under edit-mobile's output rule, never over a file it did not write)."""
    from edit_mobile.calibration import read_prompts
    from edit_mobile.runtime.pipeline import TextToImage, build_pipeline

    prompts = prompts or read_prompts()[:DEFAULT_PROMPTS]
    artifact_pipeline = build_pipeline(session, text_encoder, embeddings, vae, guidance if guidance is not None else 4.5)
    settings = artifact_pipeline.default_settings(steps, guidance, seed)
    # The same encoder and VAE on both sides: only the denoiser differs.
    reference_pipeline = TextToImage(reference, artifact_pipeline.encoder, artifact_pipeline.vae, artifact_pipeline.model_source)
    encoded = artifact_pipeline.encode(prompts, settings.guidance)
    rows = []
    progress = tqdm(total=2 * len(prompts) * settings.steps, desc="images", unit="step", disable=None, leave=False)
    for index, prompt in enumerate(prompts):
        produced = artifact_pipeline.image(artifact_pipeline.latents(encoded, index, settings, progress.update))
        expected = reference_pipeline.image(reference_pipeline.latents(encoded, index, settings, progress.update))
        rows.append((prompt, produced, expected, image_psnr(expected, produced)))
    progress.close()
    path = Path(output)
    (write or _write_png)(path, contact_sheet(rows, session.describe()))
    return {
        "path": str(path), "steps": settings.steps, "guidance": settings.guidance, "seed": seed,
        "per_image": [{"prompt": prompt, "psnr_db": psnr} for prompt, _, _, psnr in rows],
    }


def _write_png(path: Path, image) -> None:
    from edit_mobile.fileio import atomic_write_file, png_bytes

    atomic_write_file(path, png_bytes(image, "validate"))


def contact_sheet(rows, title: str):
    """Rows of (prompt, artifact image, reference image, psnr) -> one image."""
    from PIL import Image, ImageDraw

    scale = max(1, -(-MIN_SHOWN_WIDTH // rows[0][1].size[0]))  # enlarge tiny images, pixels kept sharp
    rows = [(prompt, _enlarged(a, scale), _enlarged(b, scale), psnr) for prompt, a, b, psnr in rows]
    width, height = rows[0][1].size
    sheet = Image.new("RGB", (2 * width + GAP, CAPTION_HEIGHT + len(rows) * (height + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 2), f"left: {title}   right: PyTorch reference", fill="black")
    for row, (prompt, produced, expected, psnr) in enumerate(rows):
        top = CAPTION_HEIGHT + row * (height + CAPTION_HEIGHT)
        caption = f"PSNR {psnr:.1f} dB  {prompt}"
        while draw.textlength(caption) > sheet.width - 4 and len(caption) > 20:
            caption = caption[:-2] + "…"
        draw.text((2, top + 2), caption, fill="black")
        sheet.paste(produced, (0, top + CAPTION_HEIGHT))
        sheet.paste(expected, (width + GAP, top + CAPTION_HEIGHT))
    return sheet


def _enlarged(image, scale: int):
    from PIL import Image

    return image if scale == 1 else image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
