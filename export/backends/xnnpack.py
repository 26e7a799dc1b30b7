"""XNNPACK (CPU, Android and iOS): model.pte with its weights in model.ptd (program-data
separation: executorch_program), and model.bpte, a BundledProgram carrying the reference inputs
and expected outputs so that a device can verify the program by itself. The bundle holds the
program without its weights: it runs with the same model.ptd, so the weights exist once."""

from __future__ import annotations

from pathlib import Path

from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
from executorch.devtools.bundled_program.core import BundledProgram
from executorch.devtools.bundled_program.serialize import (
    serialize_from_bundled_program_to_flatbuffer,
)

from edit_mobile.export.backends import executorch_program
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob, named_stage
from edit_mobile.memory import release_freed_memory

BUNDLED_FILE = "model.bpte"


def write_bundled_program(job: LoweringJob, out_dir: Path, files: dict[str, str]) -> str:
    """The device checks itself against these outputs. A float program is held to PyTorch's;
    a quantized one differs from PyTorch by design (validate measures by how much), so it is
    held to what the same program computes here: the device must reproduce the host.
    Built from the written .pte, after the lowered program (and its serialised weights) is gone."""
    with named_stage("the bundled program"):
        program = out_dir / files["program"]
        weights = out_dir / files["weights"] if "weights" in files else None
        expected = host_outputs(program, job, weights) if job.options.get("quantized") else job.reference_outputs
        suite = MethodTestSuite(
            method_name="forward",
            test_cases=[MethodTestCase(inputs=list(job.example_inputs), expected_outputs=list(expected))],
        )
        bundled = BundledProgram(None, [suite], pte_file_path=str(program))
        (out_dir / BUNDLED_FILE).write_bytes(serialize_from_bundled_program_to_flatbuffer(bundled))
    return BUNDLED_FILE


def host_outputs(program: Path, job: LoweringJob, weights: Path | None) -> list:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(program, data_path=weights).load_method("forward")
    return list(method.execute(list(job.example_inputs)))


def write_lowered_program(job: LoweringJob, out_dir: Path, external: bool):
    """model.pte (+ model.ptd) and the ETRecord; the lowered program, which holds every
    serialised weight in memory, goes when this returns."""
    edge, coverage = executorch_program.lower(
        job.exported, [XnnpackPartitioner()], transform_passes=[executorch_program.FoldConstantSubgraphs()],
        generate_etrecord=True, external_weights=external,
    )
    program = executorch_program.to_executorch(edge, external_weights=external)
    files = executorch_program.write_program(program, out_dir, external_weights=external)
    files["etrecord"] = executorch_program.write_etrecord(program, out_dir, without_weights=external)
    return files, coverage


class XnnpackBackend(Backend):
    name = "xnnpack"
    description = "ExecuTorch .pte on the XNNPACK CPU delegate (+ BundledProgram .bpte)"

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        external = executorch_program.external_weights(
            job.options.get("weights"), lambda: executorch_program.weight_bytes(job.exported))
        files, coverage = write_lowered_program(job, out_dir, external)
        job.exported = None  # written: its weights go before the runtime loads the program's
        release_freed_memory()
        files["bundled_program"] = write_bundled_program(job, out_dir, files)
        return BackendResult(
            files=files,
            delegation=coverage.to_dict(),
            program={"format": "executorch-pte", "method": "forward", "weights": "external" if external else "embedded"},
        )


BACKEND = XnnpackBackend()
