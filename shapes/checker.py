"""Judging an image against the scene its caption describes.

The background colour is known from the caption, so objects are what is not background: every
pixel is named by its nearest palette colour, and the 8-connected regions not named like the
background are candidate objects. In each, a pixel's coverage is estimated by projecting its
colour onto the line from the image's background colour to the object's colour (the median
of the object a pixel in from its edge). Regions are split again where coverage falls under a
half, so blurred neighbours touching through faint edges count as two, and measured by
coverage, which keeps blurred edges and pixel noise from biasing them:

    colour    nearest palette entry to the object's interior median colour
    shape     fill of the bounding box: square 1.0, circle 0.785, triangle 0.5
    size      side of the bounding box: small 0.14, large 0.28 of the image side
    position  the 3 x 3 grid cell of the centroid

Regions smaller than a quarter of the smallest object (a small triangle) are noise. Expected
objects are matched to found ones by the assignment with most attributes right; `count` is
right when exactly as many objects are found as the caption has, and `background` when at
least half the image is named like the caption's background.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edit_mobile.shapes.grammar import parse_caption
from edit_mobile.shapes.world import COLOURS, PALETTE, POSITIONS, SIZE_FRACTION, Scene, ShapeObject

OBJECT_ATTRIBUTES = ("colour", "shape", "size", "position")
SCENE_ATTRIBUTES = ("background", "count")
ATTRIBUTES = OBJECT_ATTRIBUTES + SCENE_ATTRIBUTES

# Bounding-box fill between the shapes' exact fills (square 1.0, circle 0.785, triangle 0.5),
# a little below the midpoints (0.89, 0.64): blur and noise round a square's corners, and
# thin a triangle's, so squares measure lower and triangles higher than their exact fills.
SQUARE_MIN_FILL = 0.87
CIRCLE_MIN_FILL = 0.68
# Every shape's box is square; a region twice as long as wide is no shape of this world.
MAX_ASPECT = 1.6
# Geometric mean of the small and large sides: 0.198 of the image side.
LARGE_MIN_SIDE = float(np.sqrt(SIZE_FRACTION["small"] * SIZE_FRACTION["large"]))
NOISE_SHARE_OF_SMALLEST = 0.25
# Objects cover at most 16% of an image; less than half background means a wrong background.
MIN_BACKGROUND_SHARE = 0.5
MAX_MATCHED_CANDIDATES = 6
# Coverage under this counts as none when measuring extents: pixel noise lifts every column's
# largest coverage, and so the width, by about two standard deviations.
COVERAGE_FLOOR = 0.1

_PALETTE_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
_PALETTE_SQUARED = (_PALETTE_RGB**2).sum(axis=1)


@dataclass(frozen=True)
class FoundObject:
    """An object measured in an image. `shape` is None when the region is no shape's outline."""

    colour: str
    shape: str | None
    size: str
    position: str
    area: float  # summed coverage, in pixels
    fill: float  # area / bounding-box area
    side: float  # sqrt of the bounding-box area, as a fraction of the image side
    centroid: tuple[float, float]  # (x, y), as fractions of the image width and height


@dataclass(frozen=True)
class ObjectCheck:
    """One expected object, the found object matched to it (None if none), and the verdicts."""

    expected: ShapeObject
    found: FoundObject | None
    colour: bool
    shape: bool
    size: bool
    position: bool

    @property
    def all_correct(self) -> bool:
        return self.colour and self.shape and self.size and self.position


