"""Text to image from a pipeline artifact alone (manifest v2, `export --pipeline`): its tokenizer
files, its scheduler's config and its program's methods. No PyTorch model and no diffusers
pipeline is loaded: the steps are the ones a phone app takes.

    prompt -> tokenizer -> encode_prompt -> (guidance branches) -> denoise_HxW per scheduler
    step -> decode_HxW -> pixels

(An artifact exported with --fixed-prompts has no tokenizer and no encode_prompt: its prompts'
embeddings are rows of prompts.safetensors, and other prompts are refused.)

`Stages` keeps what each stage made, so that `validate --pipeline` can compare every stage with
diffusers' own pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from edit_mobile.calibration.sampler import guidance_calls
from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import (
    MANIFEST_NAME,
    Manifest,
    parse_manifest_json,
    read_manifest,
    tokenizer_descriptions,
)
from edit_mobile.runtime.pipeline import (
    Generation,
    _check_finite,
    sample,
    stacked_inputs,
    to_pil,
)
from edit_mobile.runtime.portable_noise import portable_latents


@dataclass
class Stages:
    """One generation's intermediate results, (1, ...) tensors."""

    prompt: dict[str, torch.Tensor]  # encode_prompt's outputs for the prompt
    latents: torch.Tensor  # the final latents
    pixels: torch.Tensor  # (1, 3, H, W) in [0, 1]

    def image(self):
        return to_pil(self.pixels)


def is_pipeline_artifact(art_dir: str | os.PathLike) -> bool:
    """Read with the manifest's own bounds; a manifest they refuse is not one, and read_manifest
    then says what is wrong with it in one line."""
    path = Path(art_dir) / MANIFEST_NAME
    if not path.is_file():
        return False
    try:
        document = parse_manifest_json(path)
    except UserError:
        return False
    return isinstance(document, dict) and "pipeline" in document


class ExecuTorchMethods:
    """The pipeline's methods as one ExecuTorch program (weights in model.ptd or inside it)."""

    runtime = "executorch"

    def __init__(self, manifest: Manifest, threads: int | None):
        from executorch.runtime import Runtime

        from edit_mobile.runtime.executorch_session import (
            program_weights,
            set_threads,
            trial_in_child,
        )

        set_threads(threads)
        entry, weights = manifest.file("program"), program_weights(manifest)
        for method in manifest.pipeline["methods"]:  # a corrupt program ends a child, not this process
            trial_in_child(entry, entry.path, manifest.method_specs(method)[0], weights, method)
        self.program = Runtime.get().load_program(entry.path, data_path=weights.path if weights else None)
        self.entries = [entry, *([weights] if weights else [])]
        self._methods = {}

    def load(self, name: str):
        if name not in self._methods:
            self._methods[name] = self.program.load_method(name)
        return self._methods[name]

    def run(self, name: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.load(name).execute(inputs))


