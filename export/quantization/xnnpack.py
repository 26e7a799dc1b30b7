"""ExecuTorch XNNPACK quantization of a traced denoiser step.

int8-static   PT2E, XNNPACKQuantizer: per-channel int8 weights, per-tensor int8 activations
              with ranges from the calibration set (HistogramObserver). Fastest on CPU.
int8-dynamic  the same weights; activation ranges measured per call. No calibration needed.
int4-weight   torchao Int8DynamicActivationIntxWeightConfig: 4-bit weights in groups of 32
              (XNNPACK's qb4w GEMMs) with dynamic int8 activations; for memory. Needs the
              eager module (torchao rewrites nn.Linear) and skips Linears whose input width
              is not a multiple of the group.

Every scheme keeps normalisations float and the layers named float; int8-static keeps the
per-sample-vector layers (timestep embedding, adaLN modulation) float too (layers.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from edit_mobile.closeness import meets_floor
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
    accept: Callable[[torch.nn.Module], bool] | None = None,
) -> tuple[torch.export.ExportedProgram, dict]:
    """Quantized ExportedProgram ready for to_edge_transform_and_lower(XnnpackPartitioner),
    and the manifest record {"scheme", "float_layers", "heldout_psnr_db", ...}.

    `analysis`: a SensitivityAnalysis of this program and records to reuse for min_psnr.
    `accept(module)`: a further judgement of the quantized module (whole sampler runs, say):
    with min_psnr, more of the most sensitive layers stay float until it holds too; without,
    it is only measured (the caller reads its verdict)."""
    if scheme not in SCHEMES:
        raise UserError(f"unknown XNNPACK quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not calibration_inputs:
        raise UserError("quantization needs calibration records; pass --calibration CALIB_DIR")
    float_layers, record, order = list(float_layers), {"scheme": scheme}, []
    if min_psnr is not None:
        if scheme == "int4-weight":
            raise UserError("--min-psnr works with int8-static and int8-dynamic; int4-weight has no layer search")
        if not heldout_inputs:
            raise UserError("--min-psnr needs held-out records; re-run edit-mobile calibrate")
        analysis = analysis or SensitivityAnalysis(exported, calibration_inputs, heldout_inputs,
                                                   dynamic=scheme == "int8-dynamic",
                                                   granularity=granularity, progress=progress)
        order, search = _search_float_layers(analysis, scheme, min_psnr)
        float_layers = _merge(float_layers, search.pop("float_layers"))
        if accept is not None:
            float_layers = _grow_until_accepted(analysis, order, float_layers, accept, scheme)
        record.update(search)
    references = reference_outputs(exported.module(), heldout_inputs) if heldout_inputs else []
    while True:
        program, module = _quantize_once(exported, scheme, calibration_inputs, float_layers, denoiser,
                                         analysis, progress)
        psnr = mean_psnr(module, references, heldout_inputs) if heldout_inputs else (None, None)
        if min_psnr is not None and not meets_floor(psnr[1], min_psnr):  # the worst held-out record
            float_layers.append(_next_float_layer(order, float_layers, scheme, f"{min_psnr:g} dB held-out PSNR",
                                                  f"{psnr[1]:.1f} dB"))
            continue
        accepted = accept is None or accept(module)  # measured even where there is no search
        if accepted or min_psnr is None:
            break
        float_layers.append(_next_float_layer(order, float_layers, scheme, "its image floor", "images below it"))
    record.update(
        float_layers=float_layers,
        always_float_layers=always_float_layers(exported.graph, dynamic=scheme != "int8-static"),
        heldout_psnr_db=psnr[0],
        heldout_psnr_min_db=psnr[1],
        heldout_records=len(heldout_inputs),
    )
    return program, record


def _search_float_layers(analysis: SensitivityAnalysis, scheme: str, min_psnr: float) -> tuple[list[str], dict]:
    """(layers in sensitivity order, record entries incl. the estimated float layers)."""
    report = analysis.report(scheme)
    choice = analysis.choose_float_layers(min_psnr, report)
    if not choice.target_met:
        raise UserError(
            f"{scheme} cannot reach {min_psnr:g} dB PSNR on the worst held-out record unless every layer stays "
            f"float (all quantized: {report.all_quantized_min_psnr_db:.1f} dB worst); lower --min-psnr or use int8-dynamic"
        )
    order = [cost.layer for cost in report.layers]
    return order, {"float_layers": choice.float_layers, "min_psnr_db": min_psnr,
                   "layers_total": choice.layers_total, "all_quantized_psnr_db": report.all_quantized_psnr_db}


def _quantize_once(exported, scheme, calibration_inputs, float_layers, denoiser, analysis, progress):
    """(program for lowering, module to measure it with)."""
    example_inputs = tuple(calibration_inputs[0])
    if scheme == "int4-weight":
        if denoiser is None:
            raise UserError("int4-weight quantizes the eager model: the export must pass denoiser=")
        return _int4_weight(denoiser, exported, example_inputs, float_layers)
    module = pt2e.quantize_graph(exported, scheme == "int8-dynamic", calibration_inputs, float_layers,
                                 progress=progress, observed=analysis.observed if analysis else None)
    return pt2e.reexport(module, example_inputs), module


def _grow_until_accepted(analysis: SensitivityAnalysis, order, float_layers, accept, scheme) -> list[str]:
    """The held-out estimate's float layers, then the next most sensitive ones until `accept`
    holds on the calibrated graph with them bypassed (no recalibration per try)."""
    float_layers = list(float_layers)
    while not accept(pt2e.with_float_layers(analysis.converted, float_layers)):
        float_layers.append(_next_float_layer(order, float_layers, scheme, "its image floor", "images below it"))
    return float_layers


def _next_float_layer(order, float_layers, scheme, target: str, measured: str) -> str:
    """The estimate was optimistic: the next most sensitive layer goes float too."""
    remaining = [layer for layer in order if layer not in float_layers]
    if len(remaining) <= 1:
        raise UserError(
            f"{scheme} cannot reach {target}: with every layer but {remaining or 'none'} float it gives "
            f"{measured}; lower --min-psnr or use another scheme"
        )
    return remaining[0]


def _merge(first: Sequence[str], second: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def _int4_weight(denoiser: torch.nn.Module, exported, example_inputs: Inputs, float_layers: Sequence[str]):
    root = next((name for name, module in denoiser.named_modules()
                 if type(module).__name__.endswith(ROOT_SUFFIX)), "")
    prefix = root + "." if root else ""
    keep_float = tuple(float_layers) + tuple(always_float_layers(exported.graph, dynamic=True))

    def take(module: torch.nn.Module, name: str) -> bool:
        relative = name.removeprefix(prefix)
        return (isinstance(module, torch.nn.Linear) and module.in_features % INT4_GROUP == 0
                and not any(relative == f or relative.startswith(f + ".") for f in keep_float))

    return dynamic_int_linears(denoiser, example_inputs, torch.int4, INT4_GROUP, take)


def dynamic_int_linears(module: torch.nn.Module, example_inputs: Inputs, weight_dtype: torch.dtype,
                        group: int | None, take) -> tuple[torch.export.ExportedProgram, torch.nn.Module]:
    """A copy of the eager `module` (sharing its float tensors) whose Linears chosen by `take(module, name)` hold int weights
    (in groups of `group`, or one scale an output channel for None) with dynamic int8
    activations (torchao; XNNPACK's qd8 GEMMs), re-exported. (program, quantized module)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.utils import unwrap_tensor_subclass

    # A copy of the module tree holding the same tensors: torchao sets each chosen Linear's new
    # weight on the copy, so the caller's float model is untouched and not held twice (10 GB for
    # SD3.5-Medium).
    shared = {id(tensor): tensor for tensor in (*module.parameters(), *module.buffers())}
    quantized = copy.deepcopy(module, shared).eval()
    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=weight_dtype,
                                                   weight_granularity=PerGroup(group) if group else PerAxis(0))
    with torch.no_grad():
        quantize_(quantized, config, filter_fn=take)
    unwrap_tensor_subclass(quantized)
    return torch.export.export(quantized, tuple(example_inputs), strict=False), quantized
