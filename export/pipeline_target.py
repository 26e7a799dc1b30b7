"""What `export --pipeline` needs from a backend, as one object a backend: its checks, how its
methods are prepared, written and run here, and what the manifest says of them.

export/pipeline.py builds the methods (encode_prompt, denoise_HxW, decode_HxW) and traces them;
the target lowers and writes them (pipeline_xnnpack.py, pipeline_onnx.py, pipeline_coreml.py).
A new backend for whole pipelines is one more such module and one line in TARGETS.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from edit_mobile.errors import UserError

# backend name -> the module whose TARGET writes its pipelines (imported when chosen)
TARGETS = {"xnnpack": "pipeline_xnnpack", "onnx": "pipeline_onnx", "coreml": "pipeline_coreml"}


class PipelineTarget:
    backend: str = ""
    runtime: str = ""  # what runs the written methods here, named for the self-check record
    program_format: str = ""  # the manifest's program.format
    takes_weights_option = False  # --weights embedded | external
    takes_quantization = False  # --quantize for the denoise method
    # Converters that translate ATen ops one by one (ONNX, Core ML) get the text encoder and the
    # decoder in core ATen: T5 attention's `.contiguous()` before a view trips the ONNX exporter's
    # own decomposition, and the mask's `new_ones` has no Core ML op. The denoiser is traced as
    # the single-denoiser artifact is: its graph rewrites expect the undecomposed ops.
    decomposes_encoder_and_decoder = False

    def check(self, request) -> None:
        """Backend-specific refusals, before anything is loaded."""

    def prepare(self, program, method_name: str):
        if self.decomposes_encoder_and_decoder and not method_name.startswith("denoise_"):
            return program.run_decompositions()
        return program

    def write(self, programs: dict, methods: list, request, staging: Path) -> tuple[object, dict, dict]:
        """Lower and write every method: (the program to bundle or None, roles -> files, the
        manifest's record of each method)."""
        raise NotImplementedError

    def run(self, staging: Path, files: dict, records: dict, methods: list) -> dict[str, list[torch.Tensor]] | None:
        """Every method's outputs on its test vectors from the written files, or None where the
        backend cannot run here."""
        return None

    def not_run(self) -> dict:
        """The self-check record when run() cannot run here."""
        raise NotImplementedError

    def bundle(self, program, methods: list, outputs: dict, staging: Path) -> dict:
        """Extra files (role -> path) a device checks itself with; none by default."""
        return {}

    def method_record(self, record: dict) -> dict:
        """What the manifest says of one method beyond its I/O."""
        return record

    def delegation(self, record: dict) -> dict | None:
        """The manifest's v1 `delegation` field, from the first denoise method's record."""
        return None


def pipeline_target(backend: str) -> PipelineTarget:
    if backend not in TARGETS:
        raise UserError(f"--pipeline exports to {', '.join(TARGETS)} so far, not {backend}; "
                        "export the denoiser alone for that backend (without --pipeline)")
    return importlib.import_module(f"edit_mobile.export.{TARGETS[backend]}").TARGET
