"""Quantization of a traced denoiser step for each backend, calibrated on a calibration set
(`edit-mobile calibrate`), with per-layer sensitivity and float fallback for a PSNR target.

API for the export orchestrator (export/artifact.py)
----------------------------------------------------
Schemes by backend (`SCHEMES`):
  xnnpack  int8-static (PT2E XNNPACKQuantizer, per-channel weights, calibrated activations),
           int8-dynamic (no calibration needed), int4-weight (4-bit grouped weights, dynamic
           int8 activations; needs `denoiser=`, the eager module torch.export traced)
  coreml   w8a8 (calibrated; before conversion), int8-weight, palettize-6bit, palettize-4bit
           (weight-only; applied to the converted ML program)
  onnx     int8-static (QDQ, CalibrationDataReader over the set), int8-dynamic (on model.onnx)

1. Before lowering, on the torch.export program (after passes):
     exported, record = quantize_program(exported, backend=..., scheme=..., calibration=DIR,
                                         signature=signature, denoiser=denoiser,
                                         min_psnr=None, float_layers=())
   For xnnpack and coreml/w8a8 `exported` comes back quantized, ready for
   to_edge_transform_and_lower / ct.convert. For the other coreml and onnx schemes it comes
   back unchanged with record["stage"] == "lowered": then
2. After the backend wrote its program file (model.onnx / model.mlpackage), before hashing:
     record = quantize_lowered(staging / files["program"], backend=..., scheme=...,
                               calibration=DIR, signature=signature, record=record,
                               min_psnr=None, float_layers=(), accept=None)
   which rewrites the file in place (min_psnr, float_layers and accept: onnx only; accept is
   called with an onnxruntime-backed denoiser). A Core ML package is re-saved by coremltools: re-apply
   the backend's determinism step (make_package_deterministic) and inspection after it.
   (A backend may instead call `compress_coreml(mlmodel, scheme)` / `quantize_onnx(...)`
   itself, before saving.)
`record` is manifest["quantization"]: {"scheme", "calibration": CalibrationSet.summary(),
"float_layers", "always_float_layers", "heldout_psnr_db", "heldout_psnr_min_db",
"heldout_records", and with min_psnr: "min_psnr_db", "layers_total", "all_quantized_psnr_db"}.
PSNR = 20 log10(max|ref| / RMSE) of the quantized program's output against the float one on
held-out records (mean over records; _min_db the worst record). `min_psnr` (export
`--min-psnr DB`, xnnpack and onnx int8 schemes) keeps the most sensitive layers float until the
held-out PSNR reaches it, or raises UserError saying it cannot. `accept(module)` (xnnpack), a
further judgement of the quantized module (the pipeline export's whole-sampler image check),
extends that search until it holds, and is only measured without min_psnr. Bad input raises
UserError.

Building blocks: quantize_for_xnnpack, quantize_for_coreml_w8a8, compress_coreml,
quantize_onnx, SensitivityAnalysis (report / choose_float_layers), psnr_db.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edit_mobile.errors import UserError

SCHEMES = {
    "xnnpack": ("int8-static", "int8-dynamic", "int4-weight"),
    "coreml": ("w8a8", "int8-weight", "palettize-6bit", "palettize-4bit"),
    "onnx": ("int8-static", "int8-dynamic"),
}
LOWERED_SCHEMES = {"coreml": ("int8-weight", "palettize-6bit", "palettize-4bit"),
                   "onnx": ("int8-static", "int8-dynamic")}
# Schemes whose ranges come from the weights or each call, not from a calibration set.
UNCALIBRATED_SCHEMES = ("int8-dynamic", "int4-weight", "int8-weight", "palettize-6bit", "palettize-4bit")
# `--quantize int8`, what users type: each backend's default int8 scheme.
INT8_ALIAS = "int8"
DEFAULT_INT8 = {"xnnpack": "int8-static", "coreml": "int8-weight", "onnx": "int8-static"}


def schemes_help() -> str:
    listed = "; ".join(f"{backend}: {', '.join(schemes)}" for backend, schemes in SCHEMES.items())
    aliases = ", ".join(f"{backend} {scheme}" for backend, scheme in DEFAULT_INT8.items())
    return f"{listed}. '{INT8_ALIAS}' is each backend's default int8 scheme ({aliases})"


def resolve_scheme(backend: str, scheme: str) -> str:
    """The scheme name for `backend`, with the int8 alias resolved; UserError if it has none."""
    if backend not in SCHEMES:
        raise UserError(f"--quantize is available for {', '.join(SCHEMES)}, not {backend}; export it in float")
    scheme = DEFAULT_INT8[backend] if scheme == INT8_ALIAS else scheme
    if scheme not in SCHEMES[backend]:
        raise UserError(f"{backend} has no quantization scheme {scheme!r}; choose one of "
                        f"{', '.join(SCHEMES[backend])} or {INT8_ALIAS}")
    return scheme


def check_scheme(backend: str, scheme: str) -> None:
    resolve_scheme(backend, scheme)


def load_records(calibration, signature, need: bool = True):
    """(calibration set or None, calibration records, held-out records) at the signature's batch."""
    from edit_mobile.calibration import CalibrationSet, load_calibration
    from edit_mobile.export.quantization.metrics import batched

    if calibration is None:
        if need:
            raise UserError("this scheme is calibrated: pass --calibration CALIB_DIR (edit-mobile calibrate)")
        return None, [], []
    calib = calibration if isinstance(calibration, CalibrationSet) else load_calibration(calibration)
    calib.check_matches(signature.inputs)
    batch = signature.inputs[0].shape[0]
    return calib, batched(calib.calibration_inputs, batch), batched(calib.heldout_inputs, batch)


