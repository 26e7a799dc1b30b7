"""ONNX: opset >= 18, passes onnx.checker, runs in onnxruntime and matches PyTorch; ORT format."""

from __future__ import annotations

import pytest
from export_artifacts import exported, load_test_vectors, manifest, max_abs_diff

TINY_PRESETS = ["tiny-pixart", "tiny-pixart-edit", "tiny-sd3", "tiny-sd3-edit"]
TOLERANCE = 1e-4


def is_activation_matmul(model, name: str) -> bool:
    """The node `name` is a MatMul of two activations (no initializer input)."""
    initializers = {init.name for init in model.graph.initializer}
    node = next(node for node in model.graph.node if node.name == name)
    return node.op_type == "MatMul" and not set(node.input) & initializers


def run_onnxruntime(path, names, inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)})


@pytest.mark.parametrize("model", TINY_PRESETS)
def test_onnx_matches_pytorch_in_onnxruntime(model):
    import onnx

    art_dir = exported(model, "onnx")
    data = manifest(art_dir)
    path = art_dir / data["files"]["program"]["path"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    opset = {entry.domain: entry.version for entry in proto.opset_import}[""]
    assert opset >= 18 and data["program"]["opset"] == opset
    assert [i.name for i in proto.graph.input] == [spec["name"] for spec in data["inputs"]]
    inputs, reference = load_test_vectors(art_dir)
    (output,) = run_onnxruntime(path, [spec["name"] for spec in data["inputs"]], inputs)
    assert max_abs_diff(output, reference) <= TOLERANCE


@pytest.mark.parametrize("model", ["tiny-pixart-edit", "tiny-sd3-edit"])
def test_mobile_partitioners_take_the_whole_graph(model):
    """onnxruntime's own usability checker, as recorded in the manifest: Core ML (MLProgram)
    takes every node in one partition, NNAPI all but the timestep embedding's Cos (2 partitions).
    Before the ONNX rewrites (rank-6 Einsum unpatchify, LayerNormalization, GroupNorm's
    InstanceNormalization, rsqrt's Reciprocal) the same check gave 9 NNAPI partitions."""
    import onnx

    art_dir = exported(model, "onnx")
    partitions = manifest(art_dir)["program"]["mobile_partitions"]
    mlprogram, nnapi = partitions["coreml_mlprogram"], partitions["nnapi"]
    assert mlprogram["partitions"] == 1 and mlprogram["supported_nodes"] == mlprogram["nodes"], mlprogram
    assert nnapi["partitions"] <= 2 and nnapi["unsupported_ops"] == ["ai.onnx:Cos"], nnapi
    ops = {node.op_type for node in onnx.load(str(art_dir / "model.onnx")).graph.node}
    assert not ops & {"Einsum", "LayerNormalization", "InstanceNormalization", "Reciprocal"}


def test_ort_format_is_written_and_runs():
    art_dir = exported("tiny-pixart-edit", "onnx", backend_options={"ort_format": True})
    data = manifest(art_dir)
    assert data["files"]["ort_program"]["path"] == "model.ort"
    # The minimal-build operator list: every op type of the model, under its domain and opset.
    config = (art_dir / data["files"]["ort_operators"]["path"]).read_text().splitlines()
    assert config[1] == "# - model.ort"
    default_domain = {op for line in config if line.startswith("ai.onnx;") for op in line.split(";")[2].split(",")}
    assert {"MatMul", "Conv", "Softmax"} <= default_domain
    inputs, reference = load_test_vectors(art_dir)
    (output,) = run_onnxruntime(art_dir / "model.ort", [spec["name"] for spec in data["inputs"]], inputs)
    assert max_abs_diff(output, reference) <= TOLERANCE


def integer_weight_peak(path) -> int:
    """Largest |int8 weight| of the model's integer GEMMs and convolutions (dynamic or QDQ)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer
               if init.data_type == onnx.TensorProto.INT8 and len(init.dims) >= 2}
    used = [node.input[1] for node in model.graph.node if node.op_type in ("MatMulInteger", "ConvInteger")]
    used += [node.input[0] for node in model.graph.node if node.op_type == "DequantizeLinear"]
    return max(int(np.abs(weights[name].astype(np.int32)).max()) for name in used if name in weights)


# 7-bit weights: onnxruntime's u8 x s8 kernels on x86 without VNNI sum product pairs in int16,
# 2 * 255 * 64 < 2^15 (see export/quantization/onnx.py). Checked on the model, so it holds here
# whatever this CPU has.
SATURATION_FREE_WEIGHT = 64


def test_int8_dynamic_quantization_is_applied_to_the_written_model():
    """The quantization stage plugs into export: the hashed model.onnx is the quantized one,
    with weights that no x86 int8 kernel saturates, and per-sample GEMMs int8 too (one row a call
    has its own range)."""
    import numpy as np

    art_dir = exported("tiny-pixart-edit", "onnx", quantize="int8-dynamic")
    data = manifest(art_dir)
    record = data["quantization"]
    assert record["scheme"] == "int8-dynamic" and record["reduce_range"] is True
    ops = data["program"]["ops"]
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    # tiny-pixart-edit has 26 linears: the 23 on tokens, and timestep linear_1 / linear_2 and the
    # adaLN modulation on per-sample vectors (float under int8-static), all int8; attention's
    # MatMuls of two activations alone stay float, as on XNNPACK.
    import onnx

    model = onnx.load(str(art_dir / "model.onnx"))
    assert record["always_float_layers"] and ops["MatMulInteger"] == 26
    assert all(is_activation_matmul(model, name) for name in record["always_float_layers"])
    assert integer_weight_peak(art_dir / "model.onnx") <= SATURATION_FREE_WEIGHT
    inputs, reference = load_test_vectors(art_dir)
    (output,) = run_onnxruntime(art_dir / "model.onnx", [spec["name"] for spec in data["inputs"]], inputs)
    reference = reference.numpy()
    psnr = 20 * np.log10(np.abs(reference).max() / np.sqrt(((output - reference) ** 2).mean()))
    assert psnr > 35.0, f"int8-dynamic output PSNR {psnr:.1f} dB"
