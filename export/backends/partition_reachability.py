"""Partitioners' reachability in bits: what lets a real-size program partition in bounded memory.

Before merging two partitions, the partitioners every .pte backend uses (torch.fx's
CapabilityBasedPartitioner and ExecuTorch's GroupBasedPartitioner under XNNPACK's config
partitioner) ask which nodes lie downstream of a node, to refuse merges that would make a cycle.
Both answer from a `_DependencyViewer` built up front that keeps, for every node, a Python set of
all nodes downstream of it (ExecuTorch's keeps every node's upstream set too, which nothing
reads, and builds it while torch's is still alive). A transformer's graph is a chain, so those
sets hold about N^2 / 2 entries for N nodes, at ~56 bytes each (a set entry and its
table's slack; ExecuTorch's pair of dicts twice that). The 28-layer int8-dynamic PixArt-XL EDiT
(dynamic quantization adds its quantize chain to every Linear, Winograd ConvFusion sixteen
Linears a layer) peaked at 16.7 GB RSS, 6.7 GB without Winograd; with the bits, 9.6 GB
(docs/bench_runs/partition-memory).

`ReachabilityViewer` answers the same question from one integer bitmask a node, N^2 / 8 bytes in
all (for 20,000 nodes, 50 MB), and `compact_partitioner_reachability` has both partitioners
build it while lowering. Only the memory changes: the partitions are the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from torch.fx import GraphModule, Node


class DownstreamNodes:
    """A read-only set of nodes held as bits over the graph's node order: membership, iteration
    (in graph order, lazily, so a caller stopping at its first hit stops early) and length."""

    __slots__ = ("_bits", "_nodes", "_index")

    def __init__(self, bits: int, nodes: list[Node], index: dict[Node, int]):
        self._bits, self._nodes, self._index = bits, nodes, index

    def __contains__(self, node: object) -> bool:
        position = self._index.get(node)
        return position is not None and (self._bits >> position) & 1 == 1

    def __iter__(self) -> Iterator[Node]:
        if not self._bits:
            return
        packed = np.frombuffer(self._bits.to_bytes((self._bits.bit_length() + 7) // 8, "little"), np.uint8)
        for position in np.flatnonzero(np.unpackbits(packed, bitorder="little")):
            yield self._nodes[position]

    def __len__(self) -> int:
        return self._bits.bit_count()


class ReachabilityViewer:
    """`downstreams_of(node)`: every node reachable from `node` through its users, as the
    partitioners' `_DependencyViewer` gives it, one bitmask a node instead of one set."""

    def __init__(self, graph_module: GraphModule):
        self._nodes = list(graph_module.graph.nodes)
        self._index = {node: position for position, node in enumerate(self._nodes)}
        self._downstream: dict[Node, int] = {}
        for node in reversed(self._nodes):  # users come later in a graph's order
            bits = 0
            for user in node.users:
                bits |= (1 << self._index[user]) | self._downstream.get(user, 0)
            self._downstream[node] = bits

    def downstreams_of(self, node: Node) -> DownstreamNodes:
        return DownstreamNodes(self._downstream.get(node, 0), self._nodes, self._index)


def _viewer_modules() -> list:
    from executorch.exir.backend.canonical_partitioners import group_partitioner
    from torch.fx.passes.infra import partitioner

    return [partitioner, group_partitioner]


@contextlib.contextmanager
def compact_partitioner_reachability() -> Iterator[None]:
    """Inside the block, partitioners built by torch.fx and ExecuTorch hold their reachability
    in bits (the class each module names `_DependencyViewer` is swapped, then put back)."""
    modules = _viewer_modules()
    originals = [module._DependencyViewer for module in modules]
    for module in modules:
        module._DependencyViewer = ReachabilityViewer
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module._DependencyViewer = original