@dataclass(frozen=True)
class CheckResult:
    """Verdicts on one image. An object attribute is correct when it is for every object."""

    objects: tuple[ObjectCheck, ...]
    found: tuple[FoundObject, ...]
    background: bool
    count: bool

    @property
    def colour(self) -> bool:
        return all(check.colour for check in self.objects)

    @property
    def shape(self) -> bool:
        return all(check.shape for check in self.objects)

    @property
    def size(self) -> bool:
        return all(check.size for check in self.objects)

    @property
    def position(self) -> bool:
        return all(check.position for check in self.objects)

    @property
    def attributes(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    @property
    def judgements(self) -> list[tuple[str, bool]]:
        """Every single verdict: four per expected object, then background and count."""
        per_object = [(n, getattr(c, n)) for c in self.objects for n in OBJECT_ATTRIBUTES]
        return per_object + [("background", self.background), ("count", self.count)]

    @property
    def all_correct(self) -> bool:
        return all(self.attributes.values())


# --- pixels -----------------------------------------------------------------------------------


def as_rgb_array(image) -> np.ndarray:
    """float32 (H, W, 3) in [0, 255] from a PIL image, or an (H, W, 3) uint8 array or float
    array in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32)
    return np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0


def nearest_palette_index(rgb: np.ndarray) -> np.ndarray:
    """Index into COLOURS of the palette colour nearest to each pixel (or colour)."""
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2, and |p|^2 is the same for every c: one matrix product.
    return (_PALETTE_SQUARED - 2 * rgb @ _PALETTE_RGB.T).argmin(axis=-1)


def label_regions(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected regions of a boolean mask, each as an (N, 2) array of (row, col).

    Union-find over each row's runs of set pixels: Python loops over runs, not pixels, so a
    256 px image takes about a millisecond.
    """
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, starts = np.nonzero(edges == 1)  # row-major, so the i-th start and stop pair up
    stops = np.nonzero(edges == -1)[1]
    runs = list(zip(rows.tolist(), starts.tolist(), stops.tolist(), strict=True))
    parent = list(range(len(runs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    previous_row, previous, current = -2, [], []
    for index, (row, start, stop) in enumerate(runs):
        if row != previous_row:
            previous = current if row == previous_row + 1 else []
            current, previous_row = [], row
        for other in previous:
            _, other_start, other_stop = runs[other]
            if other_start <= stop and start <= other_stop:  # touching, diagonals included
                parent[root(other)] = root(index)
        current.append(index)

    regions: dict[int, list[tuple[int, int, int]]] = {}
    for index, run in enumerate(runs):
        regions.setdefault(root(index), []).append(run)
    return [_run_pixels(group) for group in regions.values()]


def _run_pixels(runs: list[tuple[int, int, int]]) -> np.ndarray:
    rows = np.concatenate([np.full(stop - start, row) for row, start, stop in runs])
    cols = np.concatenate([np.arange(start, stop) for _, start, stop in runs])
    return np.stack([rows, cols], axis=1)


# --- measuring --------------------------------------------------------------------------------


def _region_colour(rgb: np.ndarray, pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Median colour of the region's half farthest from the background: its fully covered
    interior, not its blended edge."""
    colours = rgb[pixels[:, 0], pixels[:, 1]]
    distance = ((colours - background) ** 2).sum(axis=1)
    return np.median(colours[distance >= np.median(distance)], axis=0)


def _interior_colour(crop: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Median colour of the object a pixel in from its edge: chosen by place, not by colour,
    so pixel noise does not push the estimate away from the background."""
    interior = ~_dilate(~inside)
    return np.median(crop[interior if interior.sum() >= 5 else inside], axis=0)


def _coverage(rgb: np.ndarray, colour: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Estimated coverage of each pixel: where its colour lies from the background (0) to the
    object's colour (1)."""
    direction = colour - background
    return (rgb - background) @ direction / max(float(direction @ direction), 1e-6)


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    height, width = mask.shape
    grown = np.zeros_like(mask)
    for dy, dx in itertools.product(range(3), range(3)):
        grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def _shape_of(fill: float, aspect: float) -> str | None:
    if aspect > MAX_ASPECT:
        return None
    if fill >= SQUARE_MIN_FILL:
        return "square"
    return "circle" if fill >= CIRCLE_MIN_FILL else "triangle"


def _measure(rgb: np.ndarray, pixels: np.ndarray, background: np.ndarray) -> FoundObject:
    """Measure an object from its coverage over its pixels and their neighbours.

    Coverage, not a thresholded mask: a 9 px square at 64 px loses its partly covered corners
    to any threshold, and looks round. Summed coverage is the area; the sum over columns of each
    column's largest coverage is the width (likewise the height), exact for a square.
    """
    height, width = rgb.shape[:2]
    top, left = np.maximum(pixels.min(axis=0) - 1, 0)
    bottom, right = np.minimum(pixels.max(axis=0) + 2, (height, width))
    crop = rgb[top:bottom, left:right]
    inside = np.zeros(crop.shape[:2], dtype=bool)
    inside[pixels[:, 0] - top, pixels[:, 1] - left] = True
    colour = _interior_colour(crop, inside)
    coverage = _coverage(crop, colour, background) * _dilate(inside)

    # Unclipped, pixel noise averages out of the area; clipping it would bias it.
    area = max(float(coverage.sum()), 1e-6)
    # A column's largest value is biased up by noise: the floor takes most of that away.
    profile = np.clip((coverage - COVERAGE_FLOOR) / (1 - 2 * COVERAGE_FLOOR), 0.0, 1.0)
    box_width = max(float(profile.max(axis=0).sum()), 1e-6)
    box_height = max(float(profile.max(axis=1).sum()), 1e-6)
    weights = np.clip(coverage, 0.0, 1.0)
    rows, cols = np.indices(coverage.shape)
    cx = (left + float((weights * (cols + 0.5)).sum()) / float(weights.sum())) / width
    cy = (top + float((weights * (rows + 0.5)).sum()) / float(weights.sum())) / height
    side = float(np.sqrt(box_width * box_height / (height * width)))
    row, col = min(int(cy * 3), 2), min(int(cx * 3), 2)
    return FoundObject(
        colour=COLOURS[int(nearest_palette_index(colour))],
        shape=_shape_of(
            area / (box_width * box_height),
            max(box_width, box_height) / min(box_width, box_height),
        ),
        size="large" if side >= LARGE_MIN_SIDE else "small",
        position=POSITIONS[3 * row + col],
        area=area,
        fill=area / (box_width * box_height),
        side=side,
        centroid=(cx, cy),
    )


def find_objects(image, background: str) -> list[FoundObject]:
    """The objects of an image on a background of the given palette colour, largest first."""
    rgb = as_rgb_array(image)
    return _find_objects(rgb, nearest_palette_index(rgb), background)


def _find_objects(rgb: np.ndarray, names: np.ndarray, background: str) -> list[FoundObject]:
    height, width = rgb.shape[:2]
    is_background = names == COLOURS.index(background)
    # The image's own background colour, not the palette's: a generated background a little
    # off its colour would otherwise read as faint coverage everywhere.
    background_rgb = (
        np.median(rgb[is_background], axis=0)
        if is_background.any()
        else np.array(PALETTE[background], dtype=np.float32)
    )
    smallest = 0.5 * (SIZE_FRACTION["small"] ** 2) * height * width  # a small triangle
    min_area = max(NOISE_SHARE_OF_SMALLEST * smallest, 4)

    found = []
    for region in label_regions(~is_background):
        if len(region) < min_area:
            continue
        colour = _region_colour(rgb, region, background_rgb)
        coverage = _coverage(rgb[region[:, 0], region[:, 1]], colour, background_rgb)
        covered = region[coverage >= 0.5]
        # Relabel what is covered at least half: two blurred neighbours touching only through
        # their faint edges become two objects again.
        mask = np.zeros((height, width), dtype=bool)
        mask[covered[:, 0], covered[:, 1]] = True
        found += [
            _measure(rgb, part, background_rgb)
            for part in label_regions(mask)
            if len(part) >= min_area
        ]
    return sorted(found, key=lambda obj: -obj.area)


# --- judging ----------------------------------------------------------------------------------


def _verdicts(expected: ShapeObject, found: FoundObject | None) -> ObjectCheck:
    if found is None:
        return ObjectCheck(expected, None, False, False, False, False)
    return ObjectCheck(
        expected,
        found,
        colour=found.colour == expected.colour,
        shape=found.shape == expected.shape,
        size=found.size == expected.size,
        position=found.position == expected.position,
    )


def _match(expected: tuple[ShapeObject, ...], found: list[FoundObject]) -> list[ObjectCheck]:
    """The assignment of found objects to expected ones with the most attributes right."""
    candidates = [*found[:MAX_MATCHED_CANDIDATES], *[None] * len(expected)]
    best, best_score = None, -1
    for assignment in itertools.permutations(range(len(candidates)), len(expected)):
        checks = [_verdicts(e, candidates[i]) for e, i in zip(expected, assignment, strict=True)]
        score = sum(getattr(c, n) for c in checks for n in OBJECT_ATTRIBUTES)
        if score > best_score:
            best, best_score = checks, score
    return best


def check_image(image, scene: Scene) -> CheckResult:
    """Judge an image (PIL image or (H, W, 3) array) against the scene its caption describes."""
    rgb = as_rgb_array(image)
    names = nearest_palette_index(rgb)
    background_share = float(np.mean(names == COLOURS.index(scene.background)))
    found = _find_objects(rgb, names, scene.background)
    return CheckResult(
        objects=tuple(_match(scene.objects, found)),
        found=tuple(found),
        background=background_share >= MIN_BACKGROUND_SHARE,
        count=len(found) == len(scene.objects),
    )


def score(images, scenes) -> dict:
    """Accuracy of images against their scenes (or captions, parsed).

    attribute_accuracy: share of all verdicts right (four per object, background, count);
    prompt_accuracy: share of images with every verdict right;
    per_attribute: share right of each attribute's verdicts.
    """
    images, scenes = list(images), list(scenes)
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    if not images:
        raise ValueError("score needs at least one image")
    results = [
        check_image(image, parse_caption(s) if isinstance(s, str) else s)
        for image, s in zip(images, scenes, strict=True)
    ]
    judgements = [j for r in results for j in r.judgements]
    return {
        "attribute_accuracy": float(np.mean([ok for _, ok in judgements])),
        "prompt_accuracy": float(np.mean([r.all_correct for r in results])),
        "per_attribute": {
            name: float(np.mean([ok for n, ok in judgements if n == name])) for name in ATTRIBUTES
        },
        "n": len(results),
    }