class OnnxMethods:
    """The pipeline's methods as one ONNX model each (export/pipeline_onnx.py), an onnxruntime
    session per method, opened on first use; their external weights are checked to stay inside
    the artifact before any is opened."""

    runtime = "onnxruntime"

    def __init__(self, manifest: Manifest, threads: int | None):
        from edit_mobile.runtime.onnx_session import check_external_data

        self.threads = threads
        self.files = {name: manifest.file(self._role(manifest, name)) for name in manifest.pipeline["methods"]}
        for entry in self.files.values():
            check_external_data(entry)
        self.entries = [*self.files.values(), *([manifest.file("weights")] if manifest.has("weights") else [])]
        self.specs = manifest.pipeline["methods"]
        self._sessions = {}

    @staticmethod
    def _role(manifest: Manifest, name: str) -> str:
        role = manifest.pipeline["methods"][name].get("file")
        if not isinstance(role, str):
            raise UserError(f"{manifest.root}: pipeline.methods.{name}.file must name a file role; re-export the artifact")
        return role

    def load(self, name: str):
        import onnxruntime as ort

        from edit_mobile.runtime.onnx_session import PROVIDERS, session_options
        from edit_mobile.safe_read import one_line

        if name not in self._sessions:
            entry = self.files[name]
            try:
                self._sessions[name] = ort.InferenceSession(str(entry.path), session_options(self.threads),
                                                            providers=PROVIDERS)
            except Exception as err:  # onnxruntime raises its own exception types
                raise UserError(f"onnxruntime could not load {entry.relative}: {one_line(err)}; "
                                "re-export the artifact") from err
        return self._sessions[name]

    def run(self, name: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        spec = self.specs[name]
        feeds = {item["name"]: tensor.numpy() for item, tensor in zip(spec["inputs"], inputs, strict=True)}
        outputs = self.load(name).run([item["name"] for item in spec["outputs"]], feeds)
        return [torch.from_numpy(value) for value in outputs]


METHOD_RUNNERS = {"xnnpack": ExecuTorchMethods, "onnx": OnnxMethods}


class PipelineArtifact:
    def __init__(self, art_dir: str | os.PathLike, threads: int | None = None):
        self.manifest: Manifest = read_manifest(art_dir)
        if self.manifest.pipeline is None:
            raise UserError(f"{art_dir} holds a denoiser alone, not a pipeline; export the model with --pipeline")
        self.spec = self.manifest.pipeline
        runner = METHOD_RUNNERS.get(self.manifest.backend)
        if runner is None:
            raise UserError(f"{art_dir} is a {self.manifest.backend} pipeline, which edit-mobile cannot run here "
                            f"(Core ML runs on Apple systems); it runs {', '.join(METHOD_RUNNERS)} pipelines")
        self.methods = runner(self.manifest, threads)
        self.precomputed = self._load_precomputed()
        self.tokenizers = self._load_tokenizers() if self.precomputed is None else []
        self.calls: list | None = None  # set to [] to record (method, inputs, outputs) of every call

    def _load_tokenizers(self) -> list:
        """One TokenizerInput a tokenizer folder, as the manifest describes it (a v2.0 manifest
        describes its one tokenizer with fields of pipeline.text itself)."""
        from transformers import AutoTokenizer

        from edit_mobile.calibration.token_inputs import TokenizerInput

        described = tokenizer_descriptions(self.spec["text"])
        loaded = []
        for description in described:
            folder = self.manifest.file(description["files"]).path
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as err:
                raise UserError(f"cannot read the artifact's tokenizer {folder}: {err}; re-export the artifact") from err
            loaded.append(TokenizerInput.from_description(description, tokenizer))
        return loaded

    def _load_precomputed(self) -> dict[str, torch.Tensor] | None:
        """The fixed prompts' embeddings by encode_prompt output name, (prompts + 1, ...) each."""
        description = self.spec["text"].get("precomputed")
        if description is None:
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        entry = self.manifest.file(description["file"])
        try:
            tensors = load_file(entry.path)
        except (OSError, SafetensorError) as err:
            raise UserError(f"cannot read the artifact's prompt embeddings {entry.relative}: {err}; "
                            "re-export the artifact") from err
        rows = len(description["prompts"]) + 1
        if sorted(tensors) != sorted(description["outputs"]) or any(t.shape[0] != rows for t in tensors.values()):
            raise UserError(f"{entry.relative} does not hold {rows} rows of {', '.join(description['outputs'])}; "
                            "re-export the artifact")
        return tensors

    @property
    def fixed_prompts(self) -> list[str] | None:
        """The prompts an artifact without a text encoder can draw (None: any prompt)."""
        return None if self.precomputed is None else list(self.spec["text"]["precomputed"]["prompts"])

    def scheduler(self):
        """A fresh diffusers scheduler of the recorded class and config (state changes per run)."""
        import diffusers

        name = self.spec["scheduler"]["class_name"]
        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
            raise UserError(f"the artifact's scheduler {name!r} is not a diffusers scheduler; re-export the artifact")
        return cls.from_config(cls.load_config(self.manifest.file("scheduler").path))

    def load_method(self, name: str) -> None:
        """Load a method now (loading is otherwise on its first call)."""
        if name not in self.spec["methods"]:
            raise UserError(f"the artifact has no {name} method (it has {', '.join(sorted(self.spec['methods']))})")
        self.methods.load(name)

    def run(self, name: str, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One method call by input name -> outputs by name."""
        self.load_method(name)
        spec = self.spec["methods"][name]
        inputs = [named[item["name"]].contiguous() for item in spec["inputs"]]
        outputs = self.methods.run(name, inputs)
        if self.calls is not None:
            self.calls.append((name, inputs, list(outputs)))
        return {item["name"]: tensor for item, tensor in zip(spec["outputs"], outputs, strict=True)}

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        return [tuple(pair) for pair in self.spec["resolutions"]]

    def check_resolution(self, resolution: tuple[int, int] | None) -> tuple[int, int]:
        if resolution is None:
            return self.resolutions[0]
        if tuple(resolution) not in self.resolutions:
            have = ", ".join(f"{h}x{w}" for h, w in self.resolutions)
            raise UserError(f"the artifact draws at {have}, not {resolution[0]}x{resolution[1]}; pick one of those "
                            "or re-export with that --resolution")
        return tuple(resolution)

    def default_settings(self, steps: int | None = None, guidance: float | None = None, seed: int = 0) -> Generation:
        defaults = self.spec["defaults"]
        return Generation(defaults["steps"] if steps is None else steps,
                          defaults["guidance"] if guidance is None else guidance, seed)

    def encode(self, prompt: str) -> dict[str, torch.Tensor]:
        from edit_mobile.calibration.token_inputs import tokenize_all

        if self.precomputed is None:
            return self.run("encode_prompt", tokenize_all(self.tokenizers, [prompt]))
        prompts = self.fixed_prompts
        if prompt != self.spec["text"].get("negative_prompt", "") and prompt not in prompts:
            shown = "; ".join(repr(p) for p in prompts[:3]) + ("; ..." if len(prompts) > 3 else "")
            raise UserError(f"the artifact has no text encoder, only the embeddings of {len(prompts)} fixed prompts "
                            f"({shown}); pick one of them, or export without --fixed-prompts")
        described = self.spec["text"]["precomputed"]
        row = described["negative_row"] if prompt not in prompts else prompts.index(prompt) + 1
        return {name: tensor[row:row + 1] for name, tensor in self.precomputed.items()}

    @torch.no_grad()
    def generate(self, prompt: str, settings: Generation, resolution: tuple[int, int] | None = None,
                 progress=None, noise: str = "torch") -> Stages:
        """`noise`: "torch" draws the initial latents as diffusers does (torch.randn), "portable"
        as the demo apps do (runtime/portable_noise.py): the same image on a phone."""
        height, width = self.check_resolution(resolution)
        method = f"denoise_{height}x{width}"
        positive = self.encode(prompt)
        guided = settings.guidance > 1.0
        branches = [self.encode(self.spec["text"].get("negative_prompt", "")), positive] if guided else [positive]
        latent_spec = self.spec["methods"][method]["inputs"][0]["shape"]  # (B, C, h, w)
        batch = latent_spec[0]

        def predict(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            calls = guidance_calls(batch, branches)
            noise = [next(iter(self.run(method, stacked_inputs(group, latents, timestep)).values())) for group in calls]
            return torch.cat(noise)[: len(branches)]

        shape = (1, *latent_spec[1:])
        initial = portable_latents(settings.seed, shape) if noise == "portable" else None
        latents = sample(self.scheduler(), shape, settings, predict, progress, initial)
        _check_finite(latents, "the final latents")
        pixels = self.run(f"decode_{height}x{width}", {"latents": latents})["image"]
        _check_finite(pixels, "the VAE decoder's image")
        return Stages(positive, latents, pixels)
