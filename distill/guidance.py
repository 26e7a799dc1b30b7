"""The distilled student's own guidance scale, picked on seen captions.

A distilled student need not sample best at its teacher's guidance: the shapes students lose
colour faster than their teachers as guidance grows (docs/shapes_runs/shipped-students-heldout-128).
The scale is tuned on training-distribution captions drawn with a seed of their own, so the
held-out captions `distill` scores at the end stay unseen by the choice.
"""

from __future__ import annotations

import json
from pathlib import Path

TUNING_CAPTIONS = "seen"
TUNING_SEED_OFFSET = 1  # the tuning captions differ from any drawn with the run's own seed


def parse_scales(text: str) -> list[float]:
    """'1.5,2,2.5' -> [1.5, 2.0, 2.5]: distinct guidance scales in 0-100."""
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError("guidance scales are numbers separated by commas") from None
    if not scales or len(set(scales)) != len(scales) or not all(0.0 <= s <= 100.0 for s in scales):
        raise ValueError("give distinct guidance scales between 0 and 100, separated by commas")
    return scales


def pick(sweep: list[dict], reference_guidance: float) -> dict:
    """The best row: prompt accuracy, then attribute accuracy, then the scale nearest the
    teacher's (with few captions, ties are common and the teacher's scale is the prior)."""
    return max(sweep, key=lambda row: (row["prompt_accuracy"], row["attribute_accuracy"],
                                       -abs(row["guidance"] - reference_guidance)))


def tune_guidance(student_folder: Path, scales: list[float], samples: int, seed: int) -> dict:
    """Score the student at each scale on `samples` seen captions; record the best scale in the
    folder's sampling file (its steps unchanged). Returns the record for distill.json."""
    from edit_mobile.models import load_transformer
    from edit_mobile.models.families import family_of
    from edit_mobile.models.families.base import SAMPLING_FILE
    from edit_mobile.runtime.evaluate import Settings, evaluate

    family = family_of(load_transformer(str(student_folder)))
    steps, reference = family.sampling_defaults(student_folder)
    sweep = []
    for scale in scales:
        settings = Settings(steps=steps, guidance=scale, seed=seed + TUNING_SEED_OFFSET)
        report, _ = evaluate(str(student_folder), (TUNING_CAPTIONS,), samples, settings)
        sweep.append({"guidance": scale, "prompt_accuracy": report["prompt_accuracy"],
                      "attribute_accuracy": report["attribute_accuracy"]})
        print(f"guidance {scale:g}: prompt accuracy {report['prompt_accuracy']:.3f} on {samples} seen captions")
    best = pick(sweep, reference)
    (Path(student_folder) / SAMPLING_FILE).write_text(
        json.dumps({"steps": steps, "guidance": best["guidance"]}, indent=2) + "\n")
    return {"captions": TUNING_CAPTIONS, "n": samples, "seed": seed + TUNING_SEED_OFFSET,
            "teacher_guidance": reference, "sweep": sweep, "guidance": best["guidance"]}
