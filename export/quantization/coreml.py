"""Core ML compression with coremltools.optimize.

Weight-only, applied to the converted ML program (post-lowering, no calibration):
  int8-weight     linear symmetric int8 per output channel (constexpr_affine_dequantize)
  palettize-6bit  6-bit k-means look-up tables (constexpr_lut_to_dense)
  palettize-4bit  4-bit k-means look-up tables; per groups of 16 output channels when the
                  deployment target allows it (iOS18 / macOS15), per tensor before.
W8A8, applied to the traced program before conversion (pre-lowering, calibrated):
  w8a8            int8 activations with ranges from the calibration set, and int8 weights.
                  coremltools' own activation calibration (linear_quantize_activations)
                  runs the model through Core ML, which exists only on Apple systems; here
                  the same q/dq form comes from PT2E (pt2e.py) and ct.convert turns it into
                  quantize / dequantize ops and int8 constants.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from edit_mobile.errors import UserError
from edit_mobile.export.quantization import pt2e
from edit_mobile.export.quantization.layers import always_float_layers
from edit_mobile.export.quantization.metrics import Inputs, mean_psnr, reference_outputs

WEIGHT_SCHEMES = ("int8-weight", "palettize-6bit", "palettize-4bit")
PROGRAM_SCHEMES = ("w8a8",)
SCHEMES = WEIGHT_SCHEMES + PROGRAM_SCHEMES
# Weights with fewer elements stay float (coremltools' default threshold): norms, biases.
WEIGHT_THRESHOLD = 2048
IOS18_SPEC_VERSION = 9


def compress_coreml(mlmodel, scheme: str):
    """(compressed MLModel, manifest record) for a weight-only scheme."""
    import coremltools.optimize as cto

    if scheme not in WEIGHT_SCHEMES:
        raise UserError(f"unknown Core ML weight compression {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "int8-weight":
        op_config = cto.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel",
            weight_threshold=WEIGHT_THRESHOLD)
        compressed = cto.coreml.linear_quantize_weights(mlmodel, cto.coreml.OptimizationConfig(op_config))
    else:
        nbits = int(scheme.removeprefix("palettize-").removesuffix("bit"))
        grouped = nbits == 4 and mlmodel.get_spec().specificationVersion >= IOS18_SPEC_VERSION
        op_config = cto.coreml.OpPalettizerConfig(
            nbits=nbits, mode="kmeans", weight_threshold=WEIGHT_THRESHOLD,
            granularity="per_grouped_channel" if grouped else "per_tensor",
            **({"group_size": 16} if grouped else {}))
        compressed = cto.coreml.palettize_weights(mlmodel, cto.coreml.OptimizationConfig(op_config))
    record = {"scheme": scheme, "float_layers": [], "heldout_psnr_db": None,
              "compressed_weight_ops": compressed_weight_ops(compressed.get_spec())}
    return compressed, record


def compressed_weight_ops(spec) -> dict[str, int]:
    """constexpr_* ops (compressed weights decompressed at load) and quantize ops in a spec."""
    counts: Counter[str] = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            counts.update(op.type for op in block.operations
                          if op.type.startswith("constexpr_") or op.type in ("quantize", "dequantize"))
    return dict(sorted(counts.items()))


def quantize_for_coreml_w8a8(
    exported: torch.export.ExportedProgram,
    calibration_inputs: Sequence[Inputs],
    heldout_inputs: Sequence[Inputs] = (),
    float_layers: Sequence[str] = (),
    progress: bool = True,
) -> tuple[torch.export.ExportedProgram, dict]:
    """The calibrated q/dq ExportedProgram for ct.convert, and its manifest record. The PSNR
    is of the q/dq program in PyTorch (Core ML cannot run here), before fp16 compute."""
    if not calibration_inputs:
        raise UserError("w8a8 needs calibration records; pass --calibration CALIB_DIR")
    module = pt2e.quantize_graph(exported, False, calibration_inputs, float_layers, progress=progress)
    program = pt2e.reexport(module, tuple(calibration_inputs[0]))
    psnr = (None, None)
    if heldout_inputs:
        references = reference_outputs(exported.module(), heldout_inputs)
        psnr = mean_psnr(module, references, heldout_inputs)
    record = {"scheme": "w8a8", "float_layers": list(float_layers),
              "always_float_layers": always_float_layers(exported.graph),
              "heldout_psnr_db": psnr[0], "heldout_psnr_min_db": psnr[1],
              "heldout_psnr_measured_in": "pytorch (q/dq program, float32)",
              "heldout_records": len(heldout_inputs)}
    return program, record
