"""The operators XNNPACK runs inside each delegate call of a program, with their debug handles,
read from the program's own delegate payloads.

XNNPACK's profiler names the operators it ran ("Fully Connected (NC, F32) GEMM #3") but logs
no debug handle, and its preprocess writes an empty delegate map into the ETRecord. Each node
of the serialized XNNPACK graph does carry the debug handle of the edge node it came from,
and XNNPACK creates its runtime operators in the order of those nodes, skipping the ones it
fuses (a clamp into the GEMM before it) or elides. So the k-th reported operator is the next
serialized node of the same kind: the alignment `attribute_delegate_ops` does. The
serialized order is the partition's, not the edge graph's (the partitioner re-sorts the
subgraph breadth-first), which is why matching against edge nodes by handle order put the
time of a block's MLP on its output projection.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

XNNPACK_BACKEND = "XnnpackBackend"
DEFAULT_DEBUG_HANDLE = 65535  # what xnnpack_preprocess writes for nodes without one

# Runtime operator names whose serialized node kind is named differently (after normalising).
KIND_ALIASES = {
    "convolution": ("conv2d", "depthwiseconv2d"),
    "fullyconnected": ("conv2d",),  # XNNPACK runs a 1x1 convolution as a GEMM
    "deconvolution": ("conv2dtranspose",),
    "copy": ("reshape", "copy", "expanddims", "concatenate"),
    "divide": ("div",),
    "sine": ("sin",),
    "cosine": ("cos",),
    "square": ("multiply",),  # XNNPACK turns x * x into a square
    "globalaveragepooling": ("globalavgpooling2d", "meannd"),
    "mean": ("meannd", "globalavgpooling2d"),
    "meansquared": ("meannd", "globalavgpooling2d"),  # a square fused into the mean after it
}
# How far the matching may stray from the diagonal beyond the lists' length difference: XNNPACK
# fuses, elides or adds a few operators at a time (clamps, reshapes, copies), never hundreds.
BAND = 64


@dataclass(frozen=True)
class DelegateNode:
    kind: str  # the serialized node's type, e.g. "XNNFullyConnected"
    debug_handle: int


def _normalise(name: str) -> str:
    """'XNNStaticTranspose' -> 'transpose', 'Fully Connected (NC, F32) GEMM #2' -> 'fullyconnected'."""
    name = name.split("(")[0].split("#")[0]
    name = re.sub(r"[^a-z0-9]", "", name.lower())
    name = name.removeprefix("xnn")
    return re.sub(r"^static", "", name)


def same_operator(runtime_name: str, kind: str) -> bool:
    """Whether XNNPACK's runtime operator `runtime_name` can come from a node of type `kind`."""
    runtime, node = _normalise(runtime_name), re.sub(r"\d+$", "", _normalise(kind))
    return runtime == node or node in KIND_ALIASES.get(runtime, ())


def attribute_delegate_ops(runtime_names: list[str], nodes: list[DelegateNode]) -> list[int | None]:
    """The debug handle of each runtime operator, from the longest order-keeping matching of
    operators to nodes of the same kind; an operator no node explains (XNNPACK's own copies)
    takes the handle of the matched operator before it."""
    matched = _align(runtime_names, nodes)
    handles: list[int | None] = []
    last = None
    for index in range(len(runtime_names)):
        if index in matched:
            last = nodes[matched[index]].debug_handle
        handles.append(last)
    return handles


def _align(runtime_names: list[str], nodes: list[DelegateNode]) -> dict[int, int]:
    """Longest common subsequence under `same_operator`, within a band around the diagonal
    (the two lists differ only by fused, elided or added operators): operator -> node index."""
    n, m = len(runtime_names), len(nodes)
    band = abs(n - m) + BAND
    score: dict[tuple[int, int], int] = {}

    def at(i: int, j: int) -> int:
        return score.get((i, j), 0) if i >= 0 and j >= 0 else 0

    for i in range(n):
        centre = i * m // max(n, 1)
        for j in range(max(0, centre - band), min(m, centre + band + 1)):
            best = max(at(i - 1, j), at(i, j - 1))
            if same_operator(runtime_names[i], nodes[j].kind):
                best = max(best, at(i - 1, j - 1) + 1)
            score[(i, j)] = best
    pairs: dict[int, int] = {}
    i, j = n - 1, m - 1
    while i >= 0 and j >= 0:
        here = at(i, j)
        if here == 0:
            break
        if same_operator(runtime_names[i], nodes[j].kind) and at(i - 1, j - 1) + 1 == here and (i, j) in score:
            pairs[i] = j
            i, j = i - 1, j - 1
        elif at(i - 1, j) == here:
            i -= 1
        else:
            j -= 1
    return pairs


def xnnpack_delegate_nodes(program_path: Path, method: str = "forward") -> dict[int, list[DelegateNode]]:
    """Instruction index of each XNNPACK delegate call in `method` -> its serialized nodes, in order."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(Path(program_path).read_bytes()).program
    plan = next(p for p in program.execution_plan if p.name == method)
    nodes_of: dict[int, list[DelegateNode]] = {}
    for index, instruction in enumerate(plan.chains[0].instructions):
        delegate_index = getattr(instruction.instr_args, "delegate_index", None)
        if delegate_index is None:
            continue
        delegate = plan.delegates[delegate_index]
        if delegate.id != XNNPACK_BACKEND:
            continue
        payload = program.backend_delegate_data[delegate.processed.index].data
        nodes_of[index] = _xnnpack_nodes(payload)
    return nodes_of


def _xnnpack_nodes(payload: bytes) -> list[DelegateNode]:
    """Decode one XNNPACK payload (header + flatbuffer, schema.fbs) with flatc."""
    from importlib import resources

    from executorch.backends.xnnpack import serialization
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    header = XNNHeader.from_bytes(payload[: XNNHeader.EXPECTED_LENGTH])
    flatbuffer = payload[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    with tempfile.TemporaryDirectory(prefix="edit-mobile-xnn-") as scratch:
        schema = Path(scratch) / "schema.fbs"
        schema.write_bytes(resources.files(serialization).joinpath("schema.fbs").read_bytes())
        binary = Path(scratch) / "graph.bin"
        binary.write_bytes(flatbuffer)
        _flatc_decompile(scratch, str(schema), str(binary), ["--raw-binary"])
        text = (Path(scratch) / "graph.json").read_text()
    # flatc writes clamp bounds as bare inf / nan, which JSON spells Infinity / NaN
    text = re.sub(r":\s*(-?)inf\b", r": \1Infinity", re.sub(r":\s*-?nan\b", ": NaN", text))
    graph = json.loads(text)
    nodes = [DelegateNode(node["xnode_union_type"], int(node.get("debug_handle", 0))) for node in graph.get("xnodes", [])]
    return _inherit_default_handles(nodes)


def _inherit_default_handles(nodes: list[DelegateNode]) -> list[DelegateNode]:
    """Nodes XNNPACK's own passes added (layout transposes) carry the default handle: give
    each the handle of the next node with a real one, the op it prepares the layout for."""
    resolved, following = [], None
    for node in reversed(nodes):
        if node.debug_handle in (DEFAULT_DEBUG_HANDLE, 0):
            node = DelegateNode(node.kind, following if following is not None else node.debug_handle)
        else:
            following = node.debug_handle
        resolved.append(node)
    return resolved[::-1]
