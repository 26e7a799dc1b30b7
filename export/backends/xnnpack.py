"""XNNPACK (CPU, Android and iOS): model.pte, and model.bpte, a BundledProgram carrying the
reference inputs and expected outputs so that a device can verify the program by itself."""

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

BUNDLED_FILE = "model.bpte"


def write_bundled_program(program, job: LoweringJob, out_dir: Path) -> str:
    """The device checks itself against these outputs. A float program is held to PyTorch's;
    a quantized one differs from PyTorch by design (validate measures by how much), so it is
    held to what the same program computes here: the device must reproduce the host."""
    with named_stage("the bundled program"):
        expected = host_outputs(program, job) if job.options.get("quantized") else job.reference_outputs
        suite = MethodTestSuite(
            method_name="forward",
            test_cases=[MethodTestCase(inputs=list(job.example_inputs), expected_outputs=list(expected))],
        )
        bundled = BundledProgram(program, [suite])
        (out_dir / BUNDLED_FILE).write_bytes(serialize_from_bundled_program_to_flatbuffer(bundled))
    return BUNDLED_FILE


def host_outputs(program, job: LoweringJob) -> list:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(program.buffer).load_method("forward")
    return list(method.execute(list(job.example_inputs)))


class XnnpackBackend(Backend):
    name = "xnnpack"
    description = "ExecuTorch .pte on the XNNPACK CPU delegate (+ BundledProgram .bpte)"

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        edge, coverage = executorch_program.lower(
            job.exported, [XnnpackPartitioner()], generate_etrecord=True
        )
        program = executorch_program.to_executorch(edge)
        return BackendResult(
            files={
                "program": executorch_program.write_program(program, out_dir),
                "bundled_program": write_bundled_program(program, job, out_dir),
                "etrecord": executorch_program.write_etrecord(program, out_dir),
            },
            delegation=coverage.to_dict(),
            program={"format": "executorch-pte", "method": "forward"},
        )


BACKEND = XnnpackBackend()
