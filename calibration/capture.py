"""Build a calibration set: prompts -> embeddings -> sampler trajectories -> stratified records."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from edit_mobile import __version__
from edit_mobile.calibration.calibration_set import PROMPT_LEVEL_INPUTS, write_calibration_set
from edit_mobile.calibration.embeddings import EncodedPrompts, load_precomputed
from edit_mobile.calibration.prompts import prompts_sha256, read_prompts
from edit_mobile.calibration.sampler import (
    denoise,
    forward_trajectory,
    stratified_choice,
)
from edit_mobile.errors import UserError
from edit_mobile.fileio import atomic_output_dir
from edit_mobile.models.families import get_family


@dataclass
class CalibrationOptions:
    steps: int | None = None  # None: the family pipeline's default (PixArt 20, SD3 28)
    samples: int = 16  # trajectories, one prompt each
    guidance: float | None = None  # None: the family default (PixArt 4.5, SD3 7.0); <= 1: none
    resolution: tuple[int, int] | None = None  # pixels (H, W); None: the model's sample size
    prompt_tokens: int | None = None  # None: the family's (PixArt-Sigma 300, SD3 77 + 256)
    seed: int = 0
    records: int = 128  # calibration records kept, stratified across steps
    heldout_records: int = 32  # held-out records kept, from prompts never used to calibrate
    heldout_fraction: float = 0.25  # share of the samples (prompts) held out
    # "sampler": the model's own trajectories; "forward": latents of the forward process at
    # the sampler's timesteps (x0 ~ N(0, I)), for models without trained weights.
    trajectory: str = "sampler"

    def validate(self) -> None:
        checks = [
            (self.steps is None or self.steps >= 1, "--steps must be at least 1"),
            (self.samples >= 2, "--samples must be at least 2 (one is held out)"),
            (self.prompt_tokens is None or self.prompt_tokens >= 1, "--prompt-tokens must be positive"),
            (self.records >= 1 and self.heldout_records >= 1, "record counts must be at least 1"),
            (0 < self.heldout_fraction < 1, "--heldout-fraction must be between 0 and 1"),
            (self.trajectory in ("sampler", "forward"), "--trajectory must be sampler or forward"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def model_sha256(model: torch.nn.Module) -> str:
    """Hash of the weights (names, shapes, dtypes, bytes), independent of how they were saved."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def capture_calibration(
    model: str | torch.nn.Module,
    output_dir: str | os.PathLike,
    *,
    prompts_path: str | os.PathLike | None = None,
    text_encoder_dir: str | os.PathLike | None = None,
    embeddings_path: str | os.PathLike | None = None,
    random_text_encoder: bool = False,
    options: CalibrationOptions | None = None,
    model_source: str | None = None,
    progress: bool = True,
    inputs: tuple | list = (),
    force: bool = False,
) -> Path:
    """Write a calibration set for `model` (preset name, local folder or loaded model)."""
    from edit_mobile.models import (
        DenoiserWrapper,
        TransformerSignature,
        default_resolution,
        is_edit,
        load_transformer,
        model_family,
        pipeline_folder_of,
        prompt_tokens_of,
    )

    options = options or CalibrationOptions()
    options.validate()
    if isinstance(model, str) and text_encoder_dir is None and embeddings_path is None:
        _check_text_source(model, random_text_encoder)  # before loading a large model
    if isinstance(model, str):
        model_source = model_source or model
        model = load_transformer(model)
    model_source = model_source or type(model).__name__
    model.eval()
    family = model_family(model)
    family_spec = get_family(family)
    default_steps, default_guidance = family_spec.sampling_defaults(pipeline_folder_of(model_source))
    steps = options.steps or default_steps
    guidance = default_guidance if options.guidance is None else options.guidance
    use_guidance = guidance > 1.0  # as the pipelines: guidance_scale <= 1 means no guidance
    height, width = options.resolution or default_resolution(model)
    tokens = options.prompt_tokens or prompt_tokens_of(model_source, model)
    signature = TransformerSignature.of(model, height, width, batch=1, prompt_tokens=tokens)
    specs = {spec.name: spec for spec in signature.inputs}
    input_names = tuple(specs)
    unknown = set(input_names) - {"hidden_states", "timestep", *PROMPT_LEVEL_INPUTS}
    if unknown:
        raise UserError(f"the denoiser takes inputs {sorted(unknown)} that calibration cannot record")
    if text_encoder_dir is None and embeddings_path is None and _has_text_encoder(model_source):
        text_encoder_dir = _pipeline_folder(model_source)  # a pipeline folder brings its own text encoder(s)

    if embeddings_path is not None:
        encoded = load_precomputed(embeddings_path, use_guidance, "pooled_projections" in specs)
        prompts_info = {"source": "embeddings", "sha256": encoded.description["sha256"],
                        "count": len(encoded.positive)}
        chosen = _choose_prompts(len(encoded.positive), options.samples, options.seed)
        encoded = _select_prompts(encoded, chosen)
    else:
        prompts = read_prompts(prompts_path)
        prompts_info = {"source": str(prompts_path) if prompts_path else "default",
                        "sha256": prompts_sha256(prompts), "count": len(prompts)}
        chosen = _choose_prompts(len(prompts), options.samples, options.seed)
        encoder = _text_encoder(family, model_source, specs, text_encoder_dir, random_text_encoder)
        encoded = encoder.encode([prompts[i] for i in chosen], guidance=use_guidance)
    _check_embeddings(encoded, specs)

    splits = _plan_splits(options, steps, use_guidance)
    wrapper = DenoiserWrapper(model).eval()
    latent_shape = tuple(specs["hidden_states"].shape)
    captured = {}
    samples_run = sorted({key[0] for keys in splits.values() for key in keys})
    bar = tqdm(total=len(samples_run) * steps, desc="calibration trajectories", unit="step",
               disable=not progress)
    scheduler = family_spec.scheduler(_pipeline_folder(model_source) or model_source)
    kept = set().union(*splits.values())
    with bar:
        for sample in samples_run:
            generator = torch.Generator().manual_seed(options.seed + sample)
            noise = torch.randn(latent_shape, generator=generator)
            keep = lambda step, branch, sample=sample: (sample, step, branch) in kept  # noqa: E731
            if options.trajectory == "forward":
                clean = torch.randn(latent_shape, generator=generator)
                records = forward_trajectory(scheduler, clean, noise, steps, (0, 1) if use_guidance else (1,),
                                             keep, on_step=bar.update)
            else:
                positive = _prompt_inputs(encoded.positive.select(sample), input_names)
                negative = _prompt_inputs(encoded.negative_for(sample), input_names) if use_guidance else None
                records, _ = denoise(wrapper, input_names, scheduler, noise, positive, negative,
                                     steps, guidance, keep, on_step=bar.update)
            for record in records:
                captured[(sample, record.step, record.branch)] = record

    split_tensors = {
        split: _split_tensors(sorted(keys), captured, encoded, input_names, use_guidance)
        for split, keys in splits.items()
    }
    scheduler.set_timesteps(steps)
    manifest = {
        "created_by": f"edit-mobile {__version__} calibrate",
        "model": {"source": str(model_source), "family": family, "edit": bool(is_edit(model)),
                  "class_name": type(model).__name__, "sha256": model_sha256(model)},
        "prompts": prompts_info,
        "text_encoder": encoded.description,
        "sampler": {"scheduler": type(scheduler).__name__, "config": dict(scheduler.config),
                    "schedule": [float(t) for t in scheduler.timesteps]},
        "steps": steps, "guidance": guidance, "seed": options.seed, "samples": options.samples,
        "trajectory": options.trajectory,
        "resolution": [height, width],
        "inputs": [spec.to_dict() for spec in signature.inputs],
        "split": {split: {"records": len(keys), "samples": sorted({k[0] for k in keys})}
                  for split, keys in splits.items()},
    }
    with atomic_output_dir(output_dir, "calibrate", inputs, force) as staging:
        write_calibration_set(staging, _jsonable(manifest), split_tensors)
    return Path(output_dir)


