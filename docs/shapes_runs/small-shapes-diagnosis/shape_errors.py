"""Which shapes a teacher draws wrong: expected shape and size against the shape the checker
reads, and the bounding-box fill it measured (diagnostic).

    python docs/shapes_runs/small-shapes-diagnosis/shape_errors.py pretrained/shapes-pixart 64

Draws `samples` seen and `samples` held-out one-object captions (seed 1) at the model's
recorded sampling, as `edit-mobile evaluate --seed 1` does."""

import collections
import sys

from edit_mobile.runtime.evaluate import Settings, evaluate
from edit_mobile.shapes import check_image
from edit_mobile.shapes.grammar import parse_caption


def main() -> None:
    model, samples = sys.argv[1], int(sys.argv[2])
    _, shown = evaluate(model, sets=("seen", "heldout"), samples=samples, settings=Settings(seed=1))
    read_as = collections.Counter()
    fills = collections.defaultdict(list)
    for caption, image, _ in shown:
        for check in check_image(image, parse_caption(caption)).objects:
            expected = check.expected
            read_as[(expected.size, expected.shape, check.found.shape if check.found else None)] += 1
            if check.found:
                fills[(expected.size, expected.shape)].append(check.found.fill)
    print("size shape -> read as: count")
    for (size, shape, found), count in sorted(read_as.items(), key=str):
        print(f"{size:5s} {shape:8s} -> {found}: {count}")
    print("bounding-box fill (square 1.0, circle 0.785, triangle 0.5): median [min, max]")
    for (size, shape), values in sorted(fills.items()):
        values.sort()
        print(f"{size:5s} {shape:8s} {values[len(values) // 2]:.2f} [{values[0]:.2f}, {values[-1]:.2f}]")


if __name__ == "__main__":
    main()
