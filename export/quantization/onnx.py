"""ONNX quantization through onnxruntime.quantization, on the exported model.onnx.

int8-static   QDQ format (QuantizeLinear / DequantizeLinear around each quantized op), int8
              activations (MinMax ranges over the calibration set, read through a
              CalibrationDataReader) and per-channel int8 weights: what ORT's CPU and
              mobile (NNAPI, XNNPACK, QNN) execution providers fuse into int8 kernels.
int8-dynamic  int8 weights, activations quantized per call (MatMulInteger); no calibration.

int8-static quantizes weight GEMMs only (MatMul, Gemm, Conv with a weight: their inputs and
outputs), the ops whose dynamic counterparts (MatMulInteger, ConvInteger) int8-dynamic writes;
attention's MatMuls of two activations stay float, as on XNNPACK (activation_gemm_nodes). onnxruntime's default for
int8-static also puts QDQ around element-wise ops (Add, Mul, Softmax, ...): normalisation's
arithmetic and, in cross-attention, `scores + caption mask`, whose -10000 for padded tokens then
shares one int8 range with the scores and flattens the attention. On the trained PixArt shapes
teacher that default measured 12.7 dB held-out (worst 7.4), GEMMs only 41.8 dB (worst 35.4).

As on XNNPACK, int8-static keeps GEMMs on per-sample vectors (timestep / pooled embeddings,
modulation) float; int8-dynamic quantizes them (each call's one row gets its own range).
`float_layers` keeps more GEMMs float by module (`transformer_blocks.3`; the exporter's module
of each node, recorded under MODULE_KEY), and `min_psnr` (export --min-psnr) keeps the most
sensitive blocks float until the worst held-out record reaches it, as for XNNPACK; here every
configuration of the search is quantized and measured for real (ranges calibrated once).

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

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from edit_mobile.errors import UserError
from edit_mobile.export.backends.onnx_graph import MODULE_KEY
from edit_mobile.export.quantization.metrics import Inputs, mean_psnr, reference_outputs

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


def activation_gemm_nodes(model) -> list[str]:
    """MatMuls of two activations (attention's scores and weighted values): kept float, as
    XNNPACK's schemes quantize Linear and Conv layers only. Quantized, their outputs put QDQ
    around the softmax, which onnxruntime then fuses into QLinearSoftmax, the slowest op of the
    int8 PixArt shapes teacher (2.1 of its 16.3 ms)."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {output for node in model.graph.node if node.op_type == "Constant" for output in node.output}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and not any(name in constants for name in node.input)]


def dynamic_exclusions(names: list[str]) -> list[str]:
    """Names for quantize_dynamic: it rewrites each Gemm as a MatMul named `<gemm>_MatMul`
    (plus an Add) before it looks at nodes_to_exclude, so a Gemm's own name matches nothing."""
    return [*names, *(f"{name}_MatMul" for name in names)]


def gemm_layers(exported_model, prepared_model) -> dict[str, str]:
    """Each GEMM node of the pre-processed model -> the module it was traced in (MODULE_KEY of
    the exported model). ORT's pre-processing drops the metadata of nodes it fuses and names the
    result `<first node>/<fusion>` (a token MatMul + Add -> `node_MatMul_3/MatMulAddFusion`)."""
    labels = {node.name: prop.value for node in exported_model.graph.node
              for prop in node.metadata_props if prop.key == MODULE_KEY}
    found = {node.name: labels.get(node.name) or labels.get(node.name.split("/")[0])
             for node in prepared_model.graph.node if node.op_type in GEMM_OPS}
    return {name: path for name, path in found.items() if path}


def layer_of(module_path: str) -> str:
    """The block a module belongs to, as XNNPACK's "block" layers: `transformer_blocks.3` for
    `transformer_blocks.3.attn.to_q`, `pos_embed` for `pos_embed.proj`."""
    parts = module_path.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def nodes_in(layers: dict[str, str], float_layers: Sequence[str]) -> list[str]:
    """GEMM nodes inside the named modules (a name covers its submodules)."""
    return [node for node, path in layers.items()
            if any(path == layer or path.startswith(layer + ".") for layer in float_layers)]


def check_float_layers(layers: dict[str, str], float_layers: Sequence[str]) -> None:
    unknown = [layer for layer in float_layers if not nodes_in(layers, [layer])]
    if unknown:
        known = list(dict.fromkeys(layer_of(path) for path in layers.values()))
        raise UserError(f"--float-layers {unknown[0]!r} is no quantized layer of this ONNX model; choose from "
                        f"{', '.join(known[:6])}{', ...' if len(known) > 6 else ''}")


class HeldOut:
    """The float model's outputs on held-out records, against which quantized models are judged
    (metrics.mean_psnr, as XNNPACK's programs are)."""

    def __init__(self, float_path: Path, input_names: Sequence[str], records: Sequence[Inputs]):
        self.input_names, self.records = list(input_names), list(records)
        self.references = reference_outputs(OnnxDenoiser(float_path, input_names), self.records) if records else []

    def psnr(self, quantized_path: Path) -> tuple[float | None, float | None]:
        """(mean over records, worst record) of the quantized model's output PSNR, in dB."""
        if not self.records:
            return None, None
        return mean_psnr(OnnxDenoiser(quantized_path, self.input_names), self.references, self.records)


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class Quantizer:
    """The scheme applied to the pre-processed model with some GEMM nodes left float. Static
    ranges are calibrated on the first call and cached (`calibration_cache_path`), so a layer
    search quantizes many times from one calibration."""

    def __init__(self, prepared: Path, scheme: str, input_names: Sequence[str], calibration_inputs: Sequence[Inputs],
                 scratch: Path):
        self.prepared, self.scheme, self.scratch = prepared, scheme, scratch
        self.reader = RecordReader(calibration_inputs, input_names)

    def __call__(self, exclude: Sequence[str], out_path: Path) -> None:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        if self.scheme == "int8-static":
            quantize_static(
                str(self.prepared), str(out_path), self.reader,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(exclude),
                op_types_to_quantize=list(GEMM_OPS),
                reduce_range=REDUCE_RANGE,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                calibration_cache_path=self.scratch / "ranges.json",
            )
        else:
            quantize_dynamic(str(self.prepared), str(out_path), per_channel=True, reduce_range=REDUCE_RANGE,
                             weight_type=QuantType.QInt8, nodes_to_exclude=dynamic_exclusions(list(exclude)))


def quantize_onnx(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    scheme: str,
    input_names: Sequence[str],
    calibration_inputs: Sequence[Inputs] = (),
    heldout_inputs: Sequence[Inputs] = (),
    float_layers: Sequence[str] = (),
    min_psnr: float | None = None,
    progress: bool = True,
    accept: Callable[[OnnxDenoiser], bool] | None = None,
) -> dict:
    """Write the quantized model to `out_path` (may equal `onnx_path`); returns the manifest
    record, with the held-out PSNR of quantized against float outputs in onnxruntime.
    `float_layers`: modules whose GEMMs stay float (`transformer_blocks.3`, `proj_out`);
    `min_psnr`: the most sensitive blocks stay float too until the worst held-out record
    reaches it (UserError if only keeping every block float would). `accept(denoiser)`: a
    further judgement of the quantized model (whole sampler runs): with min_psnr the next most
    sensitive blocks go float until it holds too; without, it is only measured."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in SCHEMES:
        raise UserError(f"unknown ONNX quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "int8-static" and not calibration_inputs:
        raise UserError("int8-static needs calibration records; pass --calibration CALIB_DIR")
    if min_psnr is not None and not heldout_inputs:
        raise UserError("--min-psnr needs held-out records; re-run edit-mobile calibrate")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    with tempfile.TemporaryDirectory() as scratch:
        float_copy = Path(scratch) / "float.onnx"
        prepared = Path(scratch) / "prepared.onnx"
        float_copy.write_bytes(onnx_path.read_bytes())  # out_path may overwrite onnx_path
        # Shape inference and graph optimisation first, as ORT recommends for quantization.
        quant_pre_process(str(float_copy), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        always_float = [*vector_gemm_nodes(prepared_model, dynamic=scheme == "int8-dynamic"),
                        *activation_gemm_nodes(prepared_model)]
        layers = {node: path for node, path in gemm_layers(onnx.load(str(float_copy)), prepared_model).items()
                  if node not in always_float}
        check_float_layers(layers, float_layers)
        quantize = Quantizer(prepared, scheme, input_names, calibration_inputs, Path(scratch))
        heldout = HeldOut(float_copy, input_names, heldout_inputs)
        float_layers, record, search = list(float_layers), {"scheme": scheme}, None
        if min_psnr is not None:
            search = LayerSearch(quantize, heldout, layers, always_float, Path(scratch), progress)
            chosen, found = search.float_layers_for(min_psnr, float_layers, scheme)
            float_layers = list(dict.fromkeys([*float_layers, *chosen]))
            record.update(found)
        while True:
            quantize([*always_float, *nodes_in(layers, float_layers)], out_path)
            if accept is None or accept(OnnxDenoiser(out_path, input_names)) or search is None:
                break
            float_layers.append(search.next_float_block(float_layers, scheme))
        psnr = heldout.psnr(out_path)
    return {
        **record,
        "float_layers": float_layers,
        "always_float_layers": always_float,
        "reduce_range": REDUCE_RANGE,
        "reduce_range_reason": REDUCE_RANGE_REASON,
        "heldout_psnr_db": psnr[0],
        "heldout_psnr_min_db": psnr[1],
        "heldout_records": len(heldout_inputs),
    }


class LayerSearch:
    """Blocks' sensitivity (one block quantized at a time) and the fewest most sensitive blocks to
    keep float for a PSNR target. Every configuration is quantized and measured for real: from
    cached ranges that costs a quantizer pass and a session, not a calibration."""

    def __init__(self, quantize: Quantizer, heldout: HeldOut, layers: dict[str, str], always_float: Sequence[str],
                 scratch: Path, progress: bool = True):
        self.quantize, self.heldout, self.layers = quantize, heldout, layers
        self.always_float, self.scratch, self.progress = list(always_float), scratch, progress
        self.blocks = list(dict.fromkeys(layer_of(path) for path in layers.values()))
        self.order: list[str] = []  # the blocks, most sensitive first, once float_layers_for ran

    def psnr_with_float(self, float_layers: Sequence[str]) -> tuple[float, float]:
        candidate = self.scratch / "candidate.onnx"
        self.quantize([*self.always_float, *nodes_in(self.layers, float_layers)], candidate)
        return self.heldout.psnr(candidate)

    def report(self, scheme: str):
        from tqdm import tqdm

        from edit_mobile.export.quantization.sensitivity import LayerCost, SensitivityReport

        costs = []
        for block in tqdm(self.blocks, desc="layer sensitivity", unit="layer", disable=not self.progress):
            mean, low = self.psnr_with_float([other for other in self.blocks if other != block])
            costs.append(LayerCost(block, mean, low))
        costs.sort(key=lambda cost: (cost.min_psnr_db, cost.psnr_db))  # worst record first: what targets judge
        mean, low = self.psnr_with_float([])
        return SensitivityReport(scheme, "block", mean, low, costs, self.always_float)

    def float_layers_for(self, min_psnr: float, given: Sequence[str], scheme: str) -> tuple[list[str], dict]:
        """(blocks to keep float beside `given`, record entries); UserError if unreachable."""
        from edit_mobile.export.quantization.sensitivity import choose_float_layers, json_safe

        report = self.report(scheme)
        self.order = [cost.layer for cost in report.layers]
        order = [layer for layer in self.order if layer not in given]
        choice = choose_float_layers(order, lambda chosen: self.psnr_with_float([*given, *chosen])[1], min_psnr)
        if not choice.target_met:
            raise UserError(
                f"{scheme} cannot reach {min_psnr:g} dB PSNR on the worst held-out record unless every layer stays "
                f"float (all quantized: {report.all_quantized_min_psnr_db:.1f} dB worst); lower --min-psnr")
        return choice.float_layers, {"min_psnr_db": min_psnr, "layers_total": choice.layers_total,
                                     "all_quantized_psnr_db": report.all_quantized_psnr_db,
                                     "sensitivity": json_safe([dataclasses.asdict(cost) for cost in report.layers])}

    def next_float_block(self, float_layers: Sequence[str], scheme: str) -> str:
        """The most sensitive block still int8, for a judgement the PSNR target did not foresee."""
        remaining = [block for block in self.order if block not in float_layers]
        if len(remaining) <= 1:
            raise UserError(f"{scheme} cannot reach its image floor unless every layer stays float; "
                            "lower --min-psnr or export without --quantize")
        return remaining[0]


class OnnxDenoiser:
    """A written denoiser in an onnxruntime session, called as the PyTorch one is (tensors in
    the signature's order, the noise prediction out): what whole-sampler checks run."""

    def __init__(self, path: Path, input_names: Sequence[str]):
        self.session, self.input_names = _session(path), list(input_names)

    def __call__(self, *inputs):
        import torch

        feed = {name: value.contiguous().numpy() for name, value in zip(self.input_names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])
