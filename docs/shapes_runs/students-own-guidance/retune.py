"""Give the shipped distilled students their own guidance without distilling them again: the
step `edit-mobile distill --tune-guidance` runs at the end of a run, applied to the finished
runs' outputs (build/), then re-installed as `make shapes` installs them.

    python docs/shapes_runs/students-own-guidance/retune.py
"""

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

from edit_mobile.distill.guidance import tune_guidance
from edit_mobile.distill.run import _evaluate
from edit_mobile.models import pipeline_folder_of
from edit_mobile.pretrained import ROOT
from edit_mobile.training import shipping
from edit_mobile.training.make_shapes import STUDENT_RECIPES

RUNS = {"pixart": Path("build/pixart-distilled-all-8500"), "sd3": Path("build/sd3-distilled-all-8k")}


def option(recipe: list[str], name: str, default: str) -> str:
    return recipe[recipe.index(name) + 1] if name in recipe else default


def retune(family: str) -> dict:
    recipe = STUDENT_RECIPES[family]
    work = Path("build/retune") / f"{family}-edit"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(RUNS[family], work, symlinks=True)
    record = json.loads((work / "distill.json").read_text())
    seed = record["options"]["seed"]
    scales = [float(s) for s in option(recipe, "--tune-guidance", "").split(",")]
    record["guidance_tuning"] = tune_guidance(work, scales, int(option(recipe, "--tune-samples", "64")), seed)
    args = SimpleNamespace(teacher=f"shapes-{family}", seed=seed, eval_samples=record["evaluate"]["student"]["n"])
    record["evaluate"] = _evaluate(work, args, pipeline_folder_of(args.teacher))
    (work / "distill.json").write_text(json.dumps(record, indent=2) + "\n")
    shipping.install_student(work, ROOT / f"shapes-{family}", ROOT / f"shapes-{family}-edit")
    return {"guidance_tuning": record["guidance_tuning"], "evaluate": record["evaluate"]}


if __name__ == "__main__":
    out = Path(__file__).parent
    for family in sys.argv[1:] or RUNS:
        (out / f"{family}.json").write_text(json.dumps(retune(family), indent=2) + "\n")
