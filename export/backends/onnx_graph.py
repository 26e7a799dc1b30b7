"""Rewrites of the traced graph for ONNX, and what ORT Mobile's partitioner makes of the result.

The module-level passes (export/passes/) cannot reach into a diffusers forward; these two work
on the exported ATen graph just before `torch.onnx.export`:
- `drop_noop_squeezes`: the exporter maps a squeeze of a non-1 dim to an ONNX Squeeze that
  onnxruntime rejects at load time (PixArt's `hidden_states.squeeze(1)` on (B, N, C)).
- `unpatchify_rank4`: PixArt's and SD3's unpatchify is a rank-6 reshape and an einsum
  "nhwpqc->nchpwq"; Core ML takes tensors up to rank 5 and has no Einsum, NNAPI has no Einsum,
  so one op split both mobile partitioners' graphs. The same permutation is written as three
  rank-3/4 reshape + transpose steps.

- `rsqrt_as_pow`: torch's rsqrt becomes ONNX Reciprocal(Sqrt), and NNAPI has no Reciprocal; the
  rewrite passes' norms use rsqrt (the form XNNPACK wants), so ONNX gets Pow(x, -0.5) instead.

`record_module_paths` keeps, of the exporter's per-node metadata, the module each node comes from
(relative to the diffusers transformer, MODULE_KEY): onnxruntime quantization names its float
layers by it, as XNNPACK's do (export/quantization/onnx.py).

`mobile_partitions` runs onnxruntime's own usability checker (the code behind
`python -m onnxruntime.tools.check_onnx_model_mobile_usability`) and returns its partition
counts per mobile execution provider, for the manifest.
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import torch

_SQUEEZE_OPS = (torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims)
_RESHAPE_OPS = (torch.ops.aten.reshape.default, torch.ops.aten.view.default)
UNPATCHIFY_EQUATION = "nhwpqc->nchpwq"
MODULE_KEY = "edit_mobile.module"  # node metadata: its module path, relative to the transformer
_SCOPES_KEY, _CLASSES_KEY = "pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy"


def drop_noop_squeezes(exported: torch.export.ExportedProgram) -> int:
    """Remove squeezes of dims that are not 1 (a no-op in PyTorch). Returns how many went."""
    graph = exported.graph_module.graph
    dropped = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SQUEEZE_OPS:
            continue
        shape = node.args[0].meta["val"].shape
        dims = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
        if all(shape[d] != 1 for d in dims):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            dropped += 1
    exported.graph_module.recompile()
    return dropped


def unpatchify_rank4(exported: torch.export.ExportedProgram) -> int:
    """Replace every reshape(B, h, w, p, q, C) -> einsum("nhwpqc->nchpwq") -> reshape by rank
    <= 4 steps with the same element order. Returns how many were rewritten."""
    graph = exported.graph_module.graph
    rewritten = 0
    for einsum in list(graph.nodes):
        if einsum.op != "call_function" or einsum.target != torch.ops.aten.einsum.default:
            continue
        if einsum.args[0] != UNPATCHIFY_EQUATION or len(einsum.args[1]) != 1:
            continue
        patches = einsum.args[1][0]
        if not (patches.op == "call_function" and patches.target in _RESHAPE_OPS):
            continue
        if not all(user.target in _RESHAPE_OPS for user in einsum.users):
            continue  # only a following reshape is sure to read nothing but the element order
        batch, h, w, p, q, channels = patches.meta["val"].shape
        with graph.inserting_before(einsum):
            x = _view(graph, patches.args[0], [batch * h * w, p * q, channels])
            x = _swap12(graph, x)  # order h, w, C, p, q
            x = _view(graph, x, [batch * h, w, channels * p, q])
            x = _swap12(graph, x)  # order h, C, p, w, q
            x = _view(graph, x, [batch, h, channels, p * w * q])
            x = _swap12(graph, x)  # order C, h, p, w, q: the einsum's
        einsum.replace_all_uses_with(x)
        graph.erase_node(einsum)
        if not patches.users:
            graph.erase_node(patches)
        rewritten += 1
    graph.lint()
    exported.graph_module.recompile()
    return rewritten


def rsqrt_as_pow(exported: torch.export.ExportedProgram) -> int:
    """Replace every rsqrt(x) by pow(x, -0.5). Returns how many were rewritten."""
    graph = exported.graph_module.graph
    rewritten = 0
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.rsqrt.default:
            with graph.inserting_before(node):
                power = graph.call_function(torch.ops.aten.pow.Tensor_Scalar, (node.args[0], -0.5))
            power.meta = dict(node.meta)
            node.replace_all_uses_with(power)
            graph.erase_node(node)
            rewritten += 1
    exported.graph_module.recompile()
    return rewritten


def _view(graph, node, shape: list[int]):
    return graph.call_function(torch.ops.aten.reshape.default, (node, shape))


def _swap12(graph, node):
    return graph.call_function(torch.ops.aten.transpose.int, (node, 1, 2))


# The checker's supported-op tables, by the name the manifest records.
MOBILE_PROVIDERS = {
    "nnapi": None,
    "coreml_mlprogram": "coreml_supported_mlprogram_ops.md",
    "coreml_neuralnetwork": "coreml_supported_neuralnetwork_ops.md",
}


def record_module_paths(model) -> int:
    """Label each node of the dynamo exporter's ModelProto with the innermost module it was
    traced in, relative to the diffusers transformer (`transformer_blocks.3.attn.to_q`; the
    exporter's name scopes start at whatever wraps it), under MODULE_KEY. Returns how many."""
    from edit_mobile.export.quantization.layers import ROOT_SUFFIX

    labelled = 0
    for node in model.graph.node:
        props = {prop.key: prop.value for prop in node.metadata_props}
        if _SCOPES_KEY not in props or _CLASSES_KEY not in props:
            continue
        # Both lists: the enclosing modules outermost first, then the op itself.
        scopes, classes = ast.literal_eval(props[_SCOPES_KEY])[:-1], ast.literal_eval(props[_CLASSES_KEY])[:-1]
        roots = [i for i, kind in enumerate(classes) if kind.endswith(ROOT_SUFFIX)]
        if not roots or roots[-1] + 1 >= len(scopes):
            continue  # outside the transformer, or in its own forward
        root = scopes[roots[-1]]
        path = scopes[-1].removeprefix(root + ".") if root else scopes[-1]
        node.metadata_props.add(key=MODULE_KEY, value=path)
        labelled += 1
    return labelled


def mobile_partitions(onnx_path: Path) -> dict[str, dict]:
    """Per mobile EP: partitions, nodes taken / total, and the ops it cannot take, as
    onnxruntime's usability checker counts them (after ORT's basic optimisations, fixed shapes)."""
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as scratch:
        optimized = Path(scratch) / "model.onnx"
        optimize_model(onnx_path, optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        counts = {}
        for name, table in MOBILE_PROVIDERS.items():
            if table is None:
                info = checker.check_nnapi_partitions(model, require_fixed_input_sizes=True)
            else:
                info = checker.check_coreml_partitions(model, True, table)
            counts[name] = {
                "partitions": info.num_partitions,
                "supported_nodes": info.num_supported_nodes,
                "nodes": info.num_nodes,
                "unsupported_ops": sorted(info.unsupported_ops | info.ops_with_unsupported_rank),
                "suitable": info.suitability().name.lower(),
            }
    return counts
