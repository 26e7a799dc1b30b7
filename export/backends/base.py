"""What the orchestrator hands a backend, and what a backend hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class LoweringJob:
    """One program to lower: the traced denoiser step and everything a backend may need.

    `exported` is torch.export of the denoiser wrapper (after rewrite passes, precision cast
    and quantization); `example_inputs` and `reference_outputs` are the test vectors in the
    program's I/O dtypes (float32: fp16 programs cast inside, see artifact.CastedDenoiser).
    """

    exported: torch.export.ExportedProgram
    example_inputs: tuple[torch.Tensor, ...]
    reference_outputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    precision: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendResult:
    files: dict[str, str]  # manifest role -> path relative to the artifact folder
    delegation: dict[str, Any] | None = None  # coverage.DelegationCoverage.to_dict()
    program: dict[str, Any] | None = None  # backend facts for the manifest (ops, targets)


class Backend:
    """One target. Subclasses live one a file in export/backends/ and are registered by name."""

    name: str = ""
    description: str = ""
    default_precision: str = "fp32"
    # True: for fp16 the orchestrator casts the model to half (I/O stays float32);
    # False: the backend compiles the float32 graph at fp16 itself (Core ML, QNN).
    casts_model_for_fp16: bool = True

    def check_available(self) -> None:
        """Raise UserError naming what is missing (SDK, library) before any work starts."""

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        raise NotImplementedError

    def program_rewritten(self, result: BackendResult, out_dir: Path) -> BackendResult:
        """The program file was rewritten after lowering (quantization of a written program):
        redo what `lower` derived from it (determinism fixes, inspection)."""
        return result
