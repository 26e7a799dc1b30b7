"""A one-encoder family's prompts (PixArt-Sigma's T5; SANA's Gemma-2 the same way), a fixed
number of tokens.

Follows diffusers' PixArtSigmaPipeline.encode_prompt without caption cleaning (the pipeline's
own fallback when bs4/ftfy are absent): lower-case, pad to `max_tokens`, T5 hidden states.
The negative prompt for guidance is "". The encoder and tokenizer come from the family
(`Family.text_encoder_parts`, `random_text_encoder_parts`), through calibration/text_encoders.
"""

from __future__ import annotations

import torch

from edit_mobile.calibration.embeddings import EncodedPrompts, PromptEmbeddings
from edit_mobile.calibration.token_inputs import LOWER_STRIP, TokenizerInput, tokenize_all

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

