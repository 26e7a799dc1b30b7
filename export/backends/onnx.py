"""ONNX (onnxruntime, incl. ORT Mobile): model.onnx by the dynamo exporter, checked with
onnx.checker and loaded by onnxruntime here; optionally model.ort, the ORT Mobile format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob, named_stage
from edit_mobile.export.backends.onnx_graph import (
    MODULE_KEY,
    drop_noop_squeezes,
    mobile_partitions,
    record_module_paths,
    rsqrt_as_pow,
    unpatchify_rank4,
)

PROGRAM_FILE = "model.onnx"
ORT_FILE = "model.ort"
OPERATORS_FILE = "required_operators.config"  # build_android.py / build.py --include_ops_by_config
DEFAULT_OPSET = 18
MIN_OPSET = 18


def tidy_graph(model) -> None:
    """Drop the exporter's per-node metadata but our module path (its stack traces name files
    on the exporting machine) and value_info entries of initializers: they repeat the weight's
    shape and go stale when a tool rewrites the weight (onnxruntime's quantizer transposes Gemm
    weights, then fails its own shape inference on them)."""
    for node in model.graph.node:
        kept = [(prop.key, prop.value) for prop in node.metadata_props if prop.key == MODULE_KEY]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)
        node.doc_string = ""
    del model.metadata_props[:]
    initializers = {initializer.name for initializer in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in initializers]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def write_ort_format(onnx_path: Path, ort_path: Path) -> None:
    """Save the model as ORT format (ORT Mobile), after the basic, portable graph optimisations,
    as onnxruntime.tools.convert_onnx_models_to_ort does."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def write_required_operators(ort_path: Path, config_path: Path) -> None:
    """The operators the ORT-format model needs, as ORT's reduced (minimal) mobile build reads
    them (`--include_ops_by_config`); the comment names the model file, not this machine's path."""
    from onnxruntime.tools.ort_format_model.utils import create_config_from_models

    create_config_from_models([ort_path], config_path, enable_type_reduction=False)
    lines = config_path.read_text().splitlines(keepends=True)
    config_path.write_text("".join(f"# - {ort_path.name}\n" if line.startswith("# - ") else line for line in lines))


def check_opset(requested) -> int:
    opset = int(requested or DEFAULT_OPSET)
    if opset < MIN_OPSET:
        raise UserError(f"ONNX opset {opset} is too old; use {MIN_OPSET} or newer")
    return opset


def onnx_model(exported: torch.export.ExportedProgram, example_inputs, input_names, output_names, opset: int):
    """The ONNX ModelProto of a torch.export program, after the ONNX graph rewrites, weights
    inline and tidied (no paths of this machine)."""
    drop_noop_squeezes(exported)
    unpatchify_rank4(exported)
    rsqrt_as_pow(exported)
    with named_stage("torch.onnx.export"):
        onnx_program = torch.onnx.export(exported, tuple(example_inputs), dynamo=True, opset_version=opset,
                                         input_names=list(input_names), output_names=list(output_names),
                                         external_data=False, verbose=False)
    model = onnx_program.model_proto
    record_module_paths(model)
    tidy_graph(model)
    return model


class OnnxBackend(Backend):
    name = "onnx"
    description = "ONNX (opset >= 18) by torch.onnx's dynamo exporter; runs in onnxruntime"

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        import onnx

        opset = check_opset(job.options.get("onnx_opset"))
        model = onnx_model(job.exported, job.example_inputs, job.input_names, job.output_names, opset)
        with named_stage("onnx.checker"):
            onnx.checker.check_model(model, full_check=True)
        onnx.save_model(model, str(out_dir / PROGRAM_FILE))
        result = BackendResult(
            files={"program": PROGRAM_FILE},
            delegation=None,
            program={"format": "onnx", "opset": opset},
        )
        return self.program_rewritten(result, out_dir, ort_format=bool(job.options.get("ort_format")))

    def program_rewritten(self, result: BackendResult, out_dir: Path, ort_format: bool | None = None) -> BackendResult:
        """Inspect model.onnx and load it in onnxruntime (fails here, not on a phone, if ORT
        cannot build its graph); (re)write model.ort from it when asked or already there."""
        import onnx
        import onnxruntime as ort

        path = out_dir / result.files["program"]
        model = onnx.load(str(path))
        with named_stage("onnxruntime.InferenceSession"):
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        if ort_format or (ort_format is None and "ort_program" in result.files):
            with named_stage("the ORT format"):
                write_ort_format(path, out_dir / ORT_FILE)
                write_required_operators(out_dir / ORT_FILE, out_dir / OPERATORS_FILE)
            result.files["ort_program"] = ORT_FILE
            result.files["ort_operators"] = OPERATORS_FILE
        ops = Counter(node.op_type for node in model.graph.node)
        with named_stage("onnxruntime's mobile usability checker"):
            partitions = mobile_partitions(path)
        result.program = {**result.program, "ops": dict(sorted(ops.items())), "mobile_partitions": partitions}
        return result


BACKEND = OnnxBackend()
