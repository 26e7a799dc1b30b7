"""What the orchestrator hands a backend, what a backend hands back, and how a failure inside
third-party lowering code reaches the user: one line, the traceback in a log file."""

from __future__ import annotations

import contextlib
import platform
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from edit_mobile.errors import UserError

# Set on an exception by the innermost `named_stage` it left, read by `lowering_stage`.
_STAGE_ATTRIBUTE = "_edit_mobile_lowering_stage"
_LOGGED_VERSIONS = ("torch", "executorch", "coremltools", "onnx", "onnxscript", "onnxruntime")


@dataclass
class LoweringJob:
    """One program to lower: the traced denoiser step and everything a backend may need.

    `exported` is torch.export of the denoiser wrapper (after rewrite passes, precision cast
    and quantization); a backend may set it to None once its program is written, to free its
    weights before running the program. `example_inputs` and `reference_outputs` are the test
    vectors in the program's I/O dtypes (float32: fp16 programs cast inside, see
    artifact.CastedDenoiser).
    """

    exported: torch.export.ExportedProgram | None
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

    def finish(self, result: BackendResult, out_dir: Path, options: dict[str, Any]) -> BackendResult:
        """The last change to the written program, after any quantization of it (Core ML splits
        a package too large for the Neural Engine into chunks here)."""
        return result


@contextlib.contextmanager
def named_stage(stage: str) -> Iterator[None]:
    """Label a failure inside the block with `stage` (the innermost label wins), for the
    enclosing `lowering_stage` to report: backends name their third-party calls with it."""
    try:
        yield
    except Exception as err:
        if not isinstance(err, UserError) and not hasattr(err, _STAGE_ATTRIBUTE):
            with contextlib.suppress(AttributeError, TypeError):  # some C exceptions take no attributes
                setattr(err, _STAGE_ATTRIBUTE, stage)
        raise


@contextlib.contextmanager
def lowering_stage(backend: str, stage: str, log_path: Path) -> Iterator[None]:
    """Turn any failure inside the block, other than a UserError, into a UserError of one line
    naming the backend, the stage (the innermost `named_stage`, else `stage`) and the log file,
    which gets the traceback. Third-party lowering fails with tracebacks pages long that say
    nothing a user can act on; the log keeps them for a bug report."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        stage = getattr(err, _STAGE_ATTRIBUTE, stage)
        where = write_error_log(log_path, f"{backend} lowering failed in {stage}", err)
        lines = str(err).strip().splitlines()
        first = lines[0][:300] if lines else "(no message)"
        raise UserError(f"{backend} lowering failed in {stage}: {type(err).__name__}: {first}; {where}") from err


def write_error_log(path: Path, title: str, err: BaseException) -> str:
    """Write the traceback and tool versions to `path`; says where it went, for the message."""
    versions = []
    for name in _LOGGED_VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    text = (f"{title}\npython {platform.python_version()}, {', '.join(versions)}\n\n"
            + "".join(traceback.format_exception(err)))
    try:
        Path(path).write_text(text)
    except OSError as write_error:
        return f"the full log could not be written to {path} ({write_error.strerror})"
    return f"the full log is in {path}"
