"""The text encoder a model family's prompts go through, by the family's text encoder layout
(`Family.text_encoder`): a pipeline folder's own, or for tiny presets the seeded random one
every stage (calibrate, export --pipeline, generate, validate) builds alike."""

from __future__ import annotations

from pathlib import Path

from edit_mobile.errors import UserError


def _layout(family: str) -> str:
    from edit_mobile.models.families import get_family

    return get_family(family).text_encoder


def folder_text_encoder(family: str, folder: Path, tokens: int, width: int):
    """The encoder(s) of a pipeline folder (or, for PixArt, a T5 folder), giving prompts of
    `tokens` tokens and `width` channels."""
    if _layout(family) == "t5":
        from edit_mobile.calibration.encoder_pixart import PixArtTextEncoder

        return PixArtTextEncoder.from_folder(folder, tokens)
    from edit_mobile.calibration.encoder_sd3 import SD3TextEncoder

    return SD3TextEncoder.from_folder(folder, width, tokens)


def random_text_encoder(family: str, tokens: int, width: int, pooled: int | None = None):
    """The seeded random encoder of a tiny preset; `pooled`: the pooled vector's width (SD3)."""
    if _layout(family) == "t5":
        from edit_mobile.calibration.encoder_pixart import PixArtTextEncoder

        return PixArtTextEncoder.random(width, tokens)
    from edit_mobile.calibration.encoder_sd3 import CLIP_TOKENS, SD3TextEncoder

    if tokens <= CLIP_TOKENS:
        raise UserError(f"SD3 prompts are {CLIP_TOKENS} CLIP tokens + T5 tokens: --prompt-tokens must exceed "
                        f"{CLIP_TOKENS}")
    return SD3TextEncoder.random(width, pooled, t5_tokens=tokens - CLIP_TOKENS)
