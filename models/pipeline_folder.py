"""Students as whole diffusers pipeline folders: the teacher's pipeline with transformer/ replaced.

A pipeline folder's model_index.json names (library, class) for each component; the student's
entry names this package's class, which diffusers' loader imports by that name, so
`DiffusionPipeline.from_pretrained(folder)` gives the family's pipeline running the student.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffusers import ModelMixin

from edit_mobile.models.families.base import SAMPLING_FILE

STUDENT_LIBRARY = "edit_mobile.models"


def write_student_pipeline(teacher_pipeline: Path, student: ModelMixin, target: Path) -> None:
    """Copy every component of `teacher_pipeline` but its transformer into `target` (links
    followed: the copy stands alone), and save `student` as its transformer."""
    index = json.loads((teacher_pipeline / "model_index.json").read_text())
    for name, value in index.items():
        component = teacher_pipeline / name
        if name == "transformer" or name.startswith("_") or not isinstance(value, list) or not component.is_dir():
            continue
        shutil.copytree(component, target / name, symlinks=False)
    sampling = teacher_pipeline / SAMPLING_FILE  # the teacher's recommended steps and guidance
    if sampling.is_file():
        shutil.copyfile(sampling, target / SAMPLING_FILE)
    student.save_pretrained(target / "transformer", safe_serialization=True)
    index["transformer"] = [STUDENT_LIBRARY, type(student).__name__]
    (target / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
