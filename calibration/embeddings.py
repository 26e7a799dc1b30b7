"""Prompt embeddings: what every text encoder produces, and precomputed ones from safetensors.

A precomputed file holds, for P prompts:
  prompt_embeds                 (P, T, D)   float
  negative_prompt_embeds        (1 or P, T, D), needed for classifier-free guidance
  pooled_prompt_embeds          (P, D')     SD3 only
  negative_pooled_prompt_embeds (1 or P, D') SD3 only, with guidance
  prompt_attention_mask, negative_prompt_attention_mask  (P or 1, T) PixArt, optional:
                                all ones (every token attended) when absent
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.fileio import sha256_file


@dataclass
class PromptEmbeddings:
    prompt_embeds: torch.Tensor  # (P, T, D)
    pooled: torch.Tensor | None = None  # (P, D') for SD3
    mask: torch.Tensor | None = None  # (P, T) float, 1 = a real token (PixArt's T5 padding mask)

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    def select(self, rows: int | list[int]) -> PromptEmbeddings:
        rows = [rows] if isinstance(rows, int) else rows
        pick = lambda tensor: None if tensor is None else tensor[rows]  # noqa: E731
        return PromptEmbeddings(pick(self.prompt_embeds), pick(self.pooled), pick(self.mask))

    def as_inputs(self) -> dict[str, torch.Tensor]:
        """The denoiser inputs these embeddings provide, by signature input name."""
        mask = self.mask if self.mask is not None else torch.ones(self.prompt_embeds.shape[:2])
        named = {"encoder_hidden_states": self.prompt_embeds, "encoder_attention_mask": mask}
        if self.pooled is not None:
            named["pooled_projections"] = self.pooled
        return named


@dataclass
class EncodedPrompts:
    """Conditional embeddings of every prompt and the unconditional ("") ones for guidance."""

    positive: PromptEmbeddings  # P prompts
    negative: PromptEmbeddings | None  # 1 or P entries; None when there is no guidance
    description: dict  # what produced them, for the calibration manifest

    def negative_for(self, index: int) -> PromptEmbeddings:
        assert self.negative is not None
        return self.negative.select(index if len(self.negative) > 1 else 0)


def load_precomputed(path: str | os.PathLike, need_negative: bool, need_pooled: bool) -> EncodedPrompts:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as err:
        raise UserError(f"cannot read embeddings {path}: {err}; pass a .safetensors file") from err
    required = ["prompt_embeds"]
    if need_negative:
        required.append("negative_prompt_embeds")
    if need_pooled:
        required.append("pooled_prompt_embeds")
        if need_negative:
            required.append("negative_pooled_prompt_embeds")
    missing = [key for key in required if key not in tensors]
    if missing:
        raise UserError(
            f"embeddings {path} lack {', '.join(missing)}; "
            f"store {', '.join(required)} (guidance <= 1 needs no negative ones)"
        )
    embeds = tensors["prompt_embeds"].float()
    if embeds.ndim != 3 or embeds.shape[0] == 0:
        raise UserError(
            f"prompt_embeds in {path} has shape {tuple(embeds.shape)}; expected (prompts, tokens, width)"
        )
    positive = PromptEmbeddings(
        embeds,
        _optional_float(tensors.get("pooled_prompt_embeds")),
        _optional_float(tensors.get("prompt_attention_mask")),
    )
    negative = None
    if need_negative:
        negative = PromptEmbeddings(
            tensors["negative_prompt_embeds"].float(),
            _optional_float(tensors.get("negative_pooled_prompt_embeds")),
            _optional_float(tensors.get("negative_prompt_attention_mask")),
        )
    description = {"kind": "precomputed", "path": str(path), "sha256": sha256_file(path)}
    return EncodedPrompts(positive, negative, description)


def _optional_float(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()
