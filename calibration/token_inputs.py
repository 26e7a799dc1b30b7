"""How a prompt becomes a text encoder's token inputs, as data: one `TokenizerInput` a tokenizer.

PixArt-Sigma has one (T5: input_ids and attention_mask); SD3 has three (CLIP-L, CLIP-G and T5
input ids, no masks). A pipeline artifact records each one's description beside its tokenizer
files, and its runtime (and the apps) tokenize from that description exactly as the encoder
that was exported does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edit_mobile.errors import UserError

# What PixArtSigmaPipeline does to a prompt without bs4/ftfy (no caption cleaning).
LOWER_STRIP = "lower-strip"
PREPROCESSINGS = ("none", LOWER_STRIP)


@dataclass(frozen=True)
class TokenizerInput:
    """One tokenizer and the `encode_prompt` inputs it fills: padded to max_length, truncated,
    special tokens added (what diffusers' pipelines ask of every tokenizer they use)."""

    files: str  # its folder in a diffusers pipeline folder and in a pipeline artifact
    tokenizer: object  # a transformers tokenizer
    max_length: int
    input_ids: str  # the name of the encode_prompt input it gives
    attention_mask: str | None = None  # the name of the mask input, where the encoder takes one
    preprocessing: str = "none"

    def __call__(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        texts = [p.lower().strip() for p in prompts] if self.preprocessing == LOWER_STRIP else list(prompts)
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        named = {self.input_ids: tokens.input_ids}
        if self.attention_mask is not None:
            named[self.attention_mask] = tokens.attention_mask
        return named

    def describe(self) -> dict:
        return {"files": self.files, "tokenizer_class": type(self.tokenizer).__name__,
                "max_length": self.max_length, "input_ids": self.input_ids,
                "attention_mask": self.attention_mask, "preprocessing": self.preprocessing}

    @classmethod
    def from_description(cls, description: dict, tokenizer) -> TokenizerInput:
        preprocessing = description.get("preprocessing", "none")
        if preprocessing not in PREPROCESSINGS:
            raise UserError(f"tokenizer preprocessing {preprocessing!r} is not one of {', '.join(PREPROCESSINGS)}; "
                            "re-export the artifact")
        return cls(description["files"], tokenizer, int(description["max_length"]), description["input_ids"],
                   description.get("attention_mask"), preprocessing)


def tokenize_all(inputs: list[TokenizerInput], prompts: list[str]) -> dict[str, torch.Tensor]:
    """Every tokenizer's inputs for `prompts`, by encode_prompt input name."""
    named: dict[str, torch.Tensor] = {}
    for item in inputs:
        named.update(item(prompts))
    return named
