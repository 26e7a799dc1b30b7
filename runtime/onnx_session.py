"""ONNX models (.onnx, or ORT format .ort) in onnxruntime's CPU execution provider."""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import FileEntry, Manifest
from edit_mobile.runtime.session import Session
from edit_mobile.safe_read import one_line

PROVIDERS = ["CPUExecutionProvider"]


def session_options(threads: int | None = None, profile_prefix: str | None = None, optimized_path: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path:
        options.optimized_model_filepath = optimized_path  # the graph onnxruntime really runs
    return options


class OnnxSession(Session):
    runtime = "onnxruntime"

    def __init__(self, manifest: Manifest, role: str = "program", threads: int | None = None,
                 profile_prefix: str | None = None, optimized_path: str | None = None):
        super().__init__(manifest)
        import onnxruntime as ort

        self.entry = manifest.file(role)
        if self.entry.path.suffix.lower() == ".onnx":
            check_external_data(self.entry)
        started = time.perf_counter()
        try:
            self.ort_session = ort.InferenceSession(
                str(self.entry.path), session_options(threads, profile_prefix, optimized_path), providers=PROVIDERS
            )
        except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph / ... types
            raise UserError(f"onnxruntime could not load {self.entry.relative}: {one_line(err)}; re-export the artifact") from err
        self.load_seconds = time.perf_counter() - started
        self._check_signature()

    def _check_signature(self) -> None:
        declared = [i.name for i in self.ort_session.get_inputs()]
        if sorted(declared) != sorted(self.input_names):
            raise UserError(
                f"{self.entry.relative} takes inputs {declared} but the manifest lists {self.input_names}; re-export the artifact"
            )
        self._output_names = [spec.name for spec in self.outputs]
        produced = {o.name for o in self.ort_session.get_outputs()}
        if not set(self._output_names) <= produced:
            raise UserError(
                f"{self.entry.relative} produces {sorted(produced)} but the manifest lists {self._output_names}; re-export the artifact"
            )

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> list:
        feeds = {name: _numpy(tensor) for name, tensor in zip(self.input_names, inputs, strict=True)}
        try:
            return self.ort_session.run(self._output_names, feeds)
        except Exception as err:
            raise UserError(f"onnxruntime failed running {self.entry.relative}: {one_line(err)}") from err

    @classmethod
    def operator_profile(cls, manifest: Manifest, inputs, threads: int | None, runs: int, tick=lambda: None):
        from edit_mobile.runtime.profile_onnx import onnx_operator_profile

        return onnx_operator_profile(manifest, inputs, threads, runs, tick)

    def layer_report(self, inputs, reference: Session, threshold_db: float):
        from edit_mobile.runtime.numerics_onnx import onnx_layer_report

        return onnx_layer_report(self.manifest, inputs, reference, threshold_db)

    def end_profiling(self) -> Path:
        """Stop onnxruntime's profiler; returns its JSON trace (needs profile_prefix at load)."""
        return Path(self.ort_session.end_profiling())


def check_external_data(entry: FileEntry) -> None:
    """Refuse a model that is not ONNX, or whose tensors name external data outside the
    artifact folder: onnxruntime would read whatever file a location names."""
    import onnx

    try:
        model = onnx.load(str(entry.path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, onnx's own errors
        raise UserError(f"{entry.relative} is not a valid ONNX model ({one_line(err)}); re-export the artifact") from err
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((item.value for item in tensor.external_data if item.key == "location"), "")
        pure = PurePosixPath(location.replace("\\", "/"))
        target = (entry.path.parent / pure).resolve()
        if not location or pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(entry.root):
            raise UserError(
                f"{entry.relative}: tensor {tensor.name!r} keeps its data in {location!r}, outside the artifact "
                "folder; re-export the artifact with its external data beside the model"
            )


def _tensors(graph):
    """Every tensor of a graph and its subgraphs (If / Loop bodies), without recursion."""
    graphs = [graph]
    while graphs:
        current = graphs.pop()
        yield from current.initializer
        for sparse in current.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in current.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        raise UserError("onnxruntime takes no bfloat16 inputs from numpy; export the model with float32 inputs")
    return tensor.numpy()


