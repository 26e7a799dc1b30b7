"""The shapes world's tokenizers and text encoders.

Tokenizers are real ones, built for the world's vocabulary: a T5 Unigram tokenizer (every
caption word a piece, single characters as the fallback) and a CLIP BPE tokenizer trained on the
grammar's captions (whole words become tokens). Encoders keep their families' layouts (PixArt a
T5 encoder; SD3 CLIP-L and CLIP-G, penultimate states + projected pooled output, and a T5) and
start from a seeded random initialisation.

Before the teacher trains, the encoders learn to read the world (`pretrain_scene_reading`): small
linear heads, dropped afterwards, must read the whole scene (background; each object's colour,
shape, size and position, in grid order) off every T5 token and off each CLIP's pooled output.
The teacher then trains with the encoders frozen. Why: trained jointly from random (and frozen
random before that), the encoders left the binding of colours to roles to the teacher's
cross-attention, which did not learn it within the hour: fitting the mean image from pure noise
plateaued at an error of 0.55, where the right background alone gives 0.15 (and captions of the
form "red background" reach it in 50 steps). With pretrained scene-reading T5 features the same
probe reaches 0.16 in 50 steps.

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


T5_LAYERS = 4  # reading a two-object caption into every token's features takes more than 2


def t5_encoder(tokenizer, width: int = T5_WIDTH, seed: int = 0):
    """A T5 v1.1 encoder (gated GELU), seeded random (then pretrained to read the world)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=32, d_ff=2 * width, num_layers=T5_LAYERS,
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
        ((hidden, mask),) = self.readers(captions)
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask.float()}

    SUBFOLDERS = {"encoder": "text_encoder"}

    def readers(self, captions: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """What pretraining reads the scene from: (B, L, width) T5 states and their (B, L) mask."""
        tokens = self.tokenizer([c.lower().strip() for c in captions], padding="max_length",
                                max_length=PROMPT_TOKENS, truncation=True, return_tensors="pt")
        return [(self.encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0], tokens.attention_mask)]

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

    def readers(self, captions: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each CLIP's pooled projection (it sees the whole caption; earlier CLIP tokens do not,
        CLIP being causal) and every T5 token, each with its mask."""
        clip_ids = self.clip_tokenizer(captions, padding="max_length", max_length=PROMPT_TOKENS,
                                       truncation=True, return_tensors="pt").input_ids
        out = []
        for model in (self.clip_l, self.clip_g):
            pooled = model(clip_ids)[0][:, None]
            out.append((pooled, torch.ones(pooled.shape[:2], dtype=torch.long)))
        tokens = self.t5_tokenizer(captions, padding="max_length", max_length=PROMPT_TOKENS,
                                   truncation=True, return_tensors="pt")
        out.append((self.t5(tokens.input_ids)[0], tokens.attention_mask))
        return out

    def load_trained(self, pipeline: Path) -> None:
        """Take the pipeline folder's trained encoders in place of the seeded initial ones."""
        _load_trained(self, pipeline)


def _load_trained(text, pipeline: Path) -> None:
    for name, subfolder in text.SUBFOLDERS.items():
        model = type(getattr(text, name)).from_pretrained(Path(pipeline) / subfolder)
        setattr(text, name, model.eval().requires_grad_(False))


# --- reading the world: encoder pretraining ---------------------------------------------------

# What a caption says, as classes: the background, then two objects in grid order (class 0 of an
# object attribute: no such object).
SCENE_SLOTS = [("background", len(COLOURS))] + [
    (f"object{i}.{name}", len(values) + 1)
    for i in range(2)
    for name, values in (("colour", COLOURS), ("shape", SHAPES), ("size", SIZES), ("position", POSITIONS))
]


def scene_classes(scene: Scene) -> list[int]:
    objects = sorted(scene.objects, key=lambda o: POSITIONS.index(o.position))
    classes = [COLOURS.index(scene.background)]
    for i in range(2):
        if i < len(objects):
            o = objects[i]
            classes += [COLOURS.index(o.colour) + 1, SHAPES.index(o.shape) + 1, SIZES.index(o.size) + 1,
                        POSITIONS.index(o.position) + 1]
        else:
            classes += [0, 0, 0, 0]
    return classes


def pretrain_scene_reading(text, steps: int, seed: int, batch: int = 128, lr: float = 1e-3) -> dict:
    """Train `text`'s encoders until the scene can be read linearly off every output they hand
    the teacher (see the module docstring); leaves them frozen. Captions come from training
    scenes only (no held-out triple), drawn afresh from the grammar. Returns the held-out-batch
    accuracy: the share of outputs reading each slot right, worst and mean over slots."""
    import numpy as np
    from tqdm import tqdm

    from edit_mobile.shapes import make_caption
    from edit_mobile.training.shapes_data import training_scene

    rng = np.random.default_rng(seed)
    encoders = torch.nn.ModuleList(text.encoders.values()).train().requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        widths = [states.shape[-1] for states, _ in text.readers(["a red circle on a blue background"])]
        heads = torch.nn.ModuleList([torch.nn.Linear(w, sum(n for _, n in SCENE_SLOTS)) for w in widths])
    optimizer = torch.optim.AdamW([*encoders.parameters(), *heads.parameters()], lr=lr, weight_decay=0.01)

    def draw(count):
        scenes = [training_scene(rng) for _ in range(count)]
        return [make_caption(s, rng) for s in scenes], torch.tensor([scene_classes(s) for s in scenes])

    bar = tqdm(range(steps), desc="text encoders: reading the scene", unit="step")
    for _ in bar:
        captions, classes = draw(batch)
        loss = sum(_slot_loss(head(states), mask, classes)
                   for head, (states, mask) in zip(heads, text.readers(captions), strict=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    encoders.eval().requires_grad_(False)
    with torch.no_grad():
        captions, classes = draw(512)
        accuracy = [_slot_accuracy(head(states), mask, classes)
                    for head, (states, mask) in zip(heads, text.readers(captions), strict=True)]
    per_slot = torch.stack(accuracy).min(0).values  # the weakest reader, slot by slot
    return {"steps": steps, "slot_accuracy_worst": float(per_slot.min()), "slot_accuracy_mean": float(per_slot.mean())}


def _split(logits: torch.Tensor):
    start = 0
    for _, count in SCENE_SLOTS:
        yield logits[..., start : start + count]
        start += count


def _slot_loss(logits: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every slot at every unmasked output, averaged."""
    weight = mask.float()
    total = 0.0
    for k, slot in enumerate(_split(logits)):
        target = classes[:, k : k + 1].expand(-1, slot.shape[1])
        loss = torch.nn.functional.cross_entropy(slot.transpose(1, 2), target, reduction="none")
        total = total + (loss * weight).sum() / weight.sum()
    return total


def _slot_accuracy(logits: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(slots,) share of unmasked outputs that read each slot right."""
    weight = mask.float()
    right = [((slot.argmax(-1) == classes[:, k : k + 1]).float() * weight).sum() / weight.sum()
             for k, slot in enumerate(_split(logits))]
    return torch.stack(right)
