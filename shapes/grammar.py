"""Captions of the shapes world: generated from a scene's attributes, parsed back into them.

A caption follows one of four templates (shapes/GRAMMAR.md lists them with examples):

    plain              a small red circle in the top left on a white background
    list               small red circle, top left, white background
    parenthetical      a red circle (small) at the top left over white
    background_first   a white background with a small red circle in the top left

Two objects are joined by " and " ("; " in the list template), e.g. "a small red circle in the
top left and a large blue square in the bottom right on a white background". Within a caption
each object's words are drawn from a few synonyms: small/little, large/big, "top left" /
"top-left" / "upper left", "center" / "centre" / "middle", ... (POSITION_WORDS). Colours and
shapes have one word each: they are the attributes a checker judges.

`parse_caption` accepts every caption the templates generate, ignoring case, extra spaces
and a final period, "a" or "an", and "in"/"at"/"on" before any position; anything else is a
UserError.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edit_mobile.errors import UserError
from edit_mobile.safe_read import read_text_file
from edit_mobile.shapes.world import (
    COLOURS,
    MAX_OBJECTS,
    POSITIONS,
    SHAPES,
    Scene,
    ShapeObject,
    sample_heldout_scenes,
    sample_training_scenes,
)

TEMPLATES: tuple[str, ...] = ("plain", "list", "parenthetical", "background_first")

SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "top left": ("top left", "top-left", "upper left"),
    "top": ("top", "top middle"),
    "top right": ("top right", "top-right", "upper right"),
    "left": ("left", "middle left"),
    "center": ("center", "centre", "middle"),
    "right": ("right", "middle right"),
    "bottom left": ("bottom left", "bottom-left", "lower left"),
    "bottom": ("bottom", "bottom middle"),
    "bottom right": ("bottom right", "bottom-right", "lower right"),
}
# The prepositions generated before each position ("in the top left", "at the top", "on the
# left"); the parser takes any of them before any position.
PREPOSITIONS: dict[str, tuple[str, ...]] = {
    position: ("at",) if position in ("top", "bottom") else
    ("on", "at") if position in ("left", "right") else ("in", "at")
    for position in POSITIONS
}  # fmt: skip

GRAMMAR_DOC = "shapes/GRAMMAR.md"
_EXAMPLE = "a small red circle in the top left on a white background"


@dataclass(frozen=True)
class CaptionedScene:
    """A caption and the scene it describes."""

    caption: str
    scene: Scene


# --- generating -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wording:
    """The synonyms one object's phrase uses."""

    size: str
    position: str
    preposition: str


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _wordings(obj: ShapeObject) -> list[_Wording]:
    """Every way the grammar can word this object's size and position."""
    return [
        _Wording(size, position, preposition)
        for size in SIZE_WORDS[obj.size]
        for position in POSITION_WORDS[obj.position]
        for preposition in PREPOSITIONS[obj.position]
    ]


def _object_phrase(template: str, obj: ShapeObject, wording: _Wording) -> str:
    where = f"{wording.preposition} the {wording.position}"
    if template == "list":
        return f"{wording.size} {obj.colour} {obj.shape}, {wording.position}"
    if template == "parenthetical":
        return f"{_article(obj.colour)} {obj.colour} {obj.shape} ({wording.size}) {where}"
    return f"{_article(wording.size)} {wording.size} {obj.colour} {obj.shape} {where}"


def _caption_from(template: str, scene: Scene, wordings: tuple[_Wording, ...]) -> str:
    phrases = [_object_phrase(template, o, w) for o, w in zip(scene.objects, wordings, strict=True)]
    background = scene.background
    if template == "plain":
        return f"{' and '.join(phrases)} on {_article(background)} {background} background"
    if template == "list":
        separator = ", " if len(phrases) == 1 else "; "
        return separator.join([*phrases, f"{background} background"])
    if template == "parenthetical":
        return f"{' and '.join(phrases)} over {background}"
    if template == "background_first":
        return f"{_article(background)} {background} background with {' and '.join(phrases)}"
    raise ValueError(f"unknown template {template!r} (one of: {', '.join(TEMPLATES)})")


