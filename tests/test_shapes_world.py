"""The shapes world: grammar round trips, refusals, the held-out split, rendering, the checker."""

import dataclasses
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edit_mobile.errors import UserError
from edit_mobile.shapes import (
    COLOURS,
    HELDOUT_TRIPLES,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    TEMPLATES,
    Scene,
    ShapeObject,
    all_captions,
    check_image,
    is_heldout,
    make_caption,
    parse_caption,
    read_captions,
    render_scene,
    sample_heldout_captions,
    sample_heldout_scenes,
    sample_training_captions,
    sample_training_scenes,
    score,
)
from edit_mobile.shapes.checker import label_regions
from edit_mobile.shapes.grammar import POSITION_WORDS, SIZE_WORDS
from edit_mobile.shapes.world import SIZE_FRACTION, cell_of, object_box

GRAMMAR_MD = Path(__file__).resolve().parents[1] / "shapes" / "GRAMMAR.md"
EXAMPLE = "a small red circle in the top left and a large blue square in the bottom right on a white background"


def random_scenes(count: int, seed: int) -> list[Scene]:
    """Half one-object, half two-object scenes of any triples (held-out ones too)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(count):
        n_objects = 1 + index % 2
        positions = rng.choice(len(POSITIONS), size=n_objects, replace=False)
        objects = [
            ShapeObject(_pick(rng, COLOURS), _pick(rng, SHAPES), _pick(rng, SIZES), POSITIONS[p])
            for p in positions
        ]
        free = [c for c in COLOURS if c not in {o.colour for o in objects}]
        scenes.append(Scene(tuple(objects), _pick(rng, free)))
    return scenes


def _pick(rng: np.random.Generator, names) -> str:
    names = sorted(names) if isinstance(names, set) else list(names)
    return names[rng.integers(len(names))]


def degrade(image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Mild faults of a generated image: Gaussian blur of 1 px at 256 px, pixel noise of 8/255,
    colours off by a gain of up to 6% and a shift of up to 10 per channel."""
    blurred = image.filter(ImageFilter.GaussianBlur(image.width / 256))
    pixels = np.asarray(blurred, dtype=np.float32)
    pixels = pixels * rng.uniform(0.94, 1.06, 3) + rng.uniform(-10, 10, 3)
    pixels += rng.normal(0, 8, pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


# --- grammar ----------------------------------------------------------------------------------


def test_every_template_and_synonym_round_trips():
    scenes = random_scenes(40, seed=1)
    captions = [(caption, scene) for scene in scenes for caption in all_captions(scene)]
    assert len(captions) > 5000
    for caption, scene in captions:
        assert parse_caption(caption) == scene, caption


def test_sampled_captions_round_trip_and_use_every_phrasing():
    samples = sample_training_captions(600, seed=2) + sample_heldout_captions(100, seed=2)
    for sample in samples:
        assert parse_caption(sample.caption) == sample.scene, sample.caption
    text = "\n".join(sample.caption for sample in samples)
    for words in [*SIZE_WORDS.values(), *POSITION_WORDS.values()]:
        for word in words:
            assert re.search(rf"\b{re.escape(word)}\b", text), word
    templates = Counter(_template_of(sample.caption) for sample in samples)
    assert set(templates) == set(TEMPLATES) and min(templates.values()) > 100
    assert Counter(len(s.scene.objects) for s in samples[:600]).keys() == {1, 2}


def _template_of(caption: str) -> str:
    if "(" in caption:
        return "parenthetical"
    if " background with " in caption:
        return "background_first"
    return "list" if "," in caption else "plain"


def test_canonical_captions_and_the_examples_of_the_brief():
    scene = parse_caption(EXAMPLE)
    assert scene == Scene(
        (
            ShapeObject("red", "circle", "small", "top left"),
            ShapeObject("blue", "square", "large", "bottom right"),
        ),
        "white",
    )
    assert make_caption(scene) == EXAMPLE
    one = Scene((ShapeObject("red", "circle", "small", "top left"),), "white")
    for caption in (
        "a small red circle in the top left on a white background",
        "small red circle, top left, white background",
        "a red circle (small) at the top left over white",
        "a white background with a small red circle in the top-left",
        "  A Small RED circle   at the upper left on a white background.",
    ):
        assert parse_caption(caption) == one, caption
    centre = Scene((ShapeObject("orange", "square", "large", "center"),), "black")
    for word in ("center", "centre", "middle"):
        assert parse_caption(f"a big orange square in the {word} on a black background") == centre
    assert make_caption(centre, template="parenthetical").startswith("an orange square (large)")


@pytest.mark.parametrize(
    "caption, why",
    [
        ("", "it is empty"),
        ("a pink circle in the top left on a white background", "unknown word 'pink'"),
        ("a small red hexagon in the top left on a white background", "unknown word 'hexagon'"),
        ("a red circle in the top left on a white background", "an object has no size"),
        ("a small circle in the top left on a white background", "a colour is missing"),
        ("a small red circle on a white background", "an object has no position"),
        ("a small red circle in the top left on a red background", "the background's colour"),
        (
            "a small red circle in the top left and a big blue square at the top-left on a white background",
            "need different positions",
        ),
        (
            "small red circle, top left; small red square, top; small red triangle, left; white background",
            "3 shapes",
        ),
        ("top left white background small red circle", "follow none of the templates"),
        ("a small red circle in the top left on a white background!", "unknown word '!'"),
        ("x" * 500, "unknown word 'xxxxxxxxxxxxxxxxxxxxxxxxxxx...'"),
    ],
)
def test_outside_grammar_is_refused_in_one_line(caption, why):
    with pytest.raises(UserError) as error:
        parse_caption(caption)
    message = str(error.value)
    assert "\n" not in message and len(message) < 400
    assert "is not a caption of the shapes grammar: " in message
    assert why in message
    assert message.endswith("; see shapes/GRAMMAR.md")


def test_read_captions_skips_comments_and_names_the_bad_line(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text(
        "# evaluation captions\n\na small red circle in the top left on a white background\n"
        "  big blue square, center, yellow background  \n# end\n",
        encoding="utf-8",
    )
    captions = read_captions(good)
    assert [c.scene for c in captions] == [
        parse_caption("a small red circle in the top left on a white background"),
        parse_caption("big blue square, center, yellow background"),
    ]
    assert captions[1].caption == "big blue square, center, yellow background"

    bad = tmp_path / "captions.txt"
    lines = ["# header", "", *[c.caption for c in sample_training_captions(4, seed=3)]]
    lines.insert(6, "a small pink circle in the top left on a white background")
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as error:
        read_captions(bad)
    message = str(error.value)
    assert message.startswith(f"{bad}:7: 'a small pink circle in the top left on a white")
    assert "is not a caption of the shapes grammar: unknown word 'pink'" in message
    assert "\n" not in message and message.endswith("see shapes/GRAMMAR.md")


def test_read_captions_refuses_unreadable_files(tmp_path):
    empty, binary = tmp_path / "empty.txt", tmp_path / "binary.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    binary.write_bytes(b"\xff\xfe caption")
    for path, why in (
        (empty, "has no captions"),
        (binary, "is not UTF-8"),
        (tmp_path / "missing.txt", "cannot read captions file"),
    ):
        with pytest.raises(UserError, match=why) as error:
            read_captions(path)
        assert "\n" not in str(error.value)


# --- held-out split ---------------------------------------------------------------------------


def test_heldout_split_is_fifteen_percent_balanced_and_documented():
    triples = len(COLOURS) * len(SHAPES) * len(POSITIONS)
    assert triples == 216 and len(set(HELDOUT_TRIPLES)) == len(HELDOUT_TRIPLES) == 32
    assert 0.13 < len(HELDOUT_TRIPLES) / triples < 0.17
    assert set(Counter(t[0] for t in HELDOUT_TRIPLES).values()) == {4}
    assert set(Counter(t[1] for t in HELDOUT_TRIPLES).values()) <= {10, 11}
    assert set(Counter(t[2] for t in HELDOUT_TRIPLES).values()) <= {3, 4}
    # Every held-out triple is a new combination of pairs training shows.
    for pair in ((0, 1), (0, 2), (1, 2)):
        assert max(Counter((t[pair[0]], t[pair[1]]) for t in HELDOUT_TRIPLES).values()) <= 2
    rows = re.findall(r"^\| (\w+) \| (\w+) \| ([a-z ]+?) \|$", GRAMMAR_MD.read_text(), re.M)
    assert tuple(row for row in rows if row[0] in COLOURS) == HELDOUT_TRIPLES


def test_training_sampling_never_yields_a_heldout_triple():
    scenes = sample_training_scenes(4000, seed=4)
    assert not any(is_heldout(obj) for scene in scenes for obj in scene.objects)
    assert Counter(len(s.objects) for s in scenes).keys() == {1, 2}
    assert sample_training_scenes(50, seed=4) == scenes[:50]
    seen = {obj.triple for scene in scenes for obj in scene.objects}
    assert len(seen) == 216 - 32  # and every training triple is drawn

    heldout = sample_heldout_scenes(1000, seed=5)
    assert all(len(s.objects) == 1 and is_heldout(s) for s in heldout)
    assert {s.objects[0].triple for s in heldout} == set(HELDOUT_TRIPLES)
    assert all(is_heldout(s.scene) for s in sample_heldout_captions(20, seed=5))
    assert not any(is_heldout(s.scene) for s in sample_training_captions(200, seed=5))


def test_is_heldout_takes_triples_objects_and_scenes():
    colour, shape, position = HELDOUT_TRIPLES[0]
    held = ShapeObject(colour, shape, "large", position)
    free = next(
        ShapeObject(c, s, "small", p)
        for c in COLOURS
        for s in SHAPES
        for p in POSITIONS
        if (c, s, p) not in HELDOUT_TRIPLES and p != position and c != colour
    )
    background = next(c for c in COLOURS if c not in (held.colour, free.colour))
    assert is_heldout(HELDOUT_TRIPLES[0]) and is_heldout(held)
    assert not is_heldout(free) and not is_heldout(Scene((free,), background))
    assert is_heldout(Scene((free, held), background))


# --- rendering --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_render_sizes_are_exact_antialiased_and_deterministic(size):
    scene = parse_caption("a large green square in the center on a black background")
    image = render_scene(scene, size, seed=7)
    assert image.size == (size, size) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(render_scene(scene, size, seed=7)))
    pixels = np.asarray(image, dtype=np.float64)
    coverage = pixels[..., 1] / PALETTE["green"][1]  # green over black: coverage by channel
    assert abs(coverage.sum() / size**2 - SIZE_FRACTION["large"] ** 2) < 1e-3
    partial = (coverage > 0.02) & (coverage < 0.98)
    assert partial.any()  # anti-aliased edges


def test_jitter_keeps_every_object_inside_its_cell():
    rng = np.random.default_rng(8)
    for position in POSITIONS:
        row, column = cell_of(position)
        for size in SIZES:
            for _ in range(50):
                cx, cy, side = object_box(ShapeObject("red", "circle", size, position), rng)
                assert column / 3 < cx - side / 2 and cx + side / 2 < (column + 1) / 3
                assert row / 3 < cy - side / 2 and cy + side / 2 < (row + 1) / 3


# --- checker ----------------------------------------------------------------------------------


def test_label_regions_joins_diagonals_and_u_shapes():
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one region
    mask[0, 4] = mask[0, 6] = mask[1, 4:7] = True  # a U joined on the row below
    mask[6:8, 0:2] = True
    regions = sorted(sorted(map(tuple, r)) for r in label_regions(mask))
    assert regions == [
        [(0, 0), (1, 1)],
        [(0, 4), (0, 6), (1, 4), (1, 5), (1, 6)],
        [(6, 0), (6, 1), (7, 0), (7, 1)],
    ]
    assert label_regions(np.zeros((4, 4), dtype=bool)) == []


@pytest.mark.parametrize("size, count", [(64, 150), (128, 100), (256, 300), (512, 20)])
def test_checker_passes_exact_and_mildly_degraded_renders(size, count):
    scenes = random_scenes(count, seed=size)
    images = [render_scene(scene, size, seed=i) for i, scene in enumerate(scenes)]
    exact = score(images, scenes)
    assert exact["n"] == count and exact["prompt_accuracy"] >= 0.99, exact

    rng = np.random.default_rng(size)
    degraded = score([degrade(image, rng) for image in images], scenes)
    assert degraded["prompt_accuracy"] >= 0.99, degraded


def _mutations(scene: Scene, rng: np.random.Generator) -> dict[str, Scene]:
    """The scene with one attribute of its first object (or its background) changed."""
    first, rest = scene.objects[0], scene.objects[1:]
    used = {obj.colour for obj in scene.objects} | {scene.background}
    taken = {obj.position for obj in scene.objects}
    changed = {
        "colour": dataclasses.replace(first, colour=_pick(rng, set(COLOURS) - used)),
        "shape": dataclasses.replace(first, shape=_pick(rng, set(SHAPES) - {first.shape})),
        "size": dataclasses.replace(first, size="small" if first.size == "large" else "large"),
        "position": dataclasses.replace(first, position=_pick(rng, set(POSITIONS) - taken)),
    }
    mutated = {name: Scene((obj, *rest), scene.background) for name, obj in changed.items()}
    mutated["background"] = Scene(scene.objects, _pick(rng, set(COLOURS) - used))
    return mutated


@pytest.mark.parametrize("size", [64, 256])
def test_checker_rejects_the_wrong_colour_shape_size_position_and_background(size):
    rng = np.random.default_rng(9)
    for index, scene in enumerate(random_scenes(40, seed=10 + size)):
        image = render_scene(scene, size, seed=index)
        assert check_image(image, scene).all_correct
        for attribute, wrong in _mutations(scene, rng).items():
            result = check_image(image, wrong)
            assert not getattr(result, attribute), (attribute, scene, wrong)
            assert not result.all_correct


def test_checker_rejects_blank_images_extra_objects_and_missing_ones():
    two = parse_caption(EXAMPLE)
    one = Scene(two.objects[:1], two.background)
    blank = Image.new("RGB", (256, 256), PALETTE["white"])
    result = check_image(blank, one)
    assert result.background and not result.count and not result.all_correct
    assert not (result.colour or result.shape or result.size or result.position)

    extra = check_image(render_scene(two), one)  # an object the caption does not have
    assert extra.colour and extra.shape and not extra.count and not extra.all_correct
    missing = check_image(render_scene(one), two)
    assert not missing.count and not missing.all_correct
    assert missing.objects[0].all_correct and missing.objects[1].found is None

    wrong_background = Image.new("RGB", (256, 256), PALETTE["green"])
    assert not check_image(wrong_background, one).background


def test_checker_takes_arrays_and_score_takes_captions():
    scene = parse_caption("a big purple triangle at the bottom on an orange background")
    image = render_scene(scene, 128)
    pixels = np.asarray(image)
    for form in (image, pixels, pixels / 255.0):
        assert check_image(form, scene).all_correct
    found = check_image(image, scene).found[0]
    assert (found.colour, found.shape, found.size, found.position) == (
        "purple",
        "triangle",
        "large",
        "bottom",
    )

    blank = Image.new("RGB", (128, 128), PALETTE["orange"])
    result = score([image, blank], [make_caption(scene), scene])
    assert result["n"] == 2 and result["prompt_accuracy"] == 0.5
    assert set(result["per_attribute"]) == {
        "colour",
        "shape",
        "size",
        "position",
        "background",
        "count",
    }
    # 12 verdicts: 4 per object and 2 per image; the blank image gets only its background right.
    assert result["attribute_accuracy"] == pytest.approx(7 / 12)
    assert result["per_attribute"]["count"] == 0.5 and result["per_attribute"]["background"] == 1
    with pytest.raises(ValueError, match="2 images but 1 scenes"):
        score([image, blank], [scene])


def test_the_world_imports_no_torch_and_nothing_downstream():
    code = (
        "import sys, edit_mobile.shapes; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('edit_mobile.export', "
        "'edit_mobile.runtime', 'edit_mobile.models', 'edit_mobile.calibration'))]; "
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
