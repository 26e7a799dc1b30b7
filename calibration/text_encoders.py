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
    if _layout(family) == "gemma2":
        return gemma2_text_encoder(*_folder_gemma2(folder), tokens, {"kind": "gemma2", "path": str(folder)})
    if _layout(family) == "t5":
        from edit_mobile.calibration.encoder_pixart import PixArtTextEncoder

        return PixArtTextEncoder.from_folder(folder, tokens)
    from edit_mobile.calibration.encoder_sd3 import SD3TextEncoder

    return SD3TextEncoder.from_folder(folder, width, tokens)


def random_text_encoder(family: str, tokens: int, width: int, pooled: int | None = None):
    """The seeded random encoder of a tiny preset; `pooled`: the pooled vector's width (SD3)."""
    if _layout(family) == "gemma2":
        return gemma2_text_encoder(*_random_gemma2(width), tokens, {"kind": "random-gemma2", "width": width, "seed": 0})
    if _layout(family) == "t5":
        from edit_mobile.calibration.encoder_pixart import PixArtTextEncoder

        return PixArtTextEncoder.random(width, tokens)
    from edit_mobile.calibration.encoder_sd3 import CLIP_TOKENS, SD3TextEncoder

    if tokens <= CLIP_TOKENS:
        raise UserError(f"SD3 prompts are {CLIP_TOKENS} CLIP tokens + T5 tokens: --prompt-tokens must exceed "
                        f"{CLIP_TOKENS}")
    return SD3TextEncoder.random(width, pooled, t5_tokens=tokens - CLIP_TOKENS)


def gemma2_text_encoder(tokenizer, text_encoder, tokens: int, description: dict):
    """SANA's prompts: SanaPipeline's encoding without its complex human instruction is PixArt's
    with Gemma-2 in T5's place (lower-cased, stripped, right-padded to `tokens`; the last hidden
    states and the mask; negative prompt ""), so PixArt's one-tokenizer encoder runs it."""
    from edit_mobile.calibration.encoder_pixart import PixArtTextEncoder

    tokenizer.padding_side = "right"  # as SanaPipeline sets it: Gemma's tokenizer pads left
    return PixArtTextEncoder(tokenizer, text_encoder, tokens, {**description, "tokens": tokens})


def _folder_gemma2(folder: Path):
    import torch
    from transformers import AutoTokenizer, Gemma2Model

    if not (folder / "text_encoder" / "config.json").is_file():
        raise UserError(f"{folder} has no text_encoder/config.json; pass a SANA pipeline folder (text_encoder/, tokenizer/)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        text_encoder = Gemma2Model.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the Gemma-2 encoder from {folder}: {' '.join(str(err).split())}") from err
    return tokenizer, text_encoder.eval()


def _random_gemma2(width: int, seed: int = 0):
    """(ByT5 byte tokenizer, 2-layer Gemma2Model of hidden size `width`): seeded, no downloads."""
    import torch
    from transformers import ByT5Tokenizer, Gemma2Config, Gemma2Model

    tokenizer = ByT5Tokenizer()
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * min(width, 256),
                          num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                          query_pre_attn_scalar=16, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, bos_token_id=None, attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = Gemma2Model(config)
    return tokenizer, text_encoder.eval()
