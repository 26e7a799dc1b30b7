"""Re-create the shipped shapes models from nothing (`make shapes`): the VAE in two stages, then
both teachers on its latents, then each teacher's EDiT / MM-EDiT student distilled from it
(`edit-mobile distill`, about 30 minutes each), and install the pipeline folders into
edit_mobile.pretrained.

Seeded throughout; about 35 (VAE) + 55 (PixArt, alone on an AVX-512 Xeon: text pretraining 4 min,
2000 steps at 128 px at 0.20 s, 4200 at 256 px at 0.62 s) + 52 (SD3, on the same CPU: text pretraining, 2500 steps at
128 px at 0.21 s, 4000 at 256 px at 0.62 s) + 2 x 30 (the students) minutes on 2 cores (`--only pixart sd3` reuses
the shipped VAE). Each pipeline's vae/ is a link to pretrained/shapes-vae/: one VAE serves both
teachers (it carries SD3's shift and PixArt's scale). A student's folder links its teacher's
text encoders, tokenizers, scheduler and VAE. Installed as shipped (training/shipping.py: fp16
weights, SD3's position table cropped).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.training import shipping, train_teacher, train_vae

# (image size, steps) stages of each teacher: most steps at 128 px, 4x cheaper a step.
# PixArt learns shape only at 256 px (docs/shapes_runs/pixart-cont256); its 4200 steps there lifted
# held-out accuracy 0.34 -> 0.52 over 2200 (docs/shapes_runs/pixart-long256; rectified flow then
# 0.61, docs/shapes_runs/pixart-flow); SD3's 4000 there, 0.70 -> 0.79 over 2800 (docs/shapes_runs/sd3-long256).
TEACHER_STAGES = {"pixart": "128:2000,256:4200", "sd3": "128:2500,256:4000"}
# Each student's distillation (runs recorded in docs/shapes_runs/): 512 teacher samples, then
# every student weight trained at 256 px.
# Each then samples at its own guidance, picked on 64 seen captions (distill --tune-guidance).
STUDENT_RECIPES = {
    "pixart": ["--samples", "512", "--schedule", "256:8500", "--train", "all", "--eval-samples", "64",
               "--tune-guidance", "1,1.5,2,2.5"],
    "sd3": ["--samples", "512", "--schedule", "256:8000", "--train", "all", "--tune-guidance", "1,1.5,2,2.5,3"],
}
FAMILIES = ("pixart", "sd3")
STUDENTS = tuple(f"{family}-edit" for family in FAMILIES)


def install(built: Path, target: Path) -> None:
    """Replace the shipped folder with the built one (the previous one is ours: made by this script)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(built, target, symlinks=True)


def main(argv=None) -> None:
    from edit_mobile.pretrained import ROOT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path("build/shapes"), help="work folder (default build/shapes)")
    stages = ["vae", *FAMILIES, *STUDENTS]
    parser.add_argument("--only", choices=stages, nargs="+", default=stages,
                        help="stages to run (default all); the others' shipped models are used")
    args = parser.parse_args(argv)
    build = args.build
    vae = build / "vae" if "vae" in args.only else VAE_FOLDER
    if "vae" in args.only:
        train_vae.main(["-o", str(build / "vae-crops"), "--steps", "2000"])
        train_vae.main(["-o", str(build / "vae"), "--init", str(build / "vae-crops"), "--crop", "256",
                        "--batch", "4", "--steps", "400", "--lr", "3e-4", "--seed", "1"])
    for family in FAMILIES:
        if family in args.only:
            train_teacher.main(["--family", family, "--vae", str(vae), "-o", str(build / family),
                                "--stages", TEACHER_STAGES[family], "--cache", str(build / "cache")])
            shipping.compact(build / family)  # fp16 text encoders, SD3's position table cropped
            install(build / family, ROOT / f"shapes-{family}")
            link_vae(ROOT / f"shapes-{family}")
    if "vae" in args.only:
        shipping.compact(build / "vae")  # fp16, after the teachers learnt from its float32 latents
        install(build / "vae", VAE_FOLDER)
    for family in FAMILIES:
        if f"{family}-edit" in args.only:
            distill_student(family, build, ROOT)


def distill_student(family: str, build: Path, root: Path) -> None:
    """The shipped teacher's student, distilled by the CLI and installed beside it."""
    from edit_mobile.main import main as cli

    student = build / f"{family}-edit"
    if cli(["distill", f"shapes-{family}", "-o", str(student), "--force", *STUDENT_RECIPES[family]]) != 0:
        raise SystemExit(f"distilling the {family} student failed")
    shipping.install_student(student, root / f"shapes-{family}", root / f"shapes-{family}-edit")


def link_vae(pipeline: Path) -> None:
    """One VAE serves both pipelines: each vae/ is a link to the shipped shapes-vae/."""
    shutil.rmtree(pipeline / "vae")
    os.symlink(Path("..") / VAE_FOLDER.name, pipeline / "vae")


if __name__ == "__main__":
    main()
