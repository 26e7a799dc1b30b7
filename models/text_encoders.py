"""T5 encoders (PixArt-Sigma's, and SD3's third): a local folder's, or a small seeded random
one with ByT5's byte tokenizer for presets that have no real weights. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

from edit_mobile.errors import UserError


def t5_parts(folder: Path):
    """(tokenizer, T5EncoderModel) of a pipeline folder (text_encoder/, tokenizer/) or a T5 folder."""
    from transformers import AutoTokenizer, T5EncoderModel

    folder = Path(folder)
    encoder_dir, tokenizer_dir = folder, folder
    if (folder / "text_encoder").is_dir():
        encoder_dir, tokenizer_dir = folder / "text_encoder", folder / "tokenizer"
    if not (encoder_dir / "config.json").is_file():
        raise UserError(f"{folder} is not a T5 encoder folder (no config.json); pass a PixArt pipeline "
                        "folder with text_encoder/ and tokenizer/, or a T5 encoder folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        text_encoder = T5EncoderModel.from_pretrained(encoder_dir, local_files_only=True, torch_dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the T5 encoder from {folder}: {err}") from err
    return tokenizer, text_encoder.eval()


def random_t5(width: int, seed: int):
    """(T5EncoderModel, ByT5Tokenizer): deterministic for a seed, needs no downloaded files."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    tokenizer = ByT5Tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=16,
        d_ff=2 * min(width, 256),
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as in PixArt-Sigma and SD3
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    return model.eval(), tokenizer
