"""What a student trains on: clean latents (model space) and the prompt inputs of their captions.

Two sources, either or both:
- prompts: the teacher makes its own samples, running its sampler with guidance from seeded
  noise (the latents it ends on are the clean latents: the student learns the teacher's images);
- images: an image folder with captions in the diffusers training convention, `metadata.jsonl`
  lines {"file_name": ..., "text": ...} ("caption" also read), or `name.txt` beside `name.png`,
  encoded by the pipeline's VAE.
Prompt inputs come from the pipeline's own text encoders. Both are computed once per
(teacher, captions, resolution, settings) and cached as safetensors shards, never per step.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from edit_mobile.errors import UserError

SHARD = 256  # samples per cache shard
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class DistillSet:
    latents: torch.Tensor  # (N, C, h, w), model space
    inputs: dict[str, torch.Tensor]  # prompt inputs of each sample, by denoiser input name, (N, ...)
    unconditional: dict[str, torch.Tensor]  # those of "" (caption dropout), (1, ...)
    captions: list[str]

    def __len__(self) -> int:
        return self.latents.shape[0]

    @staticmethod
    def join(parts: list[DistillSet]) -> DistillSet:
        return DistillSet(torch.cat([p.latents for p in parts]),
                          {k: torch.cat([p.inputs[k] for p in parts]) for k in parts[0].inputs},
                          parts[0].unconditional, [c for p in parts for c in p.captions])


def read_image_folder(folder: Path) -> list[tuple[Path, str]]:
    """(image path, caption) pairs; refuses a folder with images but no captions."""
    if not folder.is_dir():
        raise UserError(f"--images {folder}: not a folder; pass an image folder with metadata.jsonl")
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        pairs = []
        for number, line in enumerate(metadata.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((folder / row["file_name"], row.get("text", row.get("caption"))))
            except (ValueError, KeyError, TypeError) as err:
                raise UserError(f"{metadata}:{number}: not a {{\"file_name\", \"text\"}} line ({err})") from err
        missing = [str(p) for p, caption in pairs if not p.is_file() or not isinstance(caption, str)]
        if missing:
            raise UserError(f"{metadata}: {len(missing)} rows without an image or a text, first {missing[0]}")
        return pairs
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(p, p.with_suffix(".txt").read_text().strip()) for p in images if p.with_suffix(".txt").is_file()]
    if not pairs:
        raise UserError(f"--images {folder}: no captions (metadata.jsonl with file_name and text, or "
                        "name.txt beside each image); add them")
    return pairs


class DataBuilder:
    """Builds (or reads from the cache) the training set of one resolution."""

    def __init__(self, teacher, pipeline_folder: Path | None, cache: Path, prompt_tokens: int | None,
                 steps: int | None, guidance: float | None, seed: int):
        from edit_mobile.models.families import family_of

        self.teacher = teacher
        self.family = family_of(teacher)
        self.folder = pipeline_folder
        self.cache = cache
        # The prompt length the teacher's pipeline runs at (its tokenizers': the shapes SD3 reads
        # 32 + 32 tokens), not the family's 333: MM-EDiT's attention mixes by the prompt's token
        # count, so a student trained on another length does not match at sampling.
        self.tokens = prompt_tokens or self.family.default_prompt_tokens_of(pipeline_folder)
        default_steps, default_guidance = self.family.sampling_defaults(pipeline_folder)
        self.steps = steps or default_steps
        self.guidance = default_guidance if guidance is None else guidance
        self.seed = seed
        if pipeline_folder is None:
            raise UserError("the teacher has no pipeline folder (text encoders, VAE, scheduler) to make "
                            "training data with; pass a diffusers pipeline folder or a shapes preset")

    def build(self, resolution: tuple[int, int], prompts: list[str], images: list[tuple[Path, str]]) -> DistillSet:
        parts = []
        if prompts:
            parts.append(self._cached("prompts", resolution, prompts, lambda: self._teacher_samples(resolution, prompts)))
        if images:
            key_items = [f"{p}:{p.stat().st_mtime_ns}:{c}" for p, c in images]
            parts.append(self._cached("images", resolution, key_items, lambda: self._image_latents(resolution, images)))
        return DistillSet.join(parts)

    # --- the two sources --------------------------------------------------------------------

    def _signature(self, resolution):
        from edit_mobile.models.signature import TransformerSignature

        return TransformerSignature.of(self.teacher, *resolution, prompt_tokens=self.tokens)

    def _encode(self, resolution, captions: list[str]):
        from edit_mobile.calibration.capture import folder_text_encoder

        signature = self._signature(resolution)
        specs = {spec.name: spec for spec in signature.inputs}
        names = [name for name in specs if name not in ("hidden_states", "timestep")]
        encoded = folder_text_encoder(self.family.name, self.folder, specs).encode(captions, guidance=True)
        pick = lambda embeddings: {n: v for n, v in embeddings.as_inputs().items() if n in names}  # noqa: E731
        return signature, pick(encoded.positive), pick(encoded.negative)

    @torch.no_grad()
    def _teacher_samples(self, resolution, prompts: list[str]) -> DistillSet:
        from tqdm import tqdm

        from edit_mobile.calibration.sampler import denoise
        from edit_mobile.models.signature import DenoiserWrapper

        signature, positive, negative = self._encode(resolution, prompts)
        wrapper = DenoiserWrapper(self.teacher.eval())
        scheduler = self.family.scheduler(self.folder)
        shape = tuple(signature.inputs[0].shape)  # (1, C, h, w)
        latents = []
        for index in tqdm(range(len(prompts)), desc="teacher samples", unit="image"):
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed * 100_003 + index))
            mine = {name: value[index : index + 1] for name, value in positive.items()}
            _, final = denoise(wrapper, tuple(wrapper.input_names), scheduler, noise, mine,
                               negative if self.guidance > 1 else None, self.steps, self.guidance,
                               keep=lambda step, branch: False)
            latents.append(final)
        return DistillSet(torch.cat(latents), positive, negative, list(prompts))

    @torch.no_grad()
    def _image_latents(self, resolution, images: list[tuple[Path, str]]) -> DistillSet:
        import numpy as np
        from diffusers import AutoencoderKL
        from PIL import Image, ImageOps
        from tqdm import tqdm

        vae = AutoencoderKL.from_pretrained(self.folder / "vae", local_files_only=True).eval()
        scale = vae.config.scaling_factor
        shift = self.family.vae_shift(vae.config)
        height, width = resolution
        latents = []
        for path, _ in tqdm(images, desc="encoding images", unit="image"):
            with Image.open(path) as image:
                fitted = ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
            pixels = torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
            latents.append((vae.encode(pixels).latent_dist.mode() - shift) * scale)
        captions = [caption for _, caption in images]
        _, positive, negative = self._encode(resolution, captions)
        return DistillSet(torch.cat(latents), positive, negative, captions)

    # --- the cache --------------------------------------------------------------------------

    @functools.cached_property
    def _teacher_sha256(self) -> str:
        from edit_mobile.calibration.capture import model_sha256

        return model_sha256(self.teacher)  # reads every weight: once per run, not per stage

    def _key(self, kind: str, resolution, items: list[str]) -> str:
        digest = hashlib.sha256()
        for part in (kind, self._teacher_sha256, str(self.folder.resolve()), resolution, self.tokens,
                     self.steps, self.guidance, self.seed, *items):
            digest.update(f"{part}\0".encode())
        return digest.hexdigest()[:16]

    def _cached(self, kind: str, resolution, items: list[str], build) -> DistillSet:
        from safetensors.torch import load_file, save_file

        folder = self.cache / f"{kind}-{resolution[0]}x{resolution[1]}-{self._key(kind, resolution, items)}"
        index = folder / "index.json"
        if index.is_file():
            meta = json.loads(index.read_text())
            shards = [load_file(folder / name) for name in meta["shards"]]
            unconditional = load_file(folder / "unconditional.safetensors")
            inputs = {k[len("inputs."):]: torch.cat([s[k] for s in shards]) for k in shards[0] if k.startswith("inputs.")}
            return DistillSet(torch.cat([s["latents"] for s in shards]), inputs, unconditional, meta["captions"])
        data = build()
        staging = folder.with_name(folder.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        names = []
        for start in range(0, len(data), SHARD):
            rows = slice(start, start + SHARD)
            tensors = {"latents": data.latents[rows].contiguous(),
                       **{f"inputs.{k}": v[rows].contiguous() for k, v in data.inputs.items()}}
            names.append(f"shard-{start // SHARD:05d}.safetensors")
            save_file(tensors, staging / names[-1])
        save_file({k: v.contiguous() for k, v in data.unconditional.items()}, staging / "unconditional.safetensors")
        (staging / "index.json").write_text(json.dumps({"shards": names, "captions": data.captions}) + "\n")
        staging.rename(folder)
        return data
