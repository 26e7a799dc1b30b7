"""The pipeline artifact for the ExecuTorch runtime with XNNPACK: `export MODEL --pipeline`.

Every method is one method of one program (model.pte), its weights in model.ptd past 1 GiB
(program-data separation). XNNPACK names each weight by its sha256, so methods that share
weights (the denoise methods of several resolutions) store them once either way. A
BundledProgram (model.bpte) holds a test case a method, for the device to check itself with.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edit_mobile.export.pipeline import ENCODE_METHOD
from edit_mobile.export.pipeline_target import PipelineTarget


def unique_weight_bytes(programs: dict, weight_bytes) -> int:
    """The methods' weights counted once (the denoise methods share one module's)."""
    return max(weight_bytes(p) for p in programs.values()) + sum(
        weight_bytes(p) for name, p in programs.items() if not name.startswith(("denoise_", "decode_")))


def run_methods(program_path: Path, weights: Path | None, methods: list) -> dict[str, list[torch.Tensor]]:
    """Every method run once in the ExecuTorch runtime on its example inputs."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(program_path, data_path=weights)
    return {m.name: list(program.load_method(m.name).execute(list(m.inputs))) for m in methods}


def folds(method: str) -> bool:
    """Constant-only subgraphs are computed at export in the methods an image runs at every
    step or once (the denoiser's position table, the decoder's casts), not in the text encoder:
    T5's position bias, folded, is a heads x tokens x tokens table (23 MB for T5-XXL) saving
    a few portable ops a prompt."""
    return method != ENCODE_METHOD


class XnnpackPipelineTarget(PipelineTarget):
    backend = "xnnpack"
    runtime = "ExecuTorch runtime"
    program_format = "executorch-pte"
    takes_weights_option = True
    takes_quantization = True

    def write(self, programs: dict, methods: list, request, staging: Path):
        """Lower the methods' programs together, write model.pte (and model.ptd with the weights
        outside); each method's record is its delegation coverage."""
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        from edit_mobile.export.backends import executorch_program

        external = executorch_program.external_weights(
            request.weights, lambda: unique_weight_bytes(programs, executorch_program.weight_bytes))
        edge, coverage = executorch_program.lower_methods(programs, [XnnpackPartitioner()], external,
                                                          folded=tuple(name for name in programs if folds(name)))
        program = executorch_program.to_executorch(edge, external_weights=external)
        files = executorch_program.write_program(program, staging, external_weights=external)
        return program, files, {name: c.to_dict() for name, c in coverage.items()}

    def run(self, staging: Path, files: dict, records: dict, methods: list):
        weights = staging / files["weights"] if "weights" in files else None
        return run_methods(staging / files["program"], weights, methods)

    def bundle(self, program, methods: list, outputs: dict, staging: Path) -> dict:
        """A test case for every method; float32 methods expect PyTorch's outputs, fp16 and
        quantized ones what the program computes here (the device must reproduce the host)."""
        from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
        from executorch.devtools.bundled_program.core import BundledProgram
        from executorch.devtools.bundled_program.serialize import (
            serialize_from_bundled_program_to_flatbuffer,
        )

        from edit_mobile.export.backends.xnnpack import BUNDLED_FILE

        suites = [MethodTestSuite(method_name=m.name, test_cases=[MethodTestCase(
            inputs=list(m.inputs),
            expected_outputs=list(outputs[m.name] if m.expects_host_outputs else m.outputs))]) for m in methods]
        (staging / BUNDLED_FILE).write_bytes(
            serialize_from_bundled_program_to_flatbuffer(BundledProgram(program, suites)))
        return {"bundled_program": BUNDLED_FILE}

    def method_record(self, record: dict) -> dict:
        return {"delegation": record}

    def delegation(self, record: dict) -> dict | None:
        return record


TARGET = XnnpackPipelineTarget()
