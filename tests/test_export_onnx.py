"""ONNX: opset >= 18, passes onnx.checker, runs in onnxruntime and matches PyTorch; ORT format."""

from __future__ import annotations

import pytest
from export_artifacts import exported, load_test_vectors, manifest, max_abs_diff

TINY_PRESETS = ["tiny-pixart", "tiny-pixart-edit", "tiny-sd3", "tiny-sd3-edit"]
TOLERANCE = 1e-4


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


def test_ort_format_is_written_and_runs():
    art_dir = exported("tiny-pixart-edit", "onnx", backend_options={"ort_format": True})
    data = manifest(art_dir)
    assert data["files"]["ort_program"]["path"] == "model.ort"
    inputs, reference = load_test_vectors(art_dir)
    (output,) = run_onnxruntime(art_dir / "model.ort", [spec["name"] for spec in data["inputs"]], inputs)
    assert max_abs_diff(output, reference) <= TOLERANCE


def test_int8_dynamic_quantization_is_applied_to_the_written_model():
    """The quantization stage plugs into export: the hashed model.onnx is the quantized one."""
    import numpy as np

    art_dir = exported("tiny-pixart-edit", "onnx", quantize="int8-dynamic")
    data = manifest(art_dir)
    assert data["quantization"]["scheme"] == "int8-dynamic"
    assert "MatMulInteger" in data["program"]["ops"] and "DynamicQuantizeLinear" in data["program"]["ops"]
    inputs, reference = load_test_vectors(art_dir)
    (output,) = run_onnxruntime(art_dir / "model.onnx", [spec["name"] for spec in data["inputs"]], inputs)
    reference = reference.numpy()
    psnr = 20 * np.log10(np.abs(reference).max() / np.sqrt(((output - reference) ** 2).mean()))
    assert psnr > 35.0, f"int8-dynamic output PSNR {psnr:.1f} dB"
