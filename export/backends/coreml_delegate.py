"""Core ML through ExecuTorch (backend name `coreml-pte`): model.pte whose partitions are Core ML
programs (CoreMLPartitioner). Lowered here; the delegate runs only on Apple systems.

ExecuTorch's Core ML preprocessing names each partition with a random UUID and embeds an
.mlpackage whose Manifest.json has random UUIDs and whose spec carries the conversion date.
`deterministic_coreml_lowering` makes all three functions of the content, so the same export
gives the same bytes and a changed model a new identifier (the runtime caches compiled models
by identifier, so a content-derived one is also the safe choice).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch
from executorch.backends.apple.coreml.compiler import coreml_preprocess
from executorch.backends.apple.coreml.compiler.coreml_preprocess import CoreMLBackend as _ETCoreML
from executorch.backends.apple.coreml.partition import CoreMLPartitioner

from edit_mobile.export.backends import coreml as coreml_backend
from edit_mobile.export.backends import executorch_program
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob


def program_digest(exported: torch.export.ExportedProgram, salt: str) -> bytes:
    """Hash of a program's graph and weights: what the identifiers are derived from."""
    digest = hashlib.sha256(salt.encode())
    digest.update(exported.graph_module.code.encode())
    tensors = {**exported.state_dict, **exported.constants}
    for name, tensor in sorted(tensors.items()):
        if isinstance(tensor, torch.Tensor):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


@contextlib.contextmanager
def deterministic_coreml_lowering(seed: bytes) -> Iterator[None]:
    counter = itertools.count()

    def content_uuid4() -> uuid.UUID:
        raw = hashlib.sha256(seed + next(counter).to_bytes(8, "little")).digest()
        return uuid.UUID(bytes=raw[:16], version=4)

    original_convert = _ETCoreML._convert_to_mlmodel
    native = coreml_preprocess.executorchcoreml

    def convert_without_date(*args, **kwargs):
        mlmodel = original_convert(*args, **kwargs)
        coreml_backend.strip_build_date(mlmodel)
        return mlmodel

    def flatten_deterministic(directory: str) -> bytes:
        for manifest in sorted(Path(directory).rglob("*.mlpackage/Manifest.json")):
            coreml_backend.make_package_deterministic(manifest.parent)
        return native.flatten_directory_contents(directory)

    patches = [
        (coreml_preprocess, "uuid", types.SimpleNamespace(uuid4=content_uuid4)),
        (coreml_preprocess, "executorchcoreml",
         types.SimpleNamespace(flatten_directory_contents=flatten_deterministic)),
        (_ETCoreML, "_convert_to_mlmodel", staticmethod(convert_without_date)),
    ]
    with contextlib.ExitStack() as stack:
        for owner, attribute, replacement in patches:
            original = owner.__dict__[attribute]
            setattr(owner, attribute, replacement)
            stack.callback(setattr, owner, attribute, original)
        yield


class CoreMLDelegateBackend(Backend):
    name = "coreml-pte"
    description = "ExecuTorch .pte with Core ML partitions (runs on Apple systems only)"
    default_precision = "fp16"
    casts_model_for_fp16 = False

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        target = coreml_backend.deployment_target(job.options.get("coreml_target"))
        compile_specs = _ETCoreML.generate_compile_specs(
            minimum_deployment_target=target,
            compute_precision=coreml_backend.compute_precision(job.precision),
        )
        partitioner = CoreMLPartitioner(compile_specs=compile_specs)
        seed = program_digest(job.exported, f"{target.name}:{job.precision}")
        with deterministic_coreml_lowering(seed):
            edge, coverage = executorch_program.lower(job.exported, [partitioner])
            program = executorch_program.to_executorch(edge)
        return BackendResult(
            files=executorch_program.write_program(program, out_dir),
            delegation=coverage.to_dict(),
            program={
                "format": "executorch-pte",
                "method": "forward",
                "minimum_deployment_target": target.name,
                "compute_precision": job.precision,
            },
        )


BACKEND = CoreMLDelegateBackend()
