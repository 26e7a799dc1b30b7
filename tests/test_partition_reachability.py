"""The partitioners' reachability in bits: the same answers as torch.fx's and ExecuTorch's
dependency viewers, in a small fraction of their memory, and the same partitions when lowering."""

from __future__ import annotations

import contextlib
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


def test_the_same_partitions_with_the_bits_as_with_the_sets():
    """The tiny EDiT with the xnnpack defaults (Winograd ConvFusion) in int8-dynamic, the export
    the quadratic sets hurt most, partitioned by XNNPACK inside to_edge_transform_and_lower
    in one lowering, with the bits and with the sets: the same partitions, node for node."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edit_mobile.export.artifact import resolve_passes
    from edit_mobile.export.passes import apply_passes
    from edit_mobile.export.quantization import quantize_program
    from edit_mobile.models import DenoiserWrapper, TransformerSignature, load_transformer

    class PartitionTwice(XnnpackPartitioner):
        def __init__(self):
            super().__init__()
            self.partitions: list[list[list[str]]] = []

        def partition(self, program):
            for compact in (True, False):  # the sets' result, partitioned last, is the one lowered
                with compact_partitioner_reachability() if compact else contextlib.nullcontext():
                    assert (group_partitioner._DependencyViewer is ReachabilityViewer) == compact
                    result = super().partition(program)
                groups: dict[str, list[str]] = {}
                for node in result.tagged_exported_program.graph.nodes:
                    if "delegation_tag" in node.meta:
                        groups.setdefault(node.meta["delegation_tag"], []).append(node.name)
                        if compact:
                            del node.meta["delegation_tag"]
                self.partitions.append(sorted(groups.values()))
            return result

    model = load_transformer("tiny-pixart-edit")
    signature = TransformerSignature.of(model)
    passes = resolve_passes(None, "xnnpack", model, scheme="int8-dynamic")
    assert "conv_fusion_winograd" in passes
    denoiser = DenoiserWrapper(apply_passes(model, passes)).eval()
    with torch.no_grad():
        exported = torch.export.export(denoiser, signature.example_inputs(0), strict=False)
    quantized, _ = quantize_program(exported, backend="xnnpack", scheme="int8-dynamic", calibration=None,
                                    signature=signature, progress=False)
    twice = PartitionTwice()
    to_edge_transform_and_lower(quantized, partitioner=[twice])
    with_bits, with_sets = twice.partitions
    assert len(with_bits) >= 2 and with_bits == with_sets, (len(with_bits), len(with_sets))  # measured: 5
    assert partitioner._DependencyViewer is not ReachabilityViewer  # put back after the block
    assert group_partitioner._DependencyViewer is not ReachabilityViewer
