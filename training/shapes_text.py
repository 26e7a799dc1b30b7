"""The shapes world's tokenizers and text encoders.

Tokenizers are real ones, built for the world's vocabulary: a T5 Unigram tokenizer (every
caption word a piece, single characters as the fallback) and a CLIP BPE tokenizer trained on the
grammar's captions (whole words become tokens). Encoders keep their families' layouts (PixArt a
T5 encoder; SD3 CLIP-L and CLIP-G, penultimate states + projected pooled output, and a T5), start
from a seeded random initialisation and are trained with the teacher (train_teacher.py). Frozen
random encoders were tried first: their features tangle which colour is the background's and
which the object's, and a 1.8 M-parameter teacher did not learn to untangle them within the hour
(the caption changed its loss by under 3%, even from pure noise).

Prompt lengths are the world's, not the real models': every caption fits in 32 tokens, so the
CLIP tokenizers' model_max_length and the T5 length for SD3 are 32.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import torch

from edit_mobile.shapes import COLOURS, HELDOUT_TRIPLES, all_captions
from edit_mobile.shapes.world import POSITIONS, SHAPES, SIZES, Scene, ShapeObject

PROMPT_TOKENS = 32  # the longest two-object caption is 26 tokens with its end token
T5_WIDTH = 128
CLIP_WIDTH = 64
CLIP_PROJECTION = 64
CHARACTERS = "abcdefghijklmnopqrstuvwxyz-,;().'"


def caption_corpus() -> list[str]:
    """Every caption form of a spread of scenes: all words, templates and synonyms of the
    grammar (held-out triples included: a tokenizer must read any caption of the grammar)."""
    corpus = []
    for colour, shape, position in itertools.product(COLOURS[:2], SHAPES, POSITIONS):
        background = next(c for c in COLOURS if c != colour)
        for size in SIZES:
            corpus += all_captions(Scene((ShapeObject(colour, shape, size, position),), background))
    second = ShapeObject(COLOURS[2], SHAPES[0], SIZES[0], POSITIONS[0])
    for colour in COLOURS[3:]:
        first = ShapeObject(colour, SHAPES[1], SIZES[1], POSITIONS[-1])
        corpus += all_captions(Scene((first, second), COLOURS[1]))
    corpus += [f"{c} {s}" for c, s, _ in HELDOUT_TRIPLES]
    return corpus


def vocabulary() -> list[str]:
    words = set()
    for caption in caption_corpus():
        words.update(re.findall(r"[a-z]+", caption.lower()))
    return sorted(words)


def t5_tokenizer():
    """A T5 Unigram tokenizer: pad 0, eos 1, unk 2, then "▁word" pieces and single characters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -1.0) for word in vocabulary()]
    pieces += [(word, -1.5) for word in vocabulary()]  # after "-" or "(": "top-left", "(large)"
    pieces += [(char, -10.0) for char in CHARACTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=PROMPT_TOKENS)


def clip_tokenizer():
    """A CLIP BPE tokenizer (vocab.json + merges with the </w> end-of-word suffix) whose merges
    were learnt from the grammar's captions, so each world word is one token."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, end_of_word_suffix="</w>",
                                  initial_alphabet=list(CHARACTERS), show_progress=False)
    bpe.train_from_iterator(caption_corpus(), trainer)
    learnt = json.loads(bpe.to_str())["model"]
    # The trainer breaks frequency ties in hash order: renumber and re-rank canonically (shorter
    # tokens first, then alphabetical) so that every build gives the same ids.
    merges = sorted({tuple(p) if isinstance(p, list) else tuple(p.split(" ")) for p in learnt["merges"]},
                    key=lambda pair: (len(pair[0] + pair[1]), pair))
    tokens = set(learnt["vocab"]) | {f"{char}</w>" for char in CHARACTERS} | set(CHARACTERS)
    vocab = {token: i for i, token in enumerate(specials + sorted(tokens - set(specials), key=lambda t: (len(t), t)))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=PROMPT_TOKENS)


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval().requires_grad_(False)


def t5_encoder(tokenizer, width: int = T5_WIDTH, seed: int = 0):
    """A 2-layer T5 v1.1 encoder (gated GELU), seeded random (trained with the teacher)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=32, d_ff=2 * width, num_layers=2,
                      num_heads=width // 32, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    return _seeded(seed, lambda: T5EncoderModel(config))


