"""The shapes world: attributes, the held-out split, sampling and exact anti-aliased rendering.

A scene is one or two flat-coloured objects on a flat background. Every object is a
`ShapeObject(colour, shape, size, position)`; a `Scene` is its objects plus a background colour
that no object uses. Positions are the cells of a 3 x 3 grid; an object's bounding box stays
inside its cell, so its centroid does too and two objects never touch.

Geometry is in units of the image side, so a scene renders to the same picture at any size
(64, 128, 256, 512 px...). Each pixel's colour is the background blended with the object by
the pixel's coverage, measured on an 8 x 8 grid of sub-pixel samples.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Well separated in RGB: the closest pair (orange, yellow) is 107 apart, so a generated colour
# can drift by a third of that and still be named correctly.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 30),
    "green": (20, 160, 60),
    "blue": (30, 70, 220),
    "yellow": (255, 235, 20),
    "purple": (130, 40, 170),
    "orange": (250, 130, 0),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
# Row-major over the 3 x 3 grid: POSITIONS[3 * row + column].
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip

# Side of an object's bounding box, as a fraction of the image side. A large object fits its
# cell (1/3) with a margin; small and large differ 2x in side, 4x in area.
SIZE_FRACTION: dict[str, float] = {"small": 0.14, "large": 0.28}
# Jitter moves an object by at most this share of its free margin in the cell, so neighbours
# in adjacent cells stay at least 0.027 of the side apart (1.7 px at 64 px).
JITTER_SHARE = 0.5
SUPERSAMPLE = 8
DEFAULT_IMAGE_SIZE = 256
MAX_OBJECTS = 2

HELDOUT_SALT = "edit-mobile/shapes/heldout/v1"
HELDOUT_PER_COLOUR = 4  # 8 colours x 4 = 32 of the 216 colour x shape x position triples (14.8%)


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene, by name: e.g. ShapeObject("red", "circle", "small", "top left")."""

    colour: str
    shape: str
    size: str
    position: str

    def __post_init__(self):
        for field, value, allowed in (
            ("colour", self.colour, COLOURS),
            ("shape", self.shape, SHAPES),
            ("size", self.size, SIZES),
            ("position", self.position, POSITIONS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r} (one of: {', '.join(allowed)})")

    @property
    def triple(self) -> tuple[str, str, str]:
        """The (colour, shape, position) triple the held-out split is defined on."""
        return (self.colour, self.shape, self.position)


@dataclass(frozen=True)
class Scene:
    """One or two objects at different positions on a background of a colour none of them has."""

    objects: tuple[ShapeObject, ...]
    background: str

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene has 1 or {MAX_OBJECTS} objects, not {len(self.objects)}")
        if self.background not in COLOURS:
            raise ValueError(f"unknown background colour {self.background!r}")
        for obj in self.objects:
            if obj.colour == self.background:
                raise ValueError(f"the {obj.colour} {obj.shape} has the background's colour")
        positions = [obj.position for obj in self.objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"two objects in the {positions[0]}; objects need different positions")


# --- the held-out split ---------------------------------------------------------------------


def _seeded_order(names: tuple[str, ...], kind: str) -> list[str]:
    # Ranked by sha256 rather than shuffled by `random`: the split must never change with the
    # Python or numpy version.
    def rank(name: str) -> str:
        return hashlib.sha256(f"{HELDOUT_SALT}/{kind}/{name}".encode()).hexdigest()

    return sorted(names, key=rank)


def _heldout_triples() -> tuple[tuple[str, str, str], ...]:
    """32 triples dealt like cards so every attribute stays well covered in training.

    Slot k = 0..31 holds out (colour C[k // 4], shape S[(k + k // 9) % 3], position P[k % 9]),
    where C, S, P are the colours, shapes and positions in a seeded order. So each colour
    loses 4 triples at 4 different positions, each position 3 or 4, each shape 10 or 11; no
    (colour, position) pair loses more than one shape and no (colour, shape) or
    (shape, position) pair more than two, so every held-out triple is a new combination of
    pairs seen in training.
    """
    colours = _seeded_order(COLOURS, "colour")
    shapes = _seeded_order(SHAPES, "shape")
    positions = _seeded_order(POSITIONS, "position")
    dealt = {
        (colours[k // HELDOUT_PER_COLOUR], shapes[(k + k // 9) % 3], positions[k % 9])
        for k in range(HELDOUT_PER_COLOUR * len(COLOURS))
    }
    order = {name: i for names in (COLOURS, SHAPES, POSITIONS) for i, name in enumerate(names)}
    return tuple(sorted(dealt, key=lambda triple: [order[name] for name in triple]))


HELDOUT_TRIPLES: tuple[tuple[str, str, str], ...] = _heldout_triples()
_HELDOUT_SET = frozenset(HELDOUT_TRIPLES)


def is_heldout(attributes: Scene | ShapeObject | tuple[str, str, str]) -> bool:
    """Whether a triple is held out; a scene is held out if any of its objects is."""
    if isinstance(attributes, Scene):
        return any(is_heldout(obj) for obj in attributes.objects)
    if isinstance(attributes, ShapeObject):
        return attributes.triple in _HELDOUT_SET
    return tuple(attributes) in _HELDOUT_SET


# --- sampling ---------------------------------------------------------------------------------


_TRAINING_PAIRS = {
    position: [
        (colour, shape)
        for colour, shape in itertools.product(COLOURS, SHAPES)
        if (colour, shape, position) not in _HELDOUT_SET
    ]
    for position in POSITIONS
}


def _random_size(rng: np.random.Generator) -> str:
    return SIZES[rng.integers(len(SIZES))]


def _random_background(rng: np.random.Generator, objects: list[ShapeObject]) -> str:
    free = [c for c in COLOURS if c not in {obj.colour for obj in objects}]
    return free[rng.integers(len(free))]


def sample_scene(rng: np.random.Generator, n_objects: int = 1, heldout: bool = False) -> Scene:
    """A random scene whose objects are all training triples, or (heldout=True) a one-object
    scene whose triple is held out."""
    if heldout:
        if n_objects != 1:
            raise ValueError("held-out scenes have one object")
        colour, shape, position = HELDOUT_TRIPLES[rng.integers(len(HELDOUT_TRIPLES))]
        objects = [ShapeObject(colour, shape, _random_size(rng), position)]
    else:
        objects = []
        for index in rng.choice(len(POSITIONS), size=n_objects, replace=False):
            pairs = _TRAINING_PAIRS[POSITIONS[index]]
            colour, shape = pairs[rng.integers(len(pairs))]
            objects.append(ShapeObject(colour, shape, _random_size(rng), POSITIONS[index]))
    return Scene(tuple(objects), _random_background(rng, objects))


def sample_training_scenes(count: int, seed: int = 0, two_object_share: float = 0.5) -> list[Scene]:
    """`count` scenes none of whose objects is a held-out triple; about `two_object_share` of
    them have two objects."""
    rng = np.random.default_rng(seed)
    return [
        sample_scene(rng, n_objects=2 if rng.random() < two_object_share else 1)
        for _ in range(count)
    ]


def sample_heldout_scenes(count: int, seed: int = 0) -> list[Scene]:
    """`count` one-object scenes whose (colour, shape, position) triple is held out."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, n_objects=1, heldout=True) for _ in range(count)]


# --- rendering --------------------------------------------------------------------------------


def cell_of(position: str) -> tuple[int, int]:
    """(row, column) of a position in the 3 x 3 grid."""
    return divmod(POSITIONS.index(position), 3)


def object_box(obj: ShapeObject, rng: np.random.Generator) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the object's bounding box, in units of the image side."""
    row, column = cell_of(obj.position)
    side = SIZE_FRACTION[obj.size]
    reach = JITTER_SHARE * (1 / 3 - side) / 2
    dx, dy = rng.uniform(-reach, reach, size=2)
    return (column + 0.5) / 3 + dx, (row + 0.5) / 3 + dy, side


def _inside(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, side: float):
    half = side / 2
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    # Triangle: apex at the top centre, base along the bottom of the box (fills half of it).
    top = cy - half
    return (y <= cy + half) & (np.abs(x - cx) <= (y - top) / 2)


def _coverage(obj: ShapeObject, box, image_size: int):
    """The object's coverage of each pixel of its bounding box region: (rows, cols, coverage)."""
    cx, cy, side = box
    x0 = max(int(np.floor((cx - side / 2) * image_size)) - 1, 0)
    x1 = min(int(np.ceil((cx + side / 2) * image_size)) + 1, image_size)
    y0 = max(int(np.floor((cy - side / 2) * image_size)) - 1, 0)
    y1 = min(int(np.ceil((cy + side / 2) * image_size)) + 1, image_size)
    # Sub-pixel sample centres, in units of the image side.
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    xs = ((np.arange(x0, x1)[:, None] + offsets).ravel() / image_size)[None, :]
    ys = ((np.arange(y0, y1)[:, None] + offsets).ravel() / image_size)[:, None]
    inside = _inside(obj.shape, xs, ys, cx, cy, side)
    coverage = inside.reshape(y1 - y0, SUPERSAMPLE, x1 - x0, SUPERSAMPLE).mean(axis=(1, 3))
    return slice(y0, y1), slice(x0, x1), coverage


def render_array(scene: Scene, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """The scene as float RGB in [0, 255], shape (image_size, image_size, 3)."""
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int of at least 16 px, not {image_size!r}")
    image = np.empty((image_size, image_size, 3), dtype=np.float64)
    image[:] = PALETTE[scene.background]
    rng = np.random.default_rng(seed)
    for obj in scene.objects:
        rows, cols, coverage = _coverage(obj, object_box(obj, rng), image_size)
        alpha = coverage[..., None]
        image[rows, cols] = image[rows, cols] * (1 - alpha) + np.array(PALETTE[obj.colour]) * alpha
    return image


def render_scene(scene: Scene, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0) -> Image.Image:
    """The scene as an RGB image. `seed` picks the jitter of each object inside its cell; the
    same scene, size and seed always give the same pixels."""
    pixels = np.rint(render_array(scene, image_size, seed)).astype(np.uint8)
    return Image.fromarray(pixels)
