"""The ExecuTorch path shared by the .pte backends: partition, lower, serialise, measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from executorch.exir import (
    EdgeCompileConfig,
    EdgeProgramManager,
    ExecutorchBackendConfig,
    ExecutorchProgramManager,
    to_edge_transform_and_lower,
)

from edit_mobile.export.backends.base import named_stage
from edit_mobile.export.coverage import DelegationCoverage, delegation_coverage

PROGRAM_FILE = "model.pte"
ETRECORD_FILE = "etrecord.bin"


def lower(
    exported: torch.export.ExportedProgram,
    partitioners: list[Any],
    compile_config: EdgeCompileConfig | None = None,
    transform_passes: list[Any] | None = None,
    generate_etrecord: bool = False,
) -> tuple[EdgeProgramManager, DelegationCoverage]:
    with named_stage("to_edge_transform_and_lower"):
        edge = to_edge_transform_and_lower(
            exported,
            partitioner=partitioners,
            compile_config=compile_config,
            transform_passes=transform_passes,
            generate_etrecord=generate_etrecord,
        )
    return edge, delegation_coverage(edge.exported_program().graph_module)


def to_executorch(edge: EdgeProgramManager) -> ExecutorchProgramManager:
    # extract_delegate_segments keeps delegate blobs out of the flatbuffer, as the runtime
    # expects for large programs (the default too; stated because the .pte layout depends on it).
    with named_stage("to_executorch"):
        return edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))


def write_program(program: ExecutorchProgramManager, out_dir: Path) -> str:
    (out_dir / PROGRAM_FILE).write_bytes(program.buffer)
    return PROGRAM_FILE


def write_etrecord(program: ExecutorchProgramManager, out_dir: Path) -> str:
    """The ETRecord maps the program's debug handles back to graph nodes and modules: the
    runtime's per-layer numerics and per-block profile need it (devtools Inspector)."""
    with named_stage("ETRecord"):
        program.get_etrecord().save(str(out_dir / ETRECORD_FILE))
    return ETRECORD_FILE