def quantize_program(exported, *, backend: str, scheme: str, calibration, signature,
                     denoiser=None, min_psnr: float | None = None, float_layers=(),
                     progress: bool = True, accept=None):
    import torch

    check_scheme(backend, scheme)
    if any(value.dtype == torch.float16 for value in exported.state_dict.values()):
        raise UserError("quantization starts from the float32 program: export without --precision fp16")
    calibrated = scheme not in UNCALIBRATED_SCHEMES
    if scheme in LOWERED_SCHEMES.get(backend, ()):
        if backend != "onnx" and min_psnr is not None:
            raise UserError(f"--min-psnr searches float layers for xnnpack and onnx int8 schemes, not {backend} {scheme}")
        if backend != "onnx" and float_layers:
            raise UserError(f"--float-layers applies to xnnpack and onnx schemes and coreml w8a8, not {backend} {scheme}")
        calib, _, heldout = load_records(calibration, signature, need=calibrated)
        if min_psnr is not None and not heldout:
            raise UserError("--min-psnr needs held-out records; pass --calibration CALIB_DIR (edit-mobile calibrate)")
        return exported, {"scheme": scheme, "stage": "lowered", **_calibration_entry(calib)}
    from edit_mobile.export.quantization.layers import check_float_layers

    check_float_layers(exported.graph, float_layers)
    calib, records, heldout = load_records(calibration, signature, need=calibrated)
    if not records:  # int8-dynamic without a set: one traced-shape record suffices
        records = [tuple(exported.example_inputs[0])]
    if backend == "xnnpack":
        from edit_mobile.export.quantization.xnnpack import quantize_for_xnnpack

        program, record = quantize_for_xnnpack(exported, scheme, records, heldout, float_layers,
                                               min_psnr, denoiser, progress=progress, accept=accept)
    else:
        if min_psnr is not None or accept is not None:
            raise UserError("--min-psnr searches float layers for xnnpack int8 schemes only")
        from edit_mobile.export.quantization.coreml import quantize_for_coreml_w8a8

        program, record = quantize_for_coreml_w8a8(exported, records, heldout, float_layers, progress)
    return program, {**record, **_calibration_entry(calib)}


def quantize_lowered(program_path, *, backend: str, scheme: str, calibration, signature, record=None,
                     min_psnr: float | None = None, float_layers=(), accept=None) -> dict:
    check_scheme(backend, scheme)
    path = Path(program_path)
    if backend == "onnx":
        from edit_mobile.export.quantization.onnx import quantize_onnx

        calib, records, heldout = load_records(calibration, signature, need=scheme not in UNCALIBRATED_SCHEMES)
        result = quantize_onnx(path, path, scheme, signature.input_names, records, heldout,
                               float_layers=float_layers, min_psnr=min_psnr, accept=accept)
    elif backend == "coreml":
        import coremltools as ct

        from edit_mobile.export.quantization.coreml import compress_coreml

        calib = None
        mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
        compressed, result = compress_coreml(mlmodel, scheme)
        staging = path.with_name(path.stem + ".compressing" + path.suffix)  # coremltools wants .mlpackage
        compressed.save(str(staging))
        shutil.rmtree(path)
        staging.rename(path)
    else:
        raise UserError(f"{backend} {scheme} is applied before lowering: use quantize_program")
    return {**(record or {}), **result, **_calibration_entry(calib), "stage": "lowered"}


def _calibration_entry(calib) -> dict:
    return {"calibration": calib.summary()} if calib is not None else {}


def __getattr__(name: str):
    # Building blocks load on first use: importing this package stays light for the CLI.
    import importlib

    places = {
        "quantize_for_xnnpack": "xnnpack", "quantize_for_coreml_w8a8": "coreml",
        "compress_coreml": "coreml", "quantize_onnx": "onnx", "SensitivityAnalysis": "sensitivity",
        "psnr_db": "metrics",
    }
    if name in places:
        return getattr(importlib.import_module(f"{__name__}.{places[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
