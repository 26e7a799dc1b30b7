"""One interface to run an artifact, whatever executes it.

    session = load("artifacts/tiny-xnnpack-fp32")       # reads + verifies manifest.json
    outputs = session.run(inputs)                        # tuple in manifest order, or {name: tensor}
    noise = session(*inputs)                             # the first output, like the nn.Module
    reference = load(art_dir, runtime="pytorch")         # the PyTorch model the artifact came from

Every session checks its inputs against the manifest (names, shapes, dtypes) before anything
runs. The runtime is picked by the program file's type; each runtime is one module here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import IOSpec, Manifest, read_manifest

# Program file suffix -> (module, class) of the session that runs it.
RUNTIMES = {
    ".pte": ("edit_mobile.runtime.executorch_session", "ExecuTorchSession"),
    ".bpte": ("edit_mobile.runtime.executorch_session", "ExecuTorchSession"),
    ".onnx": ("edit_mobile.runtime.onnx_session", "OnnxSession"),
    ".ort": ("edit_mobile.runtime.onnx_session", "OnnxSession"),
    ".mlpackage": ("edit_mobile.runtime.coreml_session", "CoreMLSession"),
    ".mlmodel": ("edit_mobile.runtime.coreml_session", "CoreMLSession"),
    "pytorch": ("edit_mobile.runtime.reference_session", "ReferenceSession"),
}
RUNTIME_NAMES = {"executorch": ".pte", "onnxruntime": ".onnx", "coreml": ".mlpackage", "pytorch": "pytorch"}

TORCH_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
    "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


class Session:
    """Runs one artifact. Subclasses implement `_run` on checked, contiguous torch tensors."""

    runtime = "?"

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.inputs: tuple[IOSpec, ...] = manifest.inputs
        self.outputs: tuple[IOSpec, ...] = manifest.outputs
        self.entry = None  # the program file's manifest entry, for sessions that run a file

    # --- capabilities: what validate and profile ask of any session; a runtime overrides what it has

    def default_threads(self) -> int:
        return os.cpu_count() or 1

    def planned_memory(self) -> dict:
        """The memory plan the program file declares (weights apart), where the format has one."""
        return {"planned_bytes": None, "planned_note": f"{self.runtime} plans memory at load time; not declared by the file"}

    def file_bytes(self) -> int | None:
        return self.entry.path.stat().st_size if self.entry is not None and self.entry.path.is_file() else None

    def bundled_checks(self, atol: float) -> list[dict]:
        """The program's own bundled test cases run by its runtime within `atol`; none by default."""
        return []

    @classmethod
    def operator_profile(cls, manifest: Manifest, inputs, threads: int | None, runs: int, tick=lambda: None):
        """Per-operator times from a fresh, profiling load of the artifact (an OperatorProfile)."""
        from edit_mobile.runtime.profiling import OperatorProfile

        return OperatorProfile("none", 0.0, notes=[f"no operator profiler for {cls.runtime} programs"])

    def layer_report(self, inputs, reference: Session, threshold_db: float):
        """Each layer's output against the PyTorch reference's on `inputs`."""
        raise UserError(f"--per-layer works for ExecuTorch and ONNX artifacts, not {self.runtime}")

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def run(self, inputs: Sequence | Mapping) -> dict[str, torch.Tensor]:
        """Inputs in manifest order (or by name) -> {output name: tensor}."""
        tensors = self.check_inputs(inputs)
        results = self._run(tensors)
        if len(results) != len(self.outputs):
            raise UserError(
                f"the {self.runtime} program returned {len(results)} outputs but the manifest lists "
                f"{len(self.outputs)} ({', '.join(s.name for s in self.outputs)}); re-export the artifact"
            )
        return {spec.name: _to_torch(value) for spec, value in zip(self.outputs, results, strict=True)}

    def execute(self, checked: tuple[torch.Tensor, ...]) -> list:
        """Run inputs already passed through `check_inputs` (timing loops check once)."""
        return self._run(checked)

    def __call__(self, *inputs) -> torch.Tensor:
        return next(iter(self.run(inputs).values()))

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> list:
        raise NotImplementedError

    def check_inputs(self, inputs: Sequence | Mapping) -> tuple[torch.Tensor, ...]:
        """The inputs as torch tensors in manifest order, or a UserError naming the mismatch."""
        expected = ", ".join(spec.describe() for spec in self.inputs)
        if isinstance(inputs, Mapping):
            unknown = [name for name in inputs if name not in self.input_names]
            missing = [name for name in self.input_names if name not in inputs]
            if unknown or missing:
                problem = f"unknown input {unknown[0]!r}" if unknown else f"missing input {missing[0]!r}"
                raise UserError(f"{problem}; the artifact takes {expected}")
            inputs = [inputs[name] for name in self.input_names]
        inputs = list(inputs)
        if len(inputs) != len(self.inputs):
            raise UserError(f"{len(inputs)} inputs given; the artifact takes {len(self.inputs)}: {expected}")
        return tuple(_checked_tensor(value, spec) for value, spec in zip(inputs, self.inputs, strict=True))

    def describe(self) -> str:
        return f"{self.runtime} {self.manifest.describe()}"

    def close(self) -> None:
        """Free the runtime's resources (sessions also free them when garbage-collected)."""


