"""ONNX quantization through onnxruntime.quantization, on the exported model.onnx.

int8-static   QDQ format (QuantizeLinear / DequantizeLinear around each quantized op), int8
              activations (MinMax ranges over the calibration set, read through a
              CalibrationDataReader) and per-channel int8 weights: what ORT's CPU and
              mobile (NNAPI, XNNPACK, QNN) execution providers fuse into int8 kernels.
int8-dynamic  int8 weights, activations quantized per call (MatMulInteger); no calibration.

int8-static quantizes GEMMs only (MatMul, Gemm, Conv: their inputs and outputs), the ops whose
dynamic counterparts (MatMulInteger, ConvInteger) int8-dynamic writes. onnxruntime's default for
int8-static also puts QDQ around element-wise ops (Add, Mul, Softmax, ...): normalisation's
arithmetic and, in cross-attention, `scores + caption mask`, whose -10000 for padded tokens then
shares one int8 range with the scores and flattens the attention. On the trained PixArt shapes
teacher that default measured 12.7 dB held-out (worst 7.4), GEMMs only 41.8 dB (worst 35.4).

As on XNNPACK, int8-static keeps GEMMs on per-sample vectors (timestep / pooled embeddings,
modulation) float; int8-dynamic quantizes them (each call's one row gets its own range), and
`float_nodes` names more nodes to exclude.

Weights are quantized to 7 bits (onnxruntime's `reduce_range`) for both schemes: on x86 CPUs
without VNNI (AVX2, AVX-512 before VNNI) onnxruntime multiplies u8 activations by s8 weights
with VPMADDUBSW, which sums each pair of products in int16 and saturates there (int8-static's
s8 activations are moved to u8 first). With |w| <= 64 no pair reaches 2^15. On the tiny EDiT,
int8-dynamic gives 49.0 dB (test vectors) with VNNI and 28.6 dB with that saturation emulated
(29.0 dB measured on an AVX2 EPYC); 7-bit weights give 47.3 dB on both. int8-static, held-out mean,
measured when it still quantized element-wise ops too: 21.6 dB with VNNI, 19.0 emulated without;
20.9 dB on both with 7-bit weights (GEMMs only and 7-bit weights: 30.4 dB). An artifact runs on
other machines than the one that exported it, so the choice is the same for all of them.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edit_mobile.errors import UserError
from edit_mobile.export.quantization.metrics import Inputs, psnr_db

SCHEMES = ("int8-static", "int8-dynamic")
GEMM_OPS = ("MatMul", "Gemm", "Conv")
REDUCE_RANGE = True  # 7-bit weights; see the module docstring
REDUCE_RANGE_REASON = ("7-bit weights: onnxruntime's u8 x s8 kernels on x86 CPUs without VNNI saturate int16 "
                       "pair sums of 8-bit weights (int8-dynamic on the tiny EDiT: ~29 dB there, 49 dB with VNNI, "
                       "47 dB on both with 7-bit weights)")


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


def vector_gemm_nodes(model, dynamic: bool = False) -> list[str]:
    """GEMM nodes kept float: reductions (a constant weight with one output column: the means of
    matmul norms), and unless activations are `dynamic`, GEMMs on per-sample vectors (no more
    rows than the batch: timestep and pooled embeddings, modulation), whose one static range would
    span rows of very different scales (the rule XNNPACK's schemes follow, layers.stays_float).
    Rows, not rank: ORT's pre-processing fuses a token MatMul + Add into a rank-2 Gemm on
    (B*N, C) rows, which is a token GEMM all the same."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {value.name: [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
              for value in list(inferred.graph.value_info) + list(inferred.graph.input)}
    batch = (shapes.get(inferred.graph.input[0].name) or [None])[0]
    columns = {init.name: init.dims[-1] for init in inferred.graph.initializer if init.dims}

    def per_sample(node) -> bool:
        shape = shapes.get(node.input[0])
        if not shape or not batch:
            return False
        transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
        rows = shape[-1] if transposed else math.prod(d or 0 for d in shape[:-1])
        return 0 < rows <= batch

    return [node.name for node in inferred.graph.node
            if node.op_type in GEMM_OPS and ((per_sample(node) and not dynamic)
                                              or (node.op_type == "MatMul" and columns.get(node.input[1]) == 1))]


def dynamic_exclusions(names: list[str]) -> list[str]:
    """Names for quantize_dynamic: it rewrites each Gemm as a MatMul named `<gemm>_MatMul`
    (plus an Add) before it looks at nodes_to_exclude, so a Gemm's own name matches nothing."""
    return [*names, *(f"{name}_MatMul" for name in names)]


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
        vector_nodes = vector_gemm_nodes(onnx.load(str(prepared)), dynamic=scheme == "int8-dynamic")
        exclude = list(dict.fromkeys([*vector_nodes, *float_nodes]))
        if scheme == "int8-static":
            quantize_static(
                str(prepared), str(out_path), RecordReader(calibration_inputs, input_names),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                op_types_to_quantize=list(GEMM_OPS),
                reduce_range=REDUCE_RANGE,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        else:
            quantize_dynamic(str(prepared), str(out_path), per_channel=True, reduce_range=REDUCE_RANGE,
                             weight_type=QuantType.QInt8, nodes_to_exclude=dynamic_exclusions(exclude))
        psnr = heldout_psnr(float_copy, out_path, input_names, heldout_inputs)
    return {
        "scheme": scheme,
        "float_layers": list(float_nodes),
        "always_float_layers": vector_nodes,
        "reduce_range": REDUCE_RANGE,
        "reduce_range_reason": REDUCE_RANGE_REASON,
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
