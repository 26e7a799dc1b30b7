"""`edit-mobile evaluate`: does a model draw what its captions say? Shapes-world models only.

Images come from a diffusers pipeline (a preset such as `shapes-pixart[-edit]`, or a local
pipeline folder, its transformer swapped for the model's) or from an exported artifact driving
the same text encoder, scheduler and VAE (edit_mobile.runtime.pipeline). Each image is judged by
the shapes checker (edit_mobile.shapes.score): colour, shape, size and position of every object,
the background and the object count.

Caption sets: `seen` (one object, every triple seen in training), `heldout` (one object, a
held-out colour x shape x position triple), `two` (two objects, seen triples), or a captions
file. With `--teacher`, each image is also compared with the teacher's at the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.images import image_psnr

CAPTION_SETS = ("seen", "heldout", "two")
DEFAULT_SETS = ("seen", "heldout", "two")
BATCH = 8  # captions per diffusers pipeline call


@dataclass(frozen=True)
class Settings:
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0


def captions_of(name_or_file: str, count: int, seed: int) -> list:
    """The captioned scenes of a set name or a captions file (edit_mobile.shapes CaptionedScene)."""
    from edit_mobile.shapes import read_captions, sample_heldout_captions, sample_training_captions

    if name_or_file == "seen":
        return sample_training_captions(count, seed=seed, two_object_share=0.0)
    if name_or_file == "heldout":
        return sample_heldout_captions(count, seed=seed)
    if name_or_file == "two":
        return sample_training_captions(count, seed=seed, two_object_share=1.0)
    return read_captions(name_or_file)[:count]


class DiffusersImages:
    """Images from the family's diffusers pipeline over a shapes pipeline folder."""

    def __init__(self, source: str):
        from edit_mobile.models import load_transformer, pipeline_folder_of

        folder = pipeline_folder_of(source)
        if folder is None:
            raise UserError(f"{source} has no pipeline folder (text encoder, VAE, scheduler) to make images with; "
                            "pass a shapes preset, a diffusers pipeline folder, or an exported artifact")
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging

        # Our bar counts images; the pipeline's loading bar and its clean_caption notice are noise.
        diffusers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
        self.transformer = load_transformer(source)
        self.pipeline = DiffusionPipeline.from_pretrained(folder, transformer=self.transformer, local_files_only=True)
        self.pipeline.set_progress_bar_config(disable=True)
        self.folder = folder
        self.family = self._family()

    def _family(self):
        from edit_mobile.models.families import family_of

        return family_of(self.transformer)

    def sampling(self, settings: Settings) -> tuple[int, float]:
        """(steps, guidance) the images are drawn with: the settings', else the folder's own."""
        default_steps, default_guidance = self.family.sampling_defaults(self.folder)
        return settings.steps or default_steps, default_guidance if settings.guidance is None else settings.guidance

    def __call__(self, captions: list[str], settings: Settings, progress=None) -> list:
        steps, guidance = self.sampling(settings)
        images = []
        for start in range(0, len(captions), BATCH):
            chunk = captions[start : start + BATCH]
            generators = [torch.Generator().manual_seed(settings.seed + start + i) for i in range(len(chunk))]
            # As a pipeline artifact encodes and draws: the prompt length the folder's tokenizers read.
            extra = self.family.pipeline_call_options(self.family.default_prompt_tokens_of(self.folder), self.folder)
            with torch.no_grad():
                images += self.pipeline(chunk, num_inference_steps=steps, guidance_scale=guidance,
                                        generator=generators, **extra).images
            if progress is not None:
                progress(len(chunk))
        return images


class ArtifactImages:
    """Images from an exported artifact as the denoiser (the runtime's text-to-image pipeline)."""

    def __init__(self, art_dir: Path, threads: int | None = None):
        from edit_mobile.runtime.pipeline import build_pipeline
        from edit_mobile.runtime.session import load

        self.session = load(art_dir, threads=threads)
        self.pipeline = build_pipeline(self.session)

    def sampling(self, settings: Settings) -> tuple[int, float]:
        generation = self.pipeline.default_settings(settings.steps, settings.guidance)
        return generation.steps, generation.guidance

    def __call__(self, captions: list[str], settings: Settings, progress=None) -> list:
        images = []
        for index, caption in enumerate(captions):
            generation = self.pipeline.default_settings(settings.steps, settings.guidance, settings.seed + index)
            images.append(self.pipeline(caption, generation))
            if progress is not None:
                progress(1)
        return images


