"""Layers of a traced denoiser: which module each graph node belongs to, and which to keep float.

Layer names are module paths relative to the diffusers transformer (`transformer_blocks.3`,
`transformer_blocks.3.attn1.to_q`, `proj_out`), read from each node's `nn_module_stack`, so
they are the same whatever wraps the model (DenoiserWrapper, a precision cast) and survive
the rewrite passes, which replace modules in place.

Per-sample vectors stay float under static activation ranges: the timestep (and pooled-text)
embedding MLPs and the adaLN modulation linears act on (batch, features) rows, and one static
per-tensor int8 range over the six stacked modulation chunks, whose ranges differ by orders
of magnitude, wrecks every block they scale. Where activations are quantized per call (the
dynamic schemes) their outputs stay float and only the one input row is quantized, so their
weights go int8 as well, inside adaLN modules too: SD3.5-Medium's modulation linears hold
0.8 B of its 2.5 B parameters (3.1 GB in float32), which float made half of its int8 program.

The element-wise ops of softmax attention stay float too (the `q * scale` and the additive
caption mask of the rewrite passes' Softmax*AttnProcessor): their outputs feed the score bmm
and the softmax, which run float anyway, and the mask's -10000 for padded caption tokens
stretched one per-tensor int8 range over the scores to ~40 per step, flattening every
cross-attention to an average over the caption (the trained PixArt shapes teacher: 15.9 dB
held-out with every layer int8 at its worst record, 30.2 dB with this rule).

Normalisations stay float otherwise (any module whose class name has "Norm": LayerNorm,
GroupNorm, RMSNorm, adaLN, and the rewrite passes' MatmulRowNorm / PooledGroupNorm, which
compute means and variances as GEMVs): int8 statistics of x*x cost tens of dB at the output
for no speed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import Node

ROOT_SUFFIX = "Transformer2DModel"  # PixArt[EDiT]Transformer2DModel, SD3[MMEDiT]Transformer2DModel
QUANTIZABLE_OPS = {
    torch.ops.aten.linear.default,
    torch.ops.aten.conv2d.default,
    torch.ops.aten.conv1d.default,
    torch.ops.aten.convolution.default,
}
# Element-wise ops the XNNPACK quantizer also gives int8 inputs / outputs.
ELEMENTWISE_OPS = {torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor, torch.ops.aten.cat.default}
# Ops of the transformer's own forward, outside any submodule (PixArt's final modulation).
TOP_LEVEL = "<top-level>"


def _type_name(entry) -> str:
    kind = entry[1]
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


def module_paths(node: Node) -> list[str]:
    """The node's enclosing modules, outermost first, relative to the transformer root."""
    stack = list(node.meta.get("nn_module_stack", {}).values())
    for index, entry in enumerate(stack):
        if _type_name(entry).endswith(ROOT_SUFFIX):
            root = entry[0]
            prefix = root + "." if root else ""
            return [path.removeprefix(prefix) for path, _ in stack[index + 1 :]]
    return []


def in_layers(node: Node, layers) -> bool:
    """True when the node lies inside one of the named modules (TOP_LEVEL: in none)."""
    paths = module_paths(node)
    if not paths:
        return TOP_LEVEL in layers and bool(node.meta.get("nn_module_stack"))
    return any(path == layer or path.startswith(layer + ".") for path in paths for layer in layers)


def in_normalization(node: Node) -> bool:
    return any("Norm" in _type_name(entry).rsplit(".", 1)[-1]
               for entry in node.meta.get("nn_module_stack", {}).values())


def stays_float(node: Node, dynamic: bool = False) -> bool:
    """Normalisations, per-sample vectors and softmax attention's element-wise ops; with `dynamic`
    activations a GEMM of per-sample rows is quantized even inside an adaLN module (see module doc)."""
    if dynamic and node.target in QUANTIZABLE_OPS and is_per_sample_vector(node):
        return False
    return is_per_sample_vector(node) or in_normalization(node) or in_softmax_attention(node)