def _choose_prompts(available: int, samples: int, seed: int) -> list[int]:
    """A seeded order of the prompts, cycled when there are fewer prompts than samples."""
    order = torch.randperm(available, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i % available] for i in range(samples)]


def _select_prompts(encoded: EncodedPrompts, chosen: list[int]) -> EncodedPrompts:
    negative = encoded.negative
    if negative is not None and len(negative) > 1:
        negative = negative.select(chosen)
    return EncodedPrompts(encoded.positive.select(chosen), negative, encoded.description)


def _pipeline_folder(model_source) -> Path | None:
    from edit_mobile.models import pipeline_folder_of

    if model_source is not None and (Path(str(model_source)) / "text_encoder").is_dir():
        return Path(str(model_source))
    return pipeline_folder_of(model_source)


def _has_text_encoder(model_source) -> bool:
    folder = _pipeline_folder(model_source)
    return folder is not None and (folder / "text_encoder").is_dir()


def folder_text_encoder(family: str, folder: Path, specs):
    """The text encoder(s) of a pipeline folder, giving the prompt inputs `specs` describes."""
    from edit_mobile.calibration import text_encoders

    _, tokens, width = specs["encoder_hidden_states"].shape
    return text_encoders.folder_text_encoder(family, folder, tokens, width)


