"""Where an ONNX model's numbers leave the reference: the output of every weighted layer.

An exported ONNX graph names its initializers after the PyTorch parameters they came from
(or, when the exporter folded a transpose into a weight, holds the same values under another
name). Each layer with weights is anchored by the last node consuming one of its weights: for
a Linear that is the bias Add, for a Conv the Conv. Those values are added as graph outputs,
onnxruntime runs the model once (graph optimisations off, so every value is the graph's own),
and each is compared with the layer's output in the reference, captured by a forward hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.layers import LayerReport, LayerRow, short_module
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.metrics import closeness
from edit_mobile.runtime.weights import lookup_reference

MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for a model serialised in memory


@dataclass
class Anchor:
    module: str
    node_index: int
    node_name: str
    op_type: str
    value: str


def _weight_owners(model, reference_state: dict[str, torch.Tensor]) -> tuple[dict[str, str], list[dict]]:
    """ONNX initializer / Constant output name -> reference parameter name, and named weights
    whose values differ from the reference's."""
    from onnx import numpy_helper

    # Values identify a weight only when they are distinctive: not constant, and no other
    # reference weight holds the same bytes (None marks a collision).
    by_bytes: dict[bytes, str | None] = {}
    for name, tensor in reference_state.items():
        if not tensor.is_floating_point() or tensor.numel() < 2 or bool((tensor == tensor.flatten()[0]).all()):
            continue
        array = tensor.detach().float().numpy()
        variants = [array, array.astype(np.float16)]
        if array.ndim == 2:
            variants += [np.ascontiguousarray(array.T), np.ascontiguousarray(array.T).astype(np.float16)]
        for key in {variant.tobytes() for variant in variants}:
            by_bytes[key] = name if key not in by_bytes else None

    owners, mismatches = {}, []
    constants = [(init.name, init) for init in model.graph.initializer]
    constants += [(node.output[0], attr.t) for node in model.graph.node if node.op_type == "Constant"
                  for attr in node.attribute if attr.name == "value"]
    for name, proto in constants:
        array = numpy_helper.to_array(proto)
        reference = lookup_reference(name, reference_state)
        if reference is not None and reference.numel() == array.size:
            owners[name] = _reference_name(name, reference_state)
            gap = closeness(reference.reshape(array.shape).double(), torch.from_numpy(array.astype(np.float64)))
            if gap.psnr_db < 100.0:
                mismatches.append({"weight": name, "psnr_db": round(gap.psnr_db, 2), "max_abs": gap.max_abs})
        elif array.dtype in (np.float32, np.float16) and by_bytes.get(array.tobytes()):
            owners[name] = by_bytes[array.tobytes()]
    return owners, mismatches


def _reference_name(name: str, reference_state) -> str:
    parts = name.split(".")
    return next(".".join(parts[i:]) for i in range(len(parts)) if ".".join(parts[i:]) in reference_state)


def _anchors(model, owners: dict[str, str]) -> list[Anchor]:
    """For each weighted module, the last node (graph order) that consumes one of its weights.

    A module whose weights are used more than once anchors nothing: the exporter stores equal
    tensors once (two layers' identically initialised kernels share one name), and a layer
    applied twice (MM-EDiT's image keys, for the linear and the softmax parts) has no single
    output to compare."""
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    reused = {owners[name].rsplit(".", 1)[0] for name in owners if consumers.get(name, 0) > 1}
    last: dict[str, Anchor] = {}
    for index, node in enumerate(model.graph.node):
        for module in {owners[i].rsplit(".", 1)[0] for i in node.input if i in owners} - reused:
            last[module] = Anchor(module, index, node.name, node.op_type, node.output[0])
    return sorted(last.values(), key=lambda a: (a.node_index, -a.module.count(".")))


def _reference_outputs(reference, modules: list[str], inputs) -> dict[str, torch.Tensor]:
    """Each module's output in one reference run; modules called more than once are dropped."""
    wrapper = reference.wrapper
    named = dict(wrapper.named_modules())
    captured: dict[str, list] = {m: [] for m in modules if m in named}
    hooks = [named[m].register_forward_hook(lambda _m, _i, out, m=m: captured[m].append(out)) for m in captured]
    try:
        with torch.no_grad():
            wrapper(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return {m: outs[0] for m, outs in captured.items() if len(outs) == 1 and isinstance(outs[0], torch.Tensor)}


def onnx_layer_report(manifest: Manifest, inputs, reference, threshold_db: float) -> LayerReport:
    import onnx
    import onnxruntime as ort

    from edit_mobile.runtime.onnx_session import PROVIDERS

    entry = manifest.file("program")
    if entry.path.suffix.lower() != ".onnx":
        raise UserError(f"per-layer debugging reads the ONNX graph; {entry.relative} is not a .onnx file")
    model = onnx.load(str(entry.path))
    state = reference.wrapper.state_dict()
    owners, mismatches = _weight_owners(model, state)
    anchors = _anchors(model, owners)
    expected = _reference_outputs(reference, [a.module for a in anchors], inputs)
    anchors = [a for a in anchors if a.module in expected]
    if not anchors:
        raise UserError(f"{entry.relative}: no layer of the graph could be tied to a reference weight; per-layer needs named or unchanged weights")

    existing = {o.name for o in model.graph.output}
    for anchor in anchors:
        if anchor.value not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(anchor.value))
            existing.add(anchor.value)
    data = model.SerializeToString() if model.ByteSize() < MAX_PROTO_BYTES else None
    if data is None:
        raise UserError(f"{entry.relative} is over 2 GB; per-layer ONNX debugging needs a smaller model or resolution")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(data, options, providers=PROVIDERS)
    names = [a.value for a in anchors]
    feeds = {spec.name: tensor.numpy() for spec, tensor in zip(manifest.inputs, inputs, strict=True)}
    values = dict(zip(names, session.run(names, feeds), strict=True))

    rows = []
    for anchor in anchors:
        ref = expected[anchor.module]
        value = torch.from_numpy(np.asarray(values[anchor.value]))
        if tuple(value.shape) != tuple(ref.shape):
            continue  # the anchor is not the module's output (e.g. a weight reused inside it)
        rows.append(LayerRow(
            order=len(rows), where=f"node {anchor.node_name}", module=short_module(anchor.module),
            op=anchor.op_type, shape=tuple(value.shape), closeness=closeness(ref, value),
            suspects=[short_module(anchor.module)],
        ))
    notes = [f"{len(rows)} weighted layers compared, anchored on {len(owners)} ONNX weights tied to the reference"]
    return LayerReport("onnxruntime", threshold_db, rows, notes, mismatches)