class PipelineArtifactImages:
    """Images from a pipeline artifact alone (export --pipeline): its tokenizer, methods and
    scheduler, no PyTorch model; seeds as DiffusersImages gives them."""

    def __init__(self, art_dir: Path, threads: int | None = None):
        from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

        self.artifact = PipelineArtifact(art_dir, threads)

    def sampling(self, settings: Settings) -> tuple[int, float]:
        generation = self.artifact.default_settings(settings.steps, settings.guidance)
        return generation.steps, generation.guidance

    def __call__(self, captions: list[str], settings: Settings, progress=None) -> list:
        images = []
        for index, caption in enumerate(captions):
            generation = self.artifact.default_settings(settings.steps, settings.guidance, settings.seed + index)
            images.append(self.artifact.generate(caption, generation).image())
            if progress is not None:
                progress(1)
        return images


def image_maker(source: str | Path, threads: int | None = None):
    from edit_mobile.runtime.pipeline_artifact import is_pipeline_artifact

    path = Path(str(source))
    if is_pipeline_artifact(path):
        return PipelineArtifactImages(path, threads)
    if (path / "manifest.json").is_file():
        return ArtifactImages(path, threads)
    return DiffusersImages(str(source))


def evaluate(source, sets=DEFAULT_SETS, samples: int = 32, settings: Settings = Settings(),
             teacher=None, threads: int | None = None, progress=None) -> dict:
    """Scores per caption set and over all of them; the images, captions and verdicts for a grid."""
    from edit_mobile.shapes import check_image, score

    make = image_maker(source, threads)
    reference = image_maker(teacher, threads) if teacher is not None else None
    steps, guidance = make.sampling(settings)
    report: dict = {"model": str(source), "steps": steps, "guidance": guidance, "seed": settings.seed, "sets": {}}
    shown = []
    all_images, all_scenes = [], []
    for name in sets:
        captioned = captions_of(name, samples, settings.seed)
        captions = [c.caption for c in captioned]
        images = make(captions, settings, progress)
        scenes = [c.scene for c in captioned]
        entry = score(images, scenes)
        if reference is not None:
            teacher_images = reference(captions, settings, progress)
            entry["image_psnr_vs_teacher"] = float(np.mean([min(image_psnr(a, b), 100.0)
                                                            for a, b in zip(images, teacher_images, strict=True)]))
        report["sets"][Path(name).name if name not in CAPTION_SETS else name] = entry
        all_images += images
        all_scenes += scenes
        shown += [(c.caption, image, check_image(image, c.scene).all_correct) for c, image in zip(captioned, images, strict=True)]
    report.update(score(all_images, all_scenes))
    if reference is not None:
        values = [e["image_psnr_vs_teacher"] for e in report["sets"].values()]
        report["image_psnr_vs_teacher"] = float(np.mean(values))
    return report, shown


def grid_image(shown: list, columns: int = 8, cell: int = 128):
    """The images in a grid, each under a green (right) or red (wrong) bar with its caption."""
    from PIL import Image, ImageDraw

    rows = math.ceil(len(shown) / columns)
    label = 30
    canvas = Image.new("RGB", (columns * cell, rows * (cell + label)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (caption, image, correct) in enumerate(shown):
        x, y = (index % columns) * cell, (index // columns) * (cell + label)
        canvas.paste(image.convert("RGB").resize((cell, cell)), (x, y + label))
        draw.rectangle([x, y, x + cell - 1, y + 4], fill=(30, 160, 60) if correct else (210, 30, 30))
        words = caption.split()
        half = (len(words) + 1) // 2
        draw.text((x + 2, y + 5), " ".join(words[:half])[:26], fill="black")
        draw.text((x + 2, y + 16), " ".join(words[half:])[:26], fill="black")
    return canvas
