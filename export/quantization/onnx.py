"""ONNX quantization through onnxruntime.quantization, on the exported model.onnx.

int8-static   QDQ format (QuantizeLinear / DequantizeLinear around each quantized op), int8
              activations (MinMax ranges over the calibration set, read through a
              CalibrationDataReader) and per-channel int8 weights: what ORT's CPU and
              mobile (NNAPI, XNNPACK, QNN) execution providers fuse into int8 kernels.
int8-dynamic  int8 weights, activations quantized per call (MatMulInteger); no calibration.

As on XNNPACK, GEMMs on per-sample vectors (timestep / pooled embeddings, modulation) stay
float, and `float_nodes` names more nodes to exclude.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edit_mobile.errors import UserError
from edit_mobile.export.quantization.metrics import Inputs, psnr_db

SCHEMES = ("int8-static", "int8-dynamic")
GEMM_OPS = ("MatMul", "Gemm", "Conv")


class RecordReader:
    """onnxruntime CalibrationDataReader over calibration records (tuples of tensors)."""

    def __init__(self, records: Sequence[Inputs], input_names: Sequence[str]):
        self.records, self.input_names = records, list(input_names)
        self._iterator: Iterator | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iterator is None:
            self._iterator = iter(self.records)
        record = next(self._iterator, None)
        if record is None:
            return None
        return {name: value.numpy() for name, value in zip(self.input_names, record, strict=True)}

    def rewind(self) -> None:
        self._iterator = None


def vector_gemm_nodes(model) -> list[str]:
    """GEMM nodes kept float: on per-sample vectors (input rank <= 2, no token axis), or
    reductions (a constant weight with one output column: the means of matmul norms)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input):
        ranks[value.name] = len(value.type.tensor_type.shape.dim)
    columns = {init.name: init.dims[-1] for init in inferred.graph.initializer if init.dims}
    return [node.name for node in inferred.graph.node
            if node.op_type in GEMM_OPS and (ranks.get(node.input[0], 3) <= 2
                                              or (node.op_type == "MatMul" and columns.get(node.input[1]) == 1))]


def quantize_onnx(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    scheme: str,
    input_names: Sequence[str],
    calibration_inputs: Sequence[Inputs] = (),
    heldout_inputs: Sequence[Inputs] = (),
    float_nodes: Sequence[str] = (),
) -> dict:
    """Write the quantized model to `out_path` (may equal `onnx_path`); returns the manifest
    record, with the held-out PSNR of quantized against float outputs in onnxruntime."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in SCHEMES:
        raise UserError(f"unknown ONNX quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "int8-static" and not calibration_inputs:
        raise UserError("int8-static needs calibration records; pass --calibration CALIB_DIR")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    with tempfile.TemporaryDirectory() as scratch:
        float_copy = Path(scratch) / "float.onnx"
        prepared = Path(scratch) / "prepared.onnx"
        float_copy.write_bytes(onnx_path.read_bytes())  # out_path may overwrite onnx_path
        # Shape inference and graph optimisation first, as ORT recommends for quantization.
        quant_pre_process(str(float_copy), str(prepared), skip_symbolic_shape=True)
        vector_nodes = vector_gemm_nodes(onnx.load(str(prepared)))
        exclude = list(dict.fromkeys([*vector_nodes, *float_nodes]))
        if scheme == "int8-static":
            quantize_static(
                str(prepared), str(out_path), RecordReader(calibration_inputs, input_names),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        else:
            quantize_dynamic(str(prepared), str(out_path), per_channel=True,
                             weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
        psnr = heldout_psnr(float_copy, out_path, input_names, heldout_inputs)
    return {
        "scheme": scheme,
        "float_layers": list(float_nodes),
        "always_float_layers": vector_nodes,
        "heldout_psnr_db": psnr[0],
        "heldout_psnr_min_db": psnr[1],
        "heldout_records": len(heldout_inputs),
    }


def heldout_psnr(float_path: Path, quantized_path: Path, input_names: Sequence[str],
                 heldout_inputs: Sequence[Inputs]) -> tuple[float | None, float | None]:
    import onnxruntime as ort
    import torch

    if not heldout_inputs:
        return None, None
    sessions = [ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                for path in (float_path, quantized_path)]
    values = []
    for record in heldout_inputs:
        feed = {name: value.numpy() for name, value in zip(input_names, record, strict=True)}
        reference, output = (torch.from_numpy(s.run(None, feed)[0]) for s in sessions)
        values.append(psnr_db(reference, output))
    return sum(min(v, 200.0) for v in values) / len(values), min(values)