def make_caption(
    scene: Scene, rng: np.random.Generator | int | None = None, template: str | None = None
) -> str:
    """A caption of the scene. With no `rng` it is the canonical one (first synonyms, "plain"
    unless `template` says otherwise); with an rng or seed, template and synonyms are random."""
    if rng is None:
        wordings = tuple(_wordings(obj)[0] for obj in scene.objects)
        return _caption_from(template or "plain", scene, wordings)
    rng = np.random.default_rng(rng)
    template = template or TEMPLATES[rng.integers(len(TEMPLATES))]
    wordings = tuple(
        options[rng.integers(len(options))] for options in map(_wordings, scene.objects)
    )
    return _caption_from(template, scene, wordings)


def all_captions(scene: Scene) -> list[str]:
    """Every caption the grammar generates for this scene, over all templates and synonyms."""
    choices = list(itertools.product(*map(_wordings, scene.objects)))
    return [_caption_from(t, scene, wordings) for t in TEMPLATES for wordings in choices]


def sample_training_captions(
    count: int, seed: int = 0, two_object_share: float = 0.5
) -> list[CaptionedScene]:
    """Captioned training scenes: no object of them is a held-out triple."""
    scenes = sample_training_scenes(count, seed=seed, two_object_share=two_object_share)
    return _captioned(scenes, seed)


def sample_heldout_captions(count: int, seed: int = 0) -> list[CaptionedScene]:
    """Captioned one-object scenes whose (colour, shape, position) triple is held out."""
    return _captioned(sample_heldout_scenes(count, seed=seed), seed)


def _captioned(scenes: list[Scene], seed: int) -> list[CaptionedScene]:
    # Phrasing draws from its own stream, so it does not shift which scenes a seed gives.
    rng = np.random.default_rng([seed, 1])
    return [CaptionedScene(make_caption(scene, rng), scene) for scene in scenes]


# --- parsing ----------------------------------------------------------------------------------


def _one_of(words) -> str:
    # Longest first, so "top left" is tried before "top".
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


_SIZE_OF = {word: size for size, words in SIZE_WORDS.items() for word in words}
_POSITION_OF = {word: pos for pos, words in POSITION_WORDS.items() for word in words}
_ART = "an?"
_PREP = _one_of({p for preps in PREPOSITIONS.values() for p in preps})
_SIZE, _COLOUR, _SHAPE = _one_of(_SIZE_OF), _one_of(COLOURS), _one_of(SHAPES)
_BARE_POSITION = _one_of(_POSITION_OF)


def _object_pattern(template: str, i: int) -> str:
    size, colour = f"(?P<size{i}>{_SIZE})", f"(?P<colour{i}>{_COLOUR})"
    shape, position = f"(?P<shape{i}>{_SHAPE})", f"(?P<position{i}>{_BARE_POSITION})"
    if template == "list":
        return f"{size} {colour} {shape}, {position}"
    if template == "parenthetical":
        return rf"{_ART} {colour} {shape} \({size}\) {_PREP} the {position}"
    return f"{_ART} {size} {colour} {shape} {_PREP} the {position}"


def _caption_pattern(template: str, n_objects: int) -> re.Pattern:
    objects = [_object_pattern(template, i) for i in range(n_objects)]
    background = f"(?P<background>{_COLOUR})"
    if template == "plain":
        text = f"{' and '.join(objects)} on {_ART} {background} background"
    elif template == "list":
        separator = ", " if n_objects == 1 else "; "
        text = separator.join([*objects, f"{background} background"])
    elif template == "parenthetical":
        text = f"{' and '.join(objects)} over {background}"
    else:
        text = f"{_ART} {background} background with {' and '.join(objects)}"
    return re.compile(text)