def _checked_tensor(value, spec: IOSpec) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise UserError(f"input {spec.name!r} is a {type(value).__name__}, not a tensor; pass a torch tensor {spec.describe()}")
    dtype = str(value.dtype).removeprefix("torch.")
    if tuple(value.shape) != spec.shape:
        raise UserError(
            f"input {spec.name!r} has shape {list(value.shape)} but the artifact takes {list(spec.shape)}; "
            "pass that shape or export the model at yours"
        )
    if dtype != spec.dtype:
        raise UserError(f"input {spec.name!r} is {dtype} but the artifact takes {spec.dtype}; cast it with .to(torch.{spec.dtype})")
    return value.detach().contiguous()


def _to_torch(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.from_numpy(np.ascontiguousarray(value))


def program_suffix(manifest: Manifest, role: str = "program") -> str:
    entry = manifest.file(role)
    return Path(entry.relative).suffix.lower()


def load(art_dir: str | os.PathLike | Manifest, runtime: str | None = None, **options) -> Session:
    """Open an artifact folder: verify manifest.json and its files, return a session.

    runtime: None picks the program's own runtime; "pytorch" rebuilds the reference model;
    "executorch" / "onnxruntime" / "coreml" insist on one. Options go to the session class
    (e.g. threads=2, etdump=True for ExecuTorch, profile=True for onnxruntime).
    """
    manifest = art_dir if isinstance(art_dir, Manifest) else read_manifest(art_dir)
    role = options.pop("role", None) or ("program" if manifest.has("program") else "bundled_program")
    if runtime == "pytorch":
        key = "pytorch"
    else:
        key = program_suffix(manifest, role)
        if key not in RUNTIMES:
            raise UserError(
                f"{manifest.file(role).relative}: no runtime runs '{key}' programs "
                f"(known: {', '.join(k for k in RUNTIMES if k.startswith('.'))})"
            )
        if runtime is not None:
            wanted = RUNTIME_NAMES.get(runtime)
            if wanted is None:
                raise UserError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIME_NAMES)}")
            if RUNTIMES[wanted][0] != RUNTIMES[key][0]:
                raise UserError(f"{manifest.root.name} holds a {key} program, which {runtime} does not run")
    module_name, class_name = RUNTIMES[key]
    session_class = getattr(importlib.import_module(module_name), class_name)
    if key != "pytorch":
        options["role"] = role
    return session_class(manifest, **options)


def load_reference(art_dir: str | os.PathLike | Manifest, **options) -> Session:
    """The PyTorch model the artifact was exported from, rebuilt from reference/."""
    return load(art_dir, runtime="pytorch", **options)


def torch_dtype(name: str) -> torch.dtype:
    return TORCH_DTYPES[name]
