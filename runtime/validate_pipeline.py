"""`edit-mobile validate ART --pipeline`: the pipeline artifact against diffusers' own pipeline.

For each prompt, the artifact generates (runtime/pipeline_artifact.py: tokenizer, encode_prompt,
denoise, decode, nothing from PyTorch's model) and diffusers' pipeline class for the family
(PixArtSigmaPipeline, StableDiffusion3Pipeline), assembled from the PyTorch parts the artifact was exported from, generates
at the same seed, steps, guidance and size. Compared per stage: the prompt embeddings, the final
latents and the image (PSNR over [0, 1] pixels). Passing means every image clears the precision's
floor (fp32 40 dB: twenty steps of float reassociation through a sampler stay far above it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from edit_mobile.closeness import IMAGE_FLOORS_DB, meets_floor, peak_psnr_db, psnr_db
from edit_mobile.errors import UserError
from edit_mobile.runtime.pipeline import to_pil

DEFAULT_PROMPTS = (
    "a small red circle in the top left on a white background",
    "a large blue square in the center on a yellow background",
)


@dataclass
class PipelineReport:
    art_dir: str
    precision: str
    floor_db: float
    settings: dict
    prompts: list[dict] = field(default_factory=list)
    bundled: list[dict] = field(default_factory=list)  # the .bpte's cases, one a method
    images: list = field(default_factory=list)  # (prompt, artifact image, diffusers image, image PSNR)

    @property
    def passed(self) -> bool:
        return (bool(self.prompts) and all(meets_floor(p["image_psnr_db"], self.floor_db) for p in self.prompts)
                and all(case["passed"] for case in self.bundled))

    def as_dict(self) -> dict:
        return {"art_dir": self.art_dir, "precision": self.precision, "image_floor_db": self.floor_db,
                "settings": self.settings, "prompts": self.prompts, "bundled": self.bundled, "passed": self.passed}


def reference_parts(manifest):
    """The PyTorch parts the artifact was exported from (its recorded source)."""
    from edit_mobile.calibration.pipeline_parts import load_pipeline_parts

    source = manifest.model.get("source")
    try:
        dropped = manifest.pipeline["text"].get("dropped_encoders") or []
        return load_pipeline_parts(source, manifest.prompt_tokens, without_t5="t5" in dropped)
    except UserError as err:
        raise UserError(f"the artifact's source {source} cannot be loaded here to compare with ({err}); "
                        "validate on the machine that has the pipeline folder") from err


@torch.no_grad()
def diffusers_generation(pipe, parts, prompt: str, settings, resolution: tuple[int, int]):
    """diffusers' pipeline: the prompt embeddings, the final latents and the [0, 1] image."""
    height, width = resolution
    options = parts.family.pipeline_call_options(parts.prompt_tokens, parts.folder)
    embeds = parts.family.diffusers_prompt_embeds(pipe, prompt, options)
    latents = pipe(prompt, height=height, width=width, num_inference_steps=settings.steps,
                   guidance_scale=settings.guidance, generator=torch.Generator().manual_seed(settings.seed),
                   output_type="latent", **options).images
    scaled = latents / parts.vae.config.scaling_factor + parts.family.vae_shift(parts.vae.config)
    image = parts.vae.decode(scaled, return_dict=False)[0]
    pixels = pipe.image_processor.postprocess(image, output_type="pt")  # (1, 3, H, W) in [0, 1]
    return embeds.float(), latents.float(), pixels.float()


def validate_pipeline(art_dir: str | os.PathLike, prompts: list[str] | None = None, steps: int | None = None,
                      guidance: float | None = None, seed: int = 0, resolution: tuple[int, int] | None = None,
                      threads: int | None = None, progress=None) -> PipelineReport:
    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

    artifact = PipelineArtifact(art_dir, threads)
    resolution = artifact.check_resolution(resolution)
    settings = artifact.default_settings(steps, guidance, seed)
    parts = reference_parts(artifact.manifest)
    pipe = parts.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    precision = floor_key(artifact.manifest)
    report = PipelineReport(str(art_dir), precision, IMAGE_FLOORS_DB[precision],
                            {"steps": settings.steps, "guidance": settings.guidance, "seed": seed,
                             "resolution": list(resolution)})
    report.bundled = bundled_checks(artifact.manifest)
    for prompt in prompts or (artifact.fixed_prompts or DEFAULT_PROMPTS)[:len(DEFAULT_PROMPTS)]:
        if progress is not None:
            progress(prompt)
        got = artifact.generate(prompt, settings, resolution)
        embeds, latents, pixels = diffusers_generation(pipe, parts, prompt, settings, resolution)
        image_psnr = peak_psnr_db(pixels, got.pixels, 1.0)  # [0, 1] pixels
        report.prompts.append({
            "prompt": prompt,
            "embeddings_psnr_db": psnr_db(embeds, got.prompt["encoder_hidden_states"]),
            "latents_psnr_db": psnr_db(latents, got.latents),
            # Pixels span [0, 1]: the image's PSNR is against that range, not the image's peak.
            "image_psnr_db": image_psnr,
        })
        report.images.append((prompt, got.image(), to_pil(pixels), image_psnr))
    return report


def floor_key(manifest) -> str:
    """The floors a pipeline is held to: its precision's, or the quantized ones (its denoiser's
    or its text encoder's quantization)."""
    quantized = manifest.quantization or (manifest.pipeline or {}).get("text_encoder_quantization")
    return "quantized" if quantized else manifest.precision


def bundled_checks(manifest) -> list[dict]:
    """The BundledProgram's own cases (what a device checks itself with), as validate's tolerances."""
    from edit_mobile.closeness import PSNR_FLOORS_DB
    from edit_mobile.runtime.executorch_session import verify_pipeline_bundle
    from edit_mobile.runtime.validate import BUNDLED_ATOL_RMSE_FACTOR

    if not manifest.has("bundled_program"):
        return []
    relative = BUNDLED_ATOL_RMSE_FACTOR * 10 ** (-PSNR_FLOORS_DB[floor_key(manifest)] / 20)
    return [{"passed": check.passed, "detail": check.detail} for check in verify_pipeline_bundle(manifest, relative)]