_PATTERNS = [
    _caption_pattern(t, n) for t in TEMPLATES for n in range(1, MAX_OBJECTS + 1)
]  # fmt: skip
_VOCABULARY = frozenset(
    re.findall(r"[a-z]+", " ".join([*_SIZE_OF, *_POSITION_OF, *COLOURS, *SHAPES]))
) | {"a", "an", "the", "and", "background", "over", "with", *re.findall("[a-z]+", _PREP)}


def normalize_caption(text: str) -> str:
    """Lower case, single spaces, no space before , ; ) or after (, no final period."""
    text = " ".join(text.lower().split()).removesuffix(".").strip()
    text = re.sub(r"\s+([,;)])", r"\1", text)
    return re.sub(r"\(\s+", "(", text)


def _scene_from(match: re.Match, n_objects: int) -> Scene:
    groups = match.groupdict()
    objects = tuple(
        ShapeObject(
            colour=groups[f"colour{i}"],
            shape=groups[f"shape{i}"],
            size=_SIZE_OF[groups[f"size{i}"]],
            position=_POSITION_OF[groups[f"position{i}"]],
        )
        for i in range(n_objects)
    )
    return Scene(objects, groups["background"])


def _why_not_a_caption(text: str) -> str:
    """The first thing wrong with a text no template matches, in a few words."""
    if not text:
        return "it is empty"
    words = re.findall(r"[a-z]+|[^a-z\s,;()-]", text)
    unknown = [w for w in words if w not in _VOCABULARY]
    if unknown:
        word = unknown[0] if len(unknown[0]) <= 30 else unknown[0][:27] + "..."
        return f"unknown word {word!r}"
    n_objects = len(re.findall(rf"\b{_SHAPE}\b", text))
    if n_objects == 0:
        return f"it names no shape ({', '.join(SHAPES)})"
    if n_objects > MAX_OBJECTS:
        return f"it names {n_objects} shapes; a caption has 1 or {MAX_OBJECTS} objects"
    if len(re.findall(rf"\b{_SIZE}\b", text)) < n_objects:
        return "an object has no size (small or large)"
    if len(re.findall(rf"\b{_COLOUR}\b", text)) < n_objects + 1:
        return "a colour is missing: each object and the background have one"
    if len(re.findall(rf"\b{_BARE_POSITION}\b", text)) < n_objects:
        return "an object has no position (e.g. top left, center)"
    return f"its words follow none of the templates (e.g. {_EXAMPLE!r})"


def _outside_grammar(text: str, why: str) -> UserError:
    shown = text if len(text) <= 120 else text[:117] + "..."
    return UserError(f"{shown!r} is not a caption of the shapes grammar: {why}; see {GRAMMAR_DOC}")


def parse_caption(text: str) -> Scene:
    """The scene a caption describes; a UserError (one line, saying why) if it is not a
    caption of the grammar."""
    normalized = normalize_caption(text)
    for pattern in _PATTERNS:
        match = pattern.fullmatch(normalized)
        if match:
            try:
                return _scene_from(match, n_objects=1 + ("colour1" in match.groupdict()))
            except ValueError as err:  # e.g. the background has an object's colour
                raise _outside_grammar(text, str(err)) from None
    raise _outside_grammar(text, _why_not_a_caption(normalized))


def read_captions(path: str | os.PathLike) -> list[CaptionedScene]:
    """The captions of a file, one a line (blank lines and `#` comments skipped), parsed. An
    outside-grammar caption is a UserError naming its file and line."""
    path = Path(path)
    text = read_text_file(path, "captions file")
    captions = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            captions.append(CaptionedScene(line, parse_caption(line)))
        except UserError as err:
            raise UserError(f"{path}:{number}: {err}") from None
    if not captions:
        raise UserError(
            f"captions file {path} has no captions; write one caption a line (# starts a comment)"
        )
    return captions