def in_softmax_attention(node: Node) -> bool:
    """An element-wise op of a softmax attention processor (see module doc)."""
    stack = list(node.meta.get("nn_module_stack", {}).values())
    return (node.target in ELEMENTWISE_OPS and bool(stack)
            and _type_name(stack[-1]).endswith("SoftmaxAttnProcessor"))


def is_per_sample_vector(node: Node) -> bool:
    """No token axis: (batch, features) or less. For a GEMM its input, else its output."""
    source = node.args[0] if node.target in QUANTIZABLE_OPS and node.args else node
    value = source.meta.get("val") if isinstance(source, Node) else None
    if not isinstance(value, torch.Tensor):
        return False
    return value.dim() < 2 or value.numel() == value.shape[0] * value.shape[-1]


def quantizable_nodes(graph: torch.fx.Graph) -> list[Node]:
    return [node for node in graph.nodes if node.op == "call_function" and node.target in QUANTIZABLE_OPS]


def always_float_layers(graph: torch.fx.Graph, dynamic: bool = False) -> list[str]:
    """Modules of the GEMMs the scheme keeps float whatever it is asked: norms, and per-sample
    vectors unless its activations are `dynamic`."""
    names = {module_paths(node)[-1] for node in quantizable_nodes(graph)
             if stays_float(node, dynamic) and module_paths(node)}
    return sorted(names)


def layer_units(graph: torch.fx.Graph, granularity: str = "block", dynamic: bool = False) -> list[str]:
    """Candidate layers for sensitivity and float fallback, in graph order.

    "block": each transformer block and each other top-level module (patch embedding,
    caption projection, output projection), and TOP_LEVEL for the element-wise ops of the
    transformer's own forward; "linear": each Linear / Conv module.
    Ops the scheme keeps float (normalisations; per-sample vectors unless `dynamic`) are left out.
    """
    units: list[str] = []
    for node in graph.nodes:
        if node.op != "call_function" or stays_float(node, dynamic):
            continue
        gemm = node.target in QUANTIZABLE_OPS
        if not gemm and (node.target not in ELEMENTWISE_OPS or granularity == "linear"):
            continue
        paths = module_paths(node)
        if not paths and not node.meta.get("nn_module_stack"):
            continue  # not traced from the model (inserted by a pass)
        unit = TOP_LEVEL if not paths else paths[-1] if granularity == "linear" else _top_level_module(paths)
        if unit not in units:
            units.append(unit)
    return units


def _top_level_module(paths: list[str]) -> str:
    """`transformer_blocks.3` for a block's ops (even if the ModuleList is on the stack)."""
    first = paths[0]
    if len(paths) > 1 and paths[1].startswith(first + "."):
        index = paths[1][len(first) + 1 :].split(".")[0]
        if index.isdigit():
            return f"{first}.{index}"
    return first


def check_float_layers(graph: torch.fx.Graph, float_layers) -> None:
    """Refuse a --float-layers name that matches no op of the program: a typo would otherwise
    be recorded in the manifest as if it had been kept float."""
    from edit_mobile.errors import UserError

    nodes = [node for node in graph.nodes if node.op == "call_function"]
    unknown = [layer for layer in float_layers if not any(in_layers(node, (layer,)) for node in nodes)]
    if unknown:
        known = layer_units(graph)
        raise UserError(f"--float-layers {unknown[0]!r} is no layer of this model; choose from "
                        f"{', '.join(known[:6])}{', ...' if len(known) > 6 else ''} (see edit-mobile sensitivity)")


def node_filter(float_layers, dynamic: bool = False) -> Callable[[Node], bool]:
    """The quantizer's filter: quantize a node unless it stays float or is in a float layer."""
    float_layers = tuple(float_layers)

    def quantize(node: Node) -> bool:
        return not stays_float(node, dynamic) and not in_layers(node, float_layers)

    return quantize
