"""PixArt-Sigma's text encoder: T5 (v1.1 XXL in the real model), a fixed number of tokens.

Follows diffusers' PixArtSigmaPipeline.encode_prompt without caption cleaning (the pipeline's
own fallback when bs4/ftfy are absent): lower-case, pad to `max_tokens`, T5 hidden states.
The negative prompt for guidance is "". Nothing is downloaded: a local folder, or a small
randomly initialised T5 with a byte tokenizer for presets that have no real weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from edit_mobile.calibration.embeddings import EncodedPrompts, PromptEmbeddings
from edit_mobile.calibration.token_inputs import LOWER_STRIP, TokenizerInput, tokenize_all
from edit_mobile.errors import UserError

BATCH = 8  # prompts per encoder call: bounds memory with the 4.7B-parameter T5-XXL


class T5PromptModule(torch.nn.Module):
    """Token ids -> the denoiser's prompt inputs: (B, T) int64 input_ids and attention_mask ->
    encoder_hidden_states (B, T, D) and encoder_attention_mask (B, T), float32. What a pipeline
    artifact's `encode_prompt` method runs."""

    output_names = ("encoder_hidden_states", "encoder_attention_mask")

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.text_encoder(input_ids, attention_mask=attention_mask)[0]
        return hidden.float(), attention_mask.float()


class PixArtTextEncoder:
    def __init__(self, tokenizer, text_encoder, max_tokens: int, description: dict):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval()
        self.max_tokens = max_tokens
        self.description = description

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, max_tokens: int) -> PixArtTextEncoder:
        """A diffusers PixArt pipeline folder (text_encoder/, tokenizer/) or a T5 folder."""
        from transformers import AutoTokenizer, T5EncoderModel

        folder = Path(folder)
        encoder_dir, tokenizer_dir = folder, folder
        if (folder / "text_encoder").is_dir():
            encoder_dir, tokenizer_dir = folder / "text_encoder", folder / "tokenizer"
        if not (encoder_dir / "config.json").is_file():
            raise UserError(
                f"{folder} is not a T5 encoder folder (no config.json); pass a PixArt pipeline "
                "folder with text_encoder/ and tokenizer/, or a T5 encoder folder"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
            text_encoder = T5EncoderModel.from_pretrained(
                encoder_dir, local_files_only=True, torch_dtype=torch.float32
            )
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load the T5 encoder from {folder}: {err}") from err
        description = {"kind": "t5", "path": str(folder), "tokens": max_tokens}
        return cls(tokenizer, text_encoder, max_tokens, description)

    @classmethod
    def random(cls, width: int, max_tokens: int, seed: int = 0) -> PixArtTextEncoder:
        """A 2-layer T5 encoder of output width `width`, seeded, with ByT5's byte tokenizer."""
        text_encoder, tokenizer = random_t5(width, seed)
        description = {"kind": "random-t5", "width": width, "seed": seed, "tokens": max_tokens}
        return cls(tokenizer, text_encoder, max_tokens, description)

    def tokenizer_inputs(self) -> list[TokenizerInput]:
        """T5's, lower-cased and stripped as PixArtSigmaPipeline does without caption cleaning."""
        return [TokenizerInput("tokenizer", self.tokenizer, self.max_tokens, "input_ids", "attention_mask",
                               LOWER_STRIP)]

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask, (P, T) int64: the inputs of `prompt_module`."""
        return tokenize_all(self.tokenizer_inputs(), prompts)

    def prompt_module(self) -> T5PromptModule:
        return T5PromptModule(self.text_encoder)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> PromptEmbeddings:
        module = self.prompt_module()
        chunks, masks = [], []
        for start in range(0, len(prompts), BATCH):
            hidden, mask = module(**self.tokenize(prompts[start : start + BATCH]))
            chunks.append(hidden)  # (b, T, D)
            masks.append(mask)  # (b, T)
        return PromptEmbeddings(torch.cat(chunks), mask=torch.cat(masks))  # (P, T, D), (P, T)

    def encode(self, prompts: list[str], guidance: bool) -> EncodedPrompts:
        positive = self._encode(prompts)
        negative = self._encode([""]) if guidance else None
        return EncodedPrompts(positive, negative, self.description)


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