def clip_encoder(tokenizer, width: int = CLIP_WIDTH, projection: int = CLIP_PROJECTION, seed: int = 0):
    """A 2-layer CLIP text encoder with projection (the penultimate layer's states are SD3's)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=PROMPT_TOKENS,
                            projection_dim=projection, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _seeded(seed, lambda: CLIPTextModelWithProjection(config))


class PixArtShapesText:
    """T5 tokenizer + encoder; `encode` is PixArtSigmaPipeline.encode_prompt's computation."""

    def __init__(self, seed: int = 0):
        self.tokenizer = t5_tokenizer()
        self.encoder = t5_encoder(self.tokenizer, seed=seed)

    @property
    def encoders(self) -> dict[str, torch.nn.Module]:
        return {"encoder": self.encoder}

    def encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer([c.lower().strip() for c in captions], padding="max_length",
                                max_length=PROMPT_TOKENS, truncation=True, return_tensors="pt")
        hidden = self.encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": tokens.attention_mask.float()}

    SUBFOLDERS = {"encoder": "text_encoder"}

    def load_trained(self, pipeline: Path) -> None:
        """Take the pipeline folder's trained encoders in place of the seeded initial ones."""
        _load_trained(self, pipeline)


class SD3ShapesText:
    """CLIP-L, CLIP-G and T5; `encode` is StableDiffusion3Pipeline.encode_prompt's computation:
    concatenated CLIP penultimate states (64 + 64 = T5's width, so no padding) before T5's
    states, and the two projected pooled outputs concatenated."""

    def __init__(self, seed: int = 0):
        self.clip_tokenizer = clip_tokenizer()
        self.clip_l = clip_encoder(self.clip_tokenizer, seed=seed)
        self.clip_g = clip_encoder(self.clip_tokenizer, seed=seed + 1)
        self.t5_tokenizer = t5_tokenizer()
        self.t5 = t5_encoder(self.t5_tokenizer, seed=seed + 2)

    @property
    def encoders(self) -> dict[str, torch.nn.Module]:
        return {"clip_l": self.clip_l, "clip_g": self.clip_g, "t5": self.t5}

    def encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        clip_ids = self.clip_tokenizer(captions, padding="max_length", max_length=PROMPT_TOKENS,
                                       truncation=True, return_tensors="pt").input_ids
        hidden, pooled = [], []
        for model in (self.clip_l, self.clip_g):
            output = model(clip_ids, output_hidden_states=True)
            hidden.append(output.hidden_states[-2])
            pooled.append(output[0])
        t5_ids = self.t5_tokenizer(captions, padding="max_length", max_length=PROMPT_TOKENS,
                                   truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
        t5_hidden = self.t5(t5_ids)[0]
        embeds = torch.cat([torch.cat(hidden, dim=-1), t5_hidden], dim=-2)  # (B, 64, 128)
        return {"encoder_hidden_states": embeds, "pooled_projections": torch.cat(pooled, dim=-1)}

    SUBFOLDERS = {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5": "text_encoder_3"}

    def load_trained(self, pipeline: Path) -> None:
        """Take the pipeline folder's trained encoders in place of the seeded initial ones."""
        _load_trained(self, pipeline)


def _load_trained(text, pipeline: Path) -> None:
    for name, subfolder in text.SUBFOLDERS.items():
        model = type(getattr(text, name)).from_pretrained(Path(pipeline) / subfolder)
        setattr(text, name, model.eval().requires_grad_(False))
