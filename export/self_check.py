"""Export checks its own program before calling it done.

The written program runs on this machine where its runtime can (ExecuTorch programs whose
delegates this runtime has, ONNX in onnxruntime) and its outputs are compared with the PyTorch
reference: float artifacts on the test vectors, quantized ones on held-out calibration records
(test vectors when there is no set). Below its precision's floor, or not finite, the artifact is
not written unless the user allows it, and then the manifest says so. What cannot run here
(Core ML, Vulkan, QNN) is recorded as not checked, with the reason.

The runtimes are driven directly (executorch.runtime, onnxruntime): export does not import
edit_mobile.runtime, which comes after it in the data flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from edit_mobile.closeness import PSNR_FLOORS_DB, closeness, meets_floor
from edit_mobile.errors import UserError

Runner = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def floor_db(precision: str, quantized: bool) -> float:
    return PSNR_FLOORS_DB["quantized" if quantized else precision]


def host_runner(program: Path, delegates: Sequence[str], weights: Path | None = None,
                method: str = "forward") -> tuple[Runner | None, str]:
    """A function running the written program's `method` (with its external `weights`, if any)
    here, or None and the reason it cannot."""
    suffix = program.suffix.lower()
    if suffix == ".pte":
        return _executorch_runner(program, delegates, weights, method)
    if suffix == ".onnx":
        return _onnx_runner(program), "onnxruntime CPU"
    return None, f"{suffix or program.name} programs do not run on this machine"


def _executorch_runner(program: Path, delegates: Sequence[str], weights: Path | None,
                       method_name: str) -> tuple[Runner | None, str]:
    from executorch.runtime import Runtime

    runtime = Runtime.get()
    missing = [name for name in delegates if not runtime.backend_registry.is_available(name)]
    if missing:
        return None, f"this ExecuTorch runtime has no {', '.join(missing)} backend"
    method = runtime.load_program(program, data_path=weights).load_method(method_name)
    return (lambda inputs: method.execute(list(inputs))[0]), "ExecuTorch runtime"


def _onnx_runner(program: Path) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(str(program), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]

    def run(inputs):
        feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


def check_program(program: Path, delegates: Sequence[str], samples: Sequence[Sequence[torch.Tensor]],
                  references: Sequence[torch.Tensor], floor: float, inputs_name: str,
                  weights: Path | None = None, method: str = "forward") -> dict:
    """The self-check record for the manifest: where it ran, on what, and the PSNR figures."""
    runner, where = host_runner(program, delegates, weights, method)
    if runner is None:
        return {"ran": False, "reason": where, "floor_db": floor}
    psnrs = [closeness(reference, runner(sample)).psnr_db for sample, reference in zip(samples, references, strict=True)]
    finite = all(not math.isnan(value) for value in psnrs)
    return {
        "ran": True, "runtime": where, "inputs": inputs_name, "samples": len(psnrs), "floor_db": floor,
        "finite": finite,
        "psnr_db_min": min(psnrs) if finite else None,
        "psnr_db_mean": sum(psnrs) / len(psnrs) if finite else None,
        "passed": all(meets_floor(value, floor) for value in psnrs),
    }


def enforce_floor(record: dict, what: str, allow_below_floor: bool) -> dict:
    """Refuse an artifact below its floor (one line), or mark it allowed in the manifest."""
    if not record["ran"] or record["passed"]:
        return record
    if allow_below_floor:
        return {**record, "allowed_below_floor": True}
    if not record["finite"]:
        found = f"non-finite outputs (NaN or inf) on its {record['inputs']}"
    else:
        found = (f"worst PSNR {record['psnr_db_min']:.1f} dB (mean {record['psnr_db_mean']:.1f}) vs PyTorch "
                 f"on its {record['inputs']}, below the {record['floor_db']:g} dB floor")
    raise UserError(f"the exported {what} program gives {found}; nothing was written. Try other --passes or "
                    "precision, or pass --allow-below-floor to keep it (recorded in the manifest)")
