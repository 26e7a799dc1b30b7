"""ExecuTorch XNNPACK quantization of a traced denoiser step.

int8-static   PT2E, XNNPACKQuantizer: per-channel int8 weights, per-tensor int8 activations
              with ranges from the calibration set (HistogramObserver). Fastest on CPU.
int8-dynamic  the same weights; activation ranges measured per call. No calibration needed.
int4-weight   torchao Int8DynamicActivationIntxWeightConfig: 4-bit weights in groups of 32
              (XNNPACK's qb4w GEMMs) with dynamic int8 activations; for memory. Needs the
              eager module (torchao rewrites nn.Linear) and skips Linears whose input width
              is not a multiple of the group.

Every scheme keeps per-sample-vector layers float (layers.py) and the layers named float.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from edit_mobile.errors import UserError
from edit_mobile.export.quantization import pt2e
from edit_mobile.export.quantization.layers import ROOT_SUFFIX, always_float_layers
from edit_mobile.export.quantization.metrics import Inputs, mean_psnr, reference_outputs
from edit_mobile.export.quantization.sensitivity import SensitivityAnalysis

SCHEMES = ("int8-static", "int8-dynamic", "int4-weight")
INT4_GROUP = 32


def quantize_for_xnnpack(
    exported: torch.export.ExportedProgram,
    scheme: str,
    calibration_inputs: Sequence[Inputs],
    heldout_inputs: Sequence[Inputs] = (),
    float_layers: Sequence[str] = (),
    min_psnr: float | None = None,
    denoiser: torch.nn.Module | None = None,
    granularity: str = "block",
    progress: bool = True,
    analysis: SensitivityAnalysis | None = None,
) -> tuple[torch.export.ExportedProgram, dict]:
    """Quantized ExportedProgram ready for to_edge_transform_and_lower(XnnpackPartitioner),
    and the manifest record {"scheme", "float_layers", "heldout_psnr_db", ...}.

    `analysis`: a SensitivityAnalysis of this program and records to reuse for min_psnr."""
    if scheme not in SCHEMES:
        raise UserError(f"unknown XNNPACK quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not calibration_inputs:
        raise UserError("quantization needs calibration records; pass --calibration CALIB_DIR")
    example_inputs = tuple(calibration_inputs[0])
    float_layers = list(float_layers)
    record: dict = {"scheme": scheme}
    if min_psnr is not None:
        if scheme == "int4-weight":
            raise UserError("--min-psnr works with int8-static and int8-dynamic; int4-weight has no layer search")
        if not heldout_inputs:
            raise UserError("--min-psnr needs held-out records; re-run edit-mobile calibrate")
        analysis = analysis or SensitivityAnalysis(exported, calibration_inputs, heldout_inputs,
                                                   dynamic=scheme == "int8-dynamic",
                                                   granularity=granularity, progress=progress)
        report = analysis.report(scheme)
        choice = analysis.choose_float_layers(min_psnr, report)
        if not choice.target_met:
            raise UserError(
                f"{scheme} cannot reach {min_psnr:g} dB held-out PSNR unless every layer stays float "
                f"(all quantized: {report.all_quantized_psnr_db:.1f} dB); lower --min-psnr or use int8-dynamic"
            )
        float_layers = _merge(float_layers, choice.float_layers)
        record.update(min_psnr_db=min_psnr, layers_total=choice.layers_total,
                      all_quantized_psnr_db=report.all_quantized_psnr_db)
        order = [cost.layer for cost in report.layers]
    references = reference_outputs(exported.module(), heldout_inputs) if heldout_inputs else []

    while True:
        if scheme == "int4-weight":
            if denoiser is None:
                raise UserError("int4-weight quantizes the eager model: the export must pass denoiser=")
            program, module = _int4_weight(denoiser, exported, example_inputs, float_layers)
        else:
            module = pt2e.quantize_graph(exported, scheme == "int8-dynamic", calibration_inputs,
                                         float_layers, progress=progress,
                                         observed=analysis.observed if analysis else None)
            program = pt2e.reexport(module, example_inputs)
        psnr = mean_psnr(module, references, heldout_inputs) if heldout_inputs else (None, None)
        if min_psnr is None or psnr[0] >= min_psnr:
            break
        # The estimate was optimistic: keep the next most sensitive layer float too.
        remaining = [layer for layer in order if layer not in float_layers]
        if len(remaining) <= 1:
            raise UserError(
                f"{scheme} cannot reach {min_psnr:g} dB held-out PSNR: with every layer but "
                f"{remaining or 'none'} float it gives {psnr[0]:.1f} dB; lower --min-psnr or use another scheme"
            )
        float_layers.append(remaining[0])

    record.update(
        float_layers=float_layers,
        always_float_layers=always_float_layers(exported.graph),
        heldout_psnr_db=psnr[0],
        heldout_psnr_min_db=psnr[1],
        heldout_records=len(heldout_inputs),
    )
    return program, record


def _merge(first: Sequence[str], second: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def _int4_weight(denoiser: torch.nn.Module, exported, example_inputs: Inputs, float_layers: Sequence[str]):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.utils import unwrap_tensor_subclass

    quantized = copy.deepcopy(denoiser).eval()
    root = next((name for name, module in quantized.named_modules()
                 if type(module).__name__.endswith(ROOT_SUFFIX)), "")
    prefix = root + "." if root else ""
    keep_float = tuple(float_layers) + tuple(always_float_layers(exported.graph))

    def take(module: torch.nn.Module, name: str) -> bool:
        relative = name.removeprefix(prefix)
        return (isinstance(module, torch.nn.Linear) and module.in_features % INT4_GROUP == 0
                and not any(relative == f or relative.startswith(f + ".") for f in keep_float))

    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(INT4_GROUP))
    with torch.no_grad():
        quantize_(quantized, config, filter_fn=take)
    unwrap_tensor_subclass(quantized)
    return torch.export.export(quantized, tuple(example_inputs), strict=False), quantized
