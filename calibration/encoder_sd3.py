"""SD3 / SD3.5 text encoders: CLIP-L and CLIP-G (77 tokens each) and T5 (256 tokens).

Follows diffusers' StableDiffusion3Pipeline.encode_prompt: each CLIP gives its penultimate
hidden states and its projected pooled output; the two CLIP sequences are concatenated on
channels (768 + 1280 = 2048), zero-padded to T5's width (4096) and put before T5's tokens:
77 + 256 = 333 tokens. Pooled = concat of both CLIP projections (2048). No T5 -> zeros, as
in the pipeline. The negative prompt for guidance is "" for all three.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from edit_mobile.calibration.embeddings import EncodedPrompts, PromptEmbeddings
from edit_mobile.calibration.token_inputs import TokenizerInput, tokenize_all
from edit_mobile.errors import UserError
from edit_mobile.models.text_encoders import random_t5

CLIP_TOKENS = 77
T5_TOKENS = 256
BATCH = 8


class SD3PromptModule(torch.nn.Module):
    """Token ids -> the denoiser's prompt inputs, as StableDiffusion3Pipeline.encode_prompt builds
    them: (B, Tc) CLIP-L and CLIP-G ids and (B, Tt) T5 ids (absent without T5) ->
    encoder_hidden_states (B, Tc + Tt, D) and pooled_projections (B, Dp). What a pipeline
    artifact's `encode_prompt` method runs."""

    output_names = ("encoder_hidden_states", "pooled_projections")

    def __init__(self, clip_l, clip_g, t5, joint_dim: int, t5_tokens: int):
        super().__init__()
        self.clip_l, self.clip_g, self.t5 = clip_l, clip_g, t5
        self.joint_dim, self.t5_tokens = joint_dim, t5_tokens

    @staticmethod
    def _clip(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = model(input_ids, output_hidden_states=True)
        return output.hidden_states[-2].float(), output[0].float()  # penultimate states, projected pooled

    def forward(self, clip_l_input_ids: torch.Tensor, clip_g_input_ids: torch.Tensor,
                t5_input_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_l, pooled_l = self._clip(self.clip_l, clip_l_input_ids)
        hidden_g, pooled_g = self._clip(self.clip_g, clip_g_input_ids)
        clip_hidden = torch.cat([hidden_l, hidden_g], dim=-1)  # (b, Tc, Dl + Dg)
        if self.t5 is None:  # the pipeline's zeros in T5's place
            t5_hidden = clip_hidden.new_zeros(clip_hidden.shape[0], self.t5_tokens, self.joint_dim)
        else:
            t5_hidden = self.t5(t5_input_ids)[0].float()  # (b, Tt, D)
        clip_hidden = F.pad(clip_hidden, (0, t5_hidden.shape[-1] - clip_hidden.shape[-1]))
        return torch.cat([clip_hidden, t5_hidden], dim=-2), torch.cat([pooled_l, pooled_g], dim=-1)


class SD3TextEncoder:
    def __init__(self, clip_l, clip_g, t5, joint_dim: int, description: dict,
                 clip_tokens: int = CLIP_TOKENS, t5_tokens: int = T5_TOKENS):
        # Each of clip_l, clip_g: (tokenizer, CLIPTextModelWithProjection); t5: (tokenizer, model) or None.
        self.clip_l, self.clip_g, self.t5 = clip_l, clip_g, t5
        for _, model in (clip_l, clip_g) + ((t5,) if t5 else ()):
            model.eval()
        self.joint_dim = joint_dim
        self.clip_tokens, self.t5_tokens = clip_tokens, t5_tokens
        self.description = description

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, joint_dim: int,
                    tokens: int = CLIP_TOKENS + T5_TOKENS) -> SD3TextEncoder:
        """A diffusers SD3 pipeline folder: text_encoder[_2,_3]/, tokenizer[_2,_3]/ (T5 optional).
        `tokens` is the whole prompt length: CLIP's (its tokenizer's model_max_length) + T5's."""
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        folder = Path(folder)
        needed = ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"]
        missing = [name for name in needed if not (folder / name).is_dir()]
        if missing:
            raise UserError(
                f"{folder} is not an SD3 pipeline folder (missing {', '.join(missing)}/); "
                "pass the folder holding text_encoder, text_encoder_2 and their tokenizers"
            )

        def load(model_class, encoder_name, tokenizer_name):
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder / tokenizer_name, local_files_only=True)
                model = model_class.from_pretrained(
                    folder / encoder_name, local_files_only=True, torch_dtype=torch.float32
                )
            except (OSError, ValueError) as err:
                raise UserError(f"cannot load {folder / encoder_name}: {err}") from err
            return tokenizer, model

        clip_l = load(CLIPTextModelWithProjection, "text_encoder", "tokenizer")
        clip_g = load(CLIPTextModelWithProjection, "text_encoder_2", "tokenizer_2")
        has_t5 = (folder / "text_encoder_3").is_dir()
        t5 = load(T5EncoderModel, "text_encoder_3", "tokenizer_3") if has_t5 else None
        clip_tokens = getattr(clip_l[0], "model_max_length", CLIP_TOKENS)
        clip_tokens = clip_tokens if clip_tokens <= 1024 else CLIP_TOKENS
        if tokens <= clip_tokens:
            raise UserError(f"SD3 prompts are {clip_tokens} CLIP tokens + T5 tokens: the prompt length "
                            f"({tokens}) must exceed {clip_tokens}")
        t5_tokens = tokens - clip_tokens
        description = {"kind": "sd3-clip-l-clip-g-t5" if has_t5 else "sd3-clip-l-clip-g",
                       "path": str(folder), "tokens": clip_tokens + t5_tokens}
        return cls(clip_l, clip_g, t5, joint_dim, description, clip_tokens, t5_tokens)

    @classmethod
    def random(cls, joint_dim: int, pooled_dim: int, seed: int = 0,
               t5_tokens: int = T5_TOKENS) -> SD3TextEncoder:
        """Seeded small CLIP-L / CLIP-G / T5 with the real layout, ByT5 byte tokenizers."""
        from transformers import ByT5Tokenizer

        clip_l_width, clip_g_width = joint_dim // 4, joint_dim // 2  # concat fits in joint_dim
        pooled_l = pooled_dim // 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # model_max_length: the length StableDiffusion3Pipeline pads CLIP prompts to.
            clip_l = (ByT5Tokenizer(model_max_length=CLIP_TOKENS), _random_clip(clip_l_width, pooled_l))
            clip_g = (ByT5Tokenizer(model_max_length=CLIP_TOKENS), _random_clip(clip_g_width, pooled_dim - pooled_l))
        t5 = tuple(reversed(random_t5(joint_dim, seed + 1)))  # (tokenizer, model)
        description = {"kind": "random-sd3", "joint_dim": joint_dim, "pooled_dim": pooled_dim,
                       "seed": seed, "tokens": CLIP_TOKENS + t5_tokens}
        return cls(clip_l, clip_g, t5, joint_dim, description, t5_tokens=t5_tokens)

    def without_t5(self) -> SD3TextEncoder:
        """CLIP-L and CLIP-G alone (T5-XXL's 4.7 B parameters do not fit a phone): T5's tokens
        become zeros, as in StableDiffusion3Pipeline without text_encoder_3."""
        description = {**self.description, "kind": "sd3-clip-l-clip-g"}
        return SD3TextEncoder(self.clip_l, self.clip_g, None, self.joint_dim, description,
                              self.clip_tokens, self.t5_tokens)

    def tokenizer_inputs(self) -> list[TokenizerInput]:
        """CLIP-L's, CLIP-G's and (with T5) T5's ids, no masks: the pipeline passes none."""
        inputs = [TokenizerInput("tokenizer", self.clip_l[0], self.clip_tokens, "clip_l_input_ids"),
                  TokenizerInput("tokenizer_2", self.clip_g[0], self.clip_tokens, "clip_g_input_ids")]
        if self.t5 is not None:
            inputs.append(TokenizerInput("tokenizer_3", self.t5[0], self.t5_tokens, "t5_input_ids"))
        return inputs

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """(P, T) int64 ids by the name `prompt_module` takes them."""
        return tokenize_all(self.tokenizer_inputs(), prompts)

    def prompt_module(self) -> SD3PromptModule:
        return SD3PromptModule(self.clip_l[1], self.clip_g[1], self.t5[1] if self.t5 else None,
                               self.joint_dim, self.t5_tokens)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> PromptEmbeddings:
        module = self.prompt_module()
        embeds, pooled = [], []
        for start in range(0, len(prompts), BATCH):
            hidden, projections = module(**self.tokenize(prompts[start : start + BATCH]))
            embeds.append(hidden)  # (b, Tc + Tt, joint_dim)
            pooled.append(projections)  # (b, pooled_dim)
        return PromptEmbeddings(torch.cat(embeds), torch.cat(pooled))

    def encode(self, prompts: list[str], guidance: bool) -> EncodedPrompts:
        positive = self._encode(prompts)
        negative = self._encode([""]) if guidance else None
        return EncodedPrompts(positive, negative, self.description)


def _random_clip(width: int, projection_dim: int):
    from transformers import ByT5Tokenizer, CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = ByT5Tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,  # the penultimate layer's states are the ones used
        num_attention_heads=2,
        max_position_embeddings=CLIP_TOKENS,
        projection_dim=projection_dim,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,  # pooled = the first end-of-text token
        bos_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config)
