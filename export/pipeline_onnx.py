"""The pipeline artifact for onnxruntime: `export MODEL --backend onnx --pipeline`.

One ONNX model a method (encode_prompt.onnx, denoise_HxW.onnx, decode_HxW.onnx), as an app
loads one InferenceSession a component. Their weights live once in weights.onnx.data: ONNX
external data, each tensor stored once by content and every model that uses it pointing at the
same offset (so the denoise methods of several resolutions share one copy, as the ExecuTorch
pipeline's methods share model.ptd).

With --quantize (onnx's int8-static or int8-dynamic) the denoise method's model is quantized by
onnxruntime.quantization once written, before its weights go into the shared file: its int8
weights are its own, the other methods keep the float ones.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.export.backends.base import named_stage
from edit_mobile.export.pipeline_target import PipelineTarget

WEIGHTS_FILE = "weights.onnx.data"
EXTERNAL_FROM_BYTES = 1024  # smaller tensors stay inline
# Large tensors start on a page (onnxruntime may map them), the rest on 16 bytes: page-aligning
# every small tensor would double a small model's file with padding.
PAGE, PAGE_FROM_BYTES, SMALL_ALIGNMENT = 4096, 1 << 20, 16


def method_file(name: str) -> str:
    return f"{name}.onnx"


def method_role(name: str, program_method: str) -> str:
    """The manifest role of a method's model: the first denoise method is the v1 `program`."""
    return "program" if name == program_method else f"method.{name}"


def write_onnx_methods(programs: dict, methods, staging: Path, opset: int | None) -> tuple[dict, dict]:
    """Each method's program as ONNX with shared external weights, checked and loaded by
    onnxruntime here. Returns (roles -> files, per-method record of the ops it uses)."""
    import onnx

    from edit_mobile.export.backends.onnx import check_opset, onnx_model

    opset = check_opset(opset)
    models = {m.name: onnx_model(programs[m.name], m.inputs, m.input_names, m.output_names, opset) for m in methods}
    for method in methods:
        if method.quantize_written is not None:
            models[method.name] = quantized_model(models[method.name], method.quantize_written)
    share_weights(models.values(), staging / WEIGHTS_FILE)
    program_method = next(name for name in models if name.startswith("denoise_"))
    files, records = {"weights": WEIGHTS_FILE}, {}
    for name, model in models.items():
        path = staging / method_file(name)
        onnx.save_model(model, str(path))
        with named_stage(f"onnx.checker on {path.name}"):
            onnx.checker.check_model(str(path), full_check=True)
        files[method_role(name, program_method)] = path.name
        records[name] = {"file": method_role(name, program_method), "opset": opset,
                         "nodes": len(model.graph.node)}
    return files, records


def quantized_model(model, quantize_file):
    """The model after `quantize_file(path)` rewrote it on disk (onnxruntime's quantizers work on
    files), its weights still inline for share_weights."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "denoise.onnx"
        onnx.save_model(model, str(path))
        quantize_file(path)
        return onnx.load(str(path))


def share_weights(models, path: Path) -> None:
    """Move every initializer of at least EXTERNAL_FROM_BYTES into one external data file,
    each distinct tensor (by type, shape and bytes) written once."""
    from onnx.external_data_helper import set_external_data

    stored: dict[tuple, tuple[int, int]] = {}
    with path.open("wb") as blob:
        for model in models:
            for tensor in model.graph.initializer:
                data = raw_bytes(tensor)
                if len(data) < EXTERNAL_FROM_BYTES:
                    continue
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).digest())
                if key not in stored:
                    alignment = PAGE if len(data) >= PAGE_FROM_BYTES else SMALL_ALIGNMENT
                    blob.write(bytes(-blob.tell() % alignment))
                    stored[key] = (blob.tell(), len(data))
                    blob.write(data)
                offset, length = stored[key]
                set_external_data(tensor, path.name, offset=offset, length=length)
                tensor.ClearField("raw_data")


def raw_bytes(tensor) -> bytes:
    """The tensor's data as raw little-endian bytes, moved into raw_data if it was typed."""
    from onnx import numpy_helper

    if not tensor.HasField("raw_data"):
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    return tensor.raw_data


def run_onnx_methods(staging: Path, files: dict, records: dict, methods) -> dict[str, list[torch.Tensor]]:
    """Every method run once in onnxruntime on its example inputs."""
    import onnxruntime as ort

    outputs = {}
    for method in methods:
        path = staging / files[records[method.name]["file"]]
        with named_stage(f"onnxruntime.InferenceSession of {path.name}"):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {name: tensor.numpy() for name, tensor in zip(method.input_names, method.inputs, strict=True)}
        outputs[method.name] = [torch.from_numpy(value) for value in session.run(list(method.output_names), feeds)]
    return outputs


class OnnxPipelineTarget(PipelineTarget):
    backend = "onnx"
    runtime = "onnxruntime"
    program_format = "onnx"
    decomposes_encoder_and_decoder = True
    takes_quantization = True  # the written denoise model, by onnxruntime.quantization

    def check(self, request) -> None:
        if request.text_quantize is not None:
            raise UserError("--text-encoder-quantize quantizes encode_prompt for xnnpack so far; drop it for onnx")

    def write(self, programs: dict, methods: list, request, staging: Path):
        return (None, *write_onnx_methods(programs, methods, staging, request.onnx_opset))

    def run(self, staging: Path, files: dict, records: dict, methods: list):
        return run_onnx_methods(staging, files, records, methods)


TARGET = OnnxPipelineTarget()
