"""Vulkan (Android GPUs): model.pte on ExecuTorch's Vulkan delegate. Lowered here; it runs only
on a device with a Vulkan driver, so tests check the program's delegation, not its numbers.

`--weights` as for XNNPACK (auto: outside from 1 GiB, counted as the delegate stores them). The Vulkan delegate files every constant
it takes under its sha256 and ignores the tag XNNPACK's weights go to model.ptd by; asked to
(its compile option `external_constants_max_data_bytes`), it moves them to shards of its own,
`vulkan_constants_<digest>.ptd` (at most SHARD_MAX_BYTES each, one or more a delegated
partition). The constants no delegate took go to model.ptd, as XNNPACK's do. The manifest lists
every data file (executorch_program.weights_roles): `weights`, then `weights.1`, ...
"""

from __future__ import annotations

import re
from pathlib import Path

from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

from edit_mobile.errors import UserError
from edit_mobile.export.backends import executorch_program
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob

# Each vulkan_constants_<digest>.ptd holds at most this much, so that no file reaches 2 GB (the
# sizes signed 32-bit tools and loaders stop at). A single larger constant is refused in one line.
SHARD_MAX_BYTES = 1 << 30
_TOO_LARGE = re.compile(r"has (\d+) bytes and exceeds external data shard cap (\d+)")


class VulkanBackend(Backend):
    name = "vulkan"
    description = "ExecuTorch .pte on the Vulkan GPU delegate (runs on device only)"
    # force_fp16 keeps float32 I/O and stores and computes the delegate's tensors in fp16,
    # the delegate's own way; casting the model would leave half tensors to the CPU fallback.
    casts_model_for_fp16 = False

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        options = {"force_fp16": job.precision == "fp16"}

        def stored_bytes() -> int:  # as the delegate stores them: fp16 when forced
            return executorch_program.weight_bytes(job.exported, float_bytes=2 if options["force_fp16"] else None)

        external = executorch_program.external_weights(job.options.get("weights"), stored_bytes)
        partitioner_options = {**options, "external_constants_max_data_bytes": SHARD_MAX_BYTES} if external else options
        try:
            edge, coverage = executorch_program.lower(
                job.exported, [VulkanPartitioner(partitioner_options)],
                transform_passes=[executorch_program.FoldConstantSubgraphs()],
            )
        except ValueError as err:
            too_large = _TOO_LARGE.search(str(err))
            if too_large is None:
                raise
            size, cap = (int(value) for value in too_large.groups())
            raise UserError(f"vulkan with external weights: one constant takes {size:,} bytes, more than a "
                            f"vulkan_constants_*.ptd shard holds ({cap:,}, kept below 2 GB); export with "
                            "--weights embedded, or quantize that layer") from err
        program = executorch_program.to_executorch(edge, external_weights=external)
        return BackendResult(
            files=executorch_program.write_program(program, out_dir, external_weights=external),
            delegation=coverage.to_dict(),
            program={"format": "executorch-pte", "method": "forward", "force_fp16": options["force_fp16"],
                     "weights": "external" if external else "embedded"},
        )


BACKEND = VulkanBackend()
