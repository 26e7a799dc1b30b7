"""Qualcomm AI Engine Direct (QNN, Hexagon NPU): model.pte with QNN partitions, HTP fp16.

Lowering compiles the partitions into QNN context binaries on this host, which needs the
Qualcomm AI Runtime SDK (QNN_SDK_ROOT with its x86_64 host libraries) and ExecuTorch's compiled
adaptor (PyQnnManagerAdaptor). Without them we stop before any work, naming what is missing:
ExecuTorch would otherwise try to download the SDK, and this tool never downloads at run time.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.export.backends import executorch_program
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob, named_stage
from edit_mobile.export.coverage import delegation_coverage

HOST_LIBRARY_DIR = "lib/x86_64-linux-clang"
HOST_LIBRARIES = ("libQnnHtp.so", "libQnnSystem.so")
ADAPTOR_MODULE = "executorch.backends.qualcomm.python.PyQnnManagerAdaptor"
DEFAULT_SOC = "SM8750"  # Snapdragon 8 Elite


def sdk_root() -> Path:
    """QNN_SDK_ROOT, checked for the host libraries the AOT compiler loads."""
    value = os.environ.get("QNN_SDK_ROOT", "")
    if not value:
        raise UserError(
            "the qnn backend needs the Qualcomm AI Runtime (QNN) SDK: set QNN_SDK_ROOT to its "
            f"folder (with {HOST_LIBRARY_DIR}/libQnnHtp.so) and add that lib folder to LD_LIBRARY_PATH"
        )
    root = Path(value)
    missing = [name for name in HOST_LIBRARIES if not (root / HOST_LIBRARY_DIR / name).is_file()]
    if missing:
        raise UserError(
            f"QNN_SDK_ROOT={root} lacks {HOST_LIBRARY_DIR}/{missing[0]}: point QNN_SDK_ROOT at a "
            "complete Qualcomm AI Runtime SDK for x86_64 Linux"
        )
    return root


def check_adaptor() -> None:
    try:
        importlib.import_module(ADAPTOR_MODULE)
    except ImportError as err:
        raise UserError(
            f"the qnn backend needs ExecuTorch's compiled QNN adaptor ({ADAPTOR_MODULE}: {err}); "
            "install an executorch build with the Qualcomm backend"
        ) from err


class QnnBackend(Backend):
    name = "qnn"
    description = "ExecuTorch .pte on Qualcomm's QNN HTP delegate (needs the QNN SDK)"
    default_precision = "fp16"  # the HTP runs float graphs in fp16 only
    casts_model_for_fp16 = False

    def check_available(self) -> None:
        sdk_root()
        check_adaptor()

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        self.check_available()  # QNN_SDK_ROOT set: ExecuTorch will not try to download one
        from executorch.backends.qualcomm.utils.utils import (
            generate_htp_compiler_spec,
            generate_qnn_executorch_compiler_spec,
            get_soc_to_chipset_map,
            to_edge_transform_and_lower_to_qnn,
        )

        if job.precision != "fp16" and not job.options.get("quantized"):
            raise UserError("the QNN HTP runs float models in fp16 only: pass --precision fp16 or --quantize")
        soc = job.options.get("qnn_soc") or DEFAULT_SOC
        chipsets = get_soc_to_chipset_map()
        if soc not in chipsets:
            raise UserError(f"unknown Snapdragon SoC {soc!r}; choose one of {', '.join(sorted(chipsets))}")
        compiler_specs = generate_qnn_executorch_compiler_spec(
            soc_model=chipsets[soc],
            backend_options=generate_htp_compiler_spec(use_fp16=not job.options.get("quantized")),
        )
        with named_stage("to_edge_transform_and_lower_to_qnn"):
            edge = to_edge_transform_and_lower_to_qnn(
                job.exported.module(), job.example_inputs, compiler_specs
            )
        coverage = delegation_coverage(edge.exported_program().graph_module)
        program = executorch_program.to_executorch(edge)
        return BackendResult(
            files=executorch_program.write_program(program, out_dir),
            delegation=coverage.to_dict(),
            program={"format": "executorch-pte", "method": "forward", "soc": soc},
        )


BACKEND = QnnBackend()