def _text_encoder(family, model_source, specs, folder, random_encoder):
    from edit_mobile.calibration.text_encoders import random_text_encoder

    if folder is not None:
        return folder_text_encoder(family, folder, specs)
    _check_text_source(model_source, random_encoder)
    _, tokens, width = specs["encoder_hidden_states"].shape
    pooled = specs["pooled_projections"].shape[-1] if "pooled_projections" in specs else None
    return random_text_encoder(family, tokens, width, pooled)


def _check_text_source(model_source, random_encoder: bool) -> None:
    from edit_mobile.models import is_tiny

    if not (random_encoder or is_tiny(model_source) or _has_text_encoder(model_source)):
        raise UserError(
            f"{model_source} needs its text encoder: pass --text-encoder DIR (a local pipeline "
            "folder) or --embeddings FILE.safetensors"
        )


def _check_embeddings(encoded: EncodedPrompts, specs) -> None:
    for part in filter(None, (encoded.positive, encoded.negative)):
        provided = part.as_inputs()
        for name in PROMPT_LEVEL_INPUTS:
            if name not in specs:
                continue
            expected = tuple(specs[name].shape[1:])
            got = tuple(provided[name].shape[1:]) if name in provided else None
            if got != expected:
                raise UserError(
                    f"prompt embeddings give {name} of shape {got} per prompt, the model "
                    f"expects {expected}; use the model's own text encoder"
                )


def _plan_splits(options: CalibrationOptions, steps: int, guidance: bool) -> dict[str, set]:
    """Hold out whole prompts, then pick records stratified by step within each split."""
    generator = torch.Generator().manual_seed(options.seed)
    heldout_count = min(options.samples - 1, max(1, round(options.samples * options.heldout_fraction)))
    order = torch.randperm(options.samples, generator=generator).tolist()
    members = {"calibration": sorted(order[heldout_count:]), "heldout": sorted(order[:heldout_count])}
    budgets = {"calibration": options.records, "heldout": options.heldout_records}
    branches = (0, 1) if guidance else (1,)
    return {
        split: stratified_choice(
            [(sample, step, branch) for sample in samples for step in range(steps) for branch in branches],
            steps, budgets[split], generator,
        )
        for split, samples in members.items()
    }


def _prompt_inputs(embeddings, input_names) -> dict[str, torch.Tensor]:
    return {name: value for name, value in embeddings.as_inputs().items() if name in input_names}


def _split_tensors(keys, captured, encoded: EncodedPrompts, input_names, guided: bool) -> dict[str, torch.Tensor]:
    # Prompt table rows: every sample's prompt (and, with guidance, its negative), so each of
    # the split's prompts can be replayed whole whichever branches its records caught; a single
    # shared negative embedding (the "" prompt) is stored once.
    table_index: dict[tuple, int] = {}
    table_rows: list[dict[str, torch.Tensor]] = []
    row_owner = []  # (sample, branch) of each row; -1 for the shared negative

    def row(sample: int, branch: int) -> int:
        shared = branch == 0 and len(encoded.negative) == 1
        row_key = ("negative", 0) if shared else ("negative" if branch == 0 else "positive", sample)
        if row_key not in table_index:
            table_index[row_key] = len(table_rows)
            source = encoded.negative_for(sample) if branch == 0 else encoded.positive.select(sample)
            table_rows.append(_prompt_inputs(source, input_names))
            row_owner.append((-1 if shared else sample, branch))
        return table_index[row_key]

    for sample in sorted({key[0] for key in keys}):
        for branch in ((0, 1) if guided else (1,)):
            row(sample, branch)
    prompt_index = [row(sample, branch) for sample, _, branch in keys]
    records = [captured[key] for key in keys]
    tensors = {
        "inputs.hidden_states": torch.cat([r.latents for r in records]),  # (R, C, h, w)
        "inputs.timestep": torch.cat([r.timestep for r in records]),  # (R,)
        "record.prompt_index": torch.tensor(prompt_index, dtype=torch.int64),
        "record.sample": torch.tensor([k[0] for k in keys], dtype=torch.int64),
        "record.step": torch.tensor([k[1] for k in keys], dtype=torch.int64),
        "record.branch": torch.tensor([k[2] for k in keys], dtype=torch.int64),
        "prompt_row.sample": torch.tensor([owner[0] for owner in row_owner], dtype=torch.int64),
        "prompt_row.branch": torch.tensor([owner[1] for owner in row_owner], dtype=torch.int64),
    }
    for name in table_rows[0]:
        tensors[f"prompt_inputs.{name}"] = torch.cat([row[name] for row in table_rows])  # (E, ...)
    return tensors


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
