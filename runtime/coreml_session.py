"""Core ML models (.mlpackage) through coremltools' MLModel.predict: macOS only.

Core ML's runtime ships with macOS; elsewhere coremltools converts and inspects models but
cannot run them, so loading one here is refused up front with a line saying so.
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.session import Session

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


def coreml_can_run() -> bool:
    return platform.system() == "Darwin"


class CoreMLSession(Session):
    runtime = "coreml"

    def __init__(self, manifest: Manifest, role: str = "program", threads: int | None = None, compute_units: str = "ALL"):
        super().__init__(manifest)
        self.entry = manifest.file(role)
        if not coreml_can_run():
            raise UserError(
                f"{self.entry.relative} is a Core ML model, which runs only on macOS (this is {platform.system()}); "
                "validate it on a Mac, or export --backend xnnpack or onnx to run it here"
            )
        if compute_units not in COMPUTE_UNITS:
            raise UserError(f"compute units {compute_units!r} is not one of {', '.join(COMPUTE_UNITS)}")
        import coremltools as ct

        started = time.perf_counter()
        try:
            self.model = ct.models.MLModel(str(self.entry.path), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as err:  # coremltools raises bare Exceptions for compile failures
            raise UserError(f"Core ML could not load {self.entry.relative}: {' '.join(str(err).split())}") from err
        self.load_seconds = time.perf_counter() - started

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> list:
        feeds = {name: tensor.numpy() for name, tensor in zip(self.input_names, inputs, strict=True)}
        results = self.model.predict(feeds)
        try:
            return [np.asarray(results[spec.name]) for spec in self.outputs]
        except KeyError as err:
            raise UserError(f"{self.entry.relative} produced {sorted(results)}, not the manifest's output {err}") from err
