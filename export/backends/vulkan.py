"""Vulkan (Android GPUs): model.pte on ExecuTorch's Vulkan delegate. Lowered here; it runs only
on a device with a Vulkan driver, so tests check the program's delegation, not its numbers."""

from __future__ import annotations

from pathlib import Path

from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

from edit_mobile.export.backends import executorch_program
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob


class VulkanBackend(Backend):
    name = "vulkan"
    description = "ExecuTorch .pte on the Vulkan GPU delegate (runs on device only)"
    # force_fp16 keeps float32 I/O and stores and computes the delegate's tensors in fp16,
    # the delegate's own way; casting the model would leave half tensors to the CPU fallback.
    casts_model_for_fp16 = False

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        options = {"force_fp16": job.precision == "fp16"}
        edge, coverage = executorch_program.lower(
            job.exported, [VulkanPartitioner(options)], transform_passes=[executorch_program.FoldConstantSubgraphs()]
        )
        program = executorch_program.to_executorch(edge)
        return BackendResult(
            files=executorch_program.write_program(program, out_dir),
            delegation=coverage.to_dict(),
            program={"format": "executorch-pte", "method": "forward", "force_fp16": options["force_fp16"]},
        )


BACKEND = VulkanBackend()
