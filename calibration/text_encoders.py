"""The text encoder a model family's prompts go through, by the family's text encoder layout
(`Family.text_encoder`): a pipeline folder's own, or for tiny presets the seeded random one
every stage (calibrate, export --pipeline, generate, validate) builds alike. SD3's three
encoders have their own class; every other family's one encoder comes from the family."""

from __future__ import annotations

from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.models.families.base import CLIP_T5_LAYOUT


def folder_text_encoder(family: str, folder: Path, tokens: int, width: int):
    """The encoder(s) of a pipeline folder (or, for PixArt, a T5 folder), giving prompts of
    `tokens` tokens and `width` channels."""
    from edit_mobile.models.families import get_family

    owner = get_family(family)
    if owner.text_encoder == CLIP_T5_LAYOUT:
        from edit_mobile.calibration.encoder_sd3 import SD3TextEncoder

        return SD3TextEncoder.from_folder(folder, width, tokens)
    from edit_mobile.calibration.encoder_pixart import PixArtTextEncoder

    tokenizer, encoder = owner.text_encoder_parts(Path(folder))
    return PixArtTextEncoder(tokenizer, encoder, tokens, {"kind": owner.text_encoder, "path": str(folder), "tokens": tokens})


def random_text_encoder(family: str, tokens: int, width: int, pooled: int | None = None):
    """The seeded random encoder of a tiny preset; `pooled`: the pooled vector's width (SD3)."""
    from edit_mobile.models.families import get_family

    owner = get_family(family)
    if owner.text_encoder == CLIP_T5_LAYOUT:
        from edit_mobile.calibration.encoder_sd3 import CLIP_TOKENS, SD3TextEncoder

        if tokens <= CLIP_TOKENS:
            raise UserError(f"SD3 prompts are {CLIP_TOKENS} CLIP tokens + T5 tokens: --prompt-tokens must exceed "
                            f"{CLIP_TOKENS}")
        return SD3TextEncoder.random(width, pooled, t5_tokens=tokens - CLIP_TOKENS)
    from edit_mobile.calibration.encoder_pixart import PixArtTextEncoder

    tokenizer, encoder = owner.random_text_encoder_parts(width, seed=0)
    description = {"kind": f"random-{owner.text_encoder}", "width": width, "seed": 0, "tokens": tokens}
    return PixArtTextEncoder(tokenizer, encoder, tokens, description)
