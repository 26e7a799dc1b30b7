"""The shapes world: a procedural caption -> image world small enough to train a text-to-image
model on this machine, and a checker that judges generated images against their captions.

    from edit_mobile.shapes import parse_caption, render_scene, check_image
    scene = parse_caption("a small red circle in the top left on a white background")
    image = render_scene(scene, image_size=256, seed=0)   # PIL RGB image, anti-aliased
    check_image(image, scene).all_correct                 # True

Attributes are `ShapeObject(colour, shape, size, position)` and `Scene(objects, background)`
(world.py); captions are generated and parsed by a small grammar (grammar.py, GRAMMAR.md);
32 of the 216 colour x shape x position triples are held out of training (HELDOUT_TRIPLES).
"""

from edit_mobile.shapes.checker import (
    ATTRIBUTES,
    CheckResult,
    FoundObject,
    ObjectCheck,
    check_image,
    find_objects,
    score,
)
from edit_mobile.shapes.grammar import (
    TEMPLATES,
    CaptionedScene,
    all_captions,
    make_caption,
    parse_caption,
    read_captions,
    sample_heldout_captions,
    sample_training_captions,
)
from edit_mobile.shapes.world import (
    COLOURS,
    DEFAULT_IMAGE_SIZE,
    HELDOUT_TRIPLES,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    is_heldout,
    render_array,
    render_scene,
    sample_heldout_scenes,
    sample_scene,
    sample_training_scenes,
)

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "DEFAULT_IMAGE_SIZE",
    "HELDOUT_TRIPLES",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "TEMPLATES",
    "CaptionedScene",
    "CheckResult",
    "FoundObject",
    "ObjectCheck",
    "Scene",
    "ShapeObject",
    "all_captions",
    "check_image",
    "find_objects",
    "is_heldout",
    "make_caption",
    "parse_caption",
    "read_captions",
    "render_array",
    "render_scene",
    "sample_heldout_captions",
    "sample_heldout_scenes",
    "sample_scene",
    "sample_training_captions",
    "sample_training_scenes",
    "score",
]
