"""What a trained pipeline folder is shipped as: the same model in fewer bytes, so that every
shipped weight (the VAE, both teachers and both distilled students) fits the 25 MB budget.

- Every model stores its weights in fp16: text encoders (their config keeps float32, so
  transformers loads them as float32), the transformers and the VAE (diffusers builds the model
  in float32 from its config and copies the stored values in, with or without accelerate). The
  upcast is exact; the fp16 rounding itself moves images by far less than sampling noise (the
  teachers' prompt accuracy and image PSNR, fp32 against fp16-stored: README).
- SD3's position table: SD3Transformer2DModel keeps a pos_embed_max_size x pos_embed_max_size
  sin-cos table and crops its centre for each size. The shapes teacher's is 64 x 64 (2.1 MB)
  for at most 16 x 16 patches; the centre 32 x 32 of it (512 px images at most) is stored with
  pos_embed_max_size 32. The centre crop of that is the centre crop of the full table at every
  size up to 32 patches a side, so the model computes exactly what it did.

Run by `make shapes` after training (training/make_shapes.py), or on its own:
    python -m edit_mobile.training.shipping FOLDER...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MODEL_FOLDERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer")
SHIPPED_POSITION_GRID = 32  # patches a side: 512 px images with patch 2 and an 8x VAE
POSITION_KEY = "pos_embed.pos_embed"


def store_half(folder: Path) -> None:
    """Rewrite a model folder's float32 weights as fp16, its config untouched."""
    for path in folder.glob("*.safetensors"):
        tensors = load_file(path)
        half = {name: t.half() if t.dtype == torch.float32 else t for name, t in tensors.items()}
        save_file(half, str(path), metadata={"format": "pt"})


def crop_position_table(folder: Path, grid: int = SHIPPED_POSITION_GRID) -> None:
    """Keep the centre grid x grid of an SD3 transformer's position table (see the module doc)."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    full = config.get("pos_embed_max_size")
    if not full or full <= grid or (full - grid) % 2:
        return  # nothing to save, or no crop with the same centre
    for path in folder.glob("*.safetensors"):
        tensors = load_file(path)
        if POSITION_KEY not in tensors:
            continue
        table = tensors[POSITION_KEY]  # (1, full * full, D)
        top = (full - grid) // 2
        square = table.reshape(1, full, full, -1)[:, top : top + grid, top : top + grid]
        tensors[POSITION_KEY] = square.reshape(1, grid * grid, -1).contiguous()
        save_file(tensors, str(path), metadata={"format": "pt"})
    config["pos_embed_max_size"] = grid
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def compact(pipeline: Path) -> None:
    """A pipeline folder's own models in fp16, SD3's position table cropped (linked folders,
    shipped elsewhere, are left alone). A VAE folder (config.json at the top) is one model."""
    if (pipeline / "config.json").is_file():
        store_half(pipeline)
    for name in MODEL_FOLDERS:
        if (pipeline / name).is_dir() and not (pipeline / name).is_symlink():
            store_half(pipeline / name)
    if (pipeline / "transformer" / "config.json").is_file():
        crop_position_table(pipeline / "transformer")


# What a shipped distilled student keeps of its own: the rest of its pipeline is its teacher's.
STUDENT_FILES = ("model_index.json", "distill.json", "edit_mobile_sampling.json", "loss.png")


def install_student(distilled: Path, teacher: Path, target: Path) -> None:
    """`target` becomes the distilled student's pipeline folder: its transformer (fp16), its
    run record and links to the teacher's scheduler, tokenizers, text encoders and VAE (the
    student was distilled with them and never changes them)."""
    if target.exists():
        shutil.rmtree(target)  # ours: an earlier install by this script
    target.mkdir(parents=True)
    for name in STUDENT_FILES:
        if (distilled / name).is_file():
            shutil.copy2(distilled / name, target / name)
    shutil.copytree(distilled / "transformer", target / "transformer")
    for component in sorted(p.name for p in teacher.iterdir() if p.is_dir() and p.name != "transformer"):
        link = teacher / component
        # Teacher and student folders sit side by side: the teacher's relative link (its vae/)
        # means the same from the student's folder.
        os.symlink(link.readlink() if link.is_symlink() else Path("..") / teacher.name / component, target / component)
    compact(target)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="trained pipeline folders, rewritten in place")
    for folder in parser.parse_args(argv).folders:
        compact(folder)


if __name__ == "__main__":
    main()
