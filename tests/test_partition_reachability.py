"""The partitioners' reachability in bits: the same answers as torch.fx's and ExecuTorch's
dependency viewers, in a small fraction of their memory, and the same partitions when lowering."""

from __future__ import annotations

import tracemalloc

import torch
from executorch.exir.backend.canonical_partitioners import group_partitioner
from torch.fx.passes.infra import partitioner

from edit_mobile.export.backends.partition_reachability import (
    ReachabilityViewer,
    compact_partitioner_reachability,
)


class Ladder(torch.nn.Module):
    """A chain of `rungs` blocks, each forking into two branches that join again, with a skip
    from the input to the end: nodes with several users, diamonds, and long reaches."""

    def __init__(self, rungs: int):
        super().__init__()
        self.rungs = rungs

    def forward(self, x):
        start = x
        for _ in range(self.rungs):
            left, right = torch.relu(x), torch.sigmoid(x)
            x = left * right + x
        return x + start


def traced(rungs: int) -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(Ladder(rungs))


def test_every_node_reaches_what_the_dependency_viewers_say():
    graph = traced(12)
    compact = ReachabilityViewer(graph)
    for reference in (partitioner._DependencyViewer(graph), group_partitioner._DependencyViewer(graph)):
        for node in graph.graph.nodes:
            expected = reference.downstreams_of(node)
            answered = compact.downstreams_of(node)
            assert set(answered) == expected and len(answered) == len(expected), node
            assert all(other in answered for other in expected)
            outside = [other for other in graph.graph.nodes if other not in expected]
            assert not any(other in answered for other in outside), node
    first = next(iter(graph.graph.nodes))
    assert len(compact.downstreams_of(first)) == len(graph.graph.nodes) - 1  # the input reaches all


def test_reachability_is_a_small_fraction_of_the_viewers_memory():
    graph = traced(400)  # 1603 nodes: ExecuTorch's two dicts of sets hold ~2.6M entries
    nodes = len(graph.graph.nodes)

    def allocated(build) -> int:
        tracemalloc.start()
        try:
            kept = build(graph)
            size = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del kept
        return size

    sets = allocated(group_partitioner._DependencyViewer)
    bits = allocated(ReachabilityViewer)
    assert bits < nodes * nodes / 8 + 1_000 * nodes, (bits, nodes)  # the bitmasks and the index
    assert bits * 20 < sets, (bits, sets)  # measured 0.6 MB against 153 MB


def test_lowering_inside_the_block_makes_the_same_partitions():
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    class Mixed(torch.nn.Module):  # XNNPACK takes the linears and adds, not the cumsums between
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(4))

        def forward(self, x):
            for layer in self.layers:
                x = torch.cumsum(layer(x) + x, dim=-1)
            return x

    example = (torch.randn(2, 16),)

    def delegate_calls(compact: bool) -> int:
        exported = torch.export.export(Mixed().eval(), example)
        block = compact_partitioner_reachability() if compact else torch.no_grad()
        with block:
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph_module.graph
        return sum(node.target is torch.ops.higher_order.executorch_call_delegate for node in graph.nodes)

    assert delegate_calls(True) == delegate_calls(False) == 4
    assert partitioner._DependencyViewer is not ReachabilityViewer  # put back after the block
    assert group_partitioner._DependencyViewer is not ReachabilityViewer
