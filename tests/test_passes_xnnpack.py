"""With the xnnpack default passes every compute op of attention and MLP runs in XNNPACK,
and the program, run in the ExecuTorch runtime, matches PyTorch."""

from __future__ import annotations

import pytest
import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime

from edit_mobile.export.coverage import delegation_coverage
from edit_mobile.export.passes import apply_passes, default_passes
from edit_mobile.models import DenoiserWrapper, TransformerSignature, load_transformer


def lower(model, inputs):
    exported = torch.export.export(DenoiserWrapper(model).eval(), inputs)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    return edge, delegation_coverage(edge.exported_program().graph_module)


def compute_outside(coverage) -> dict[str, dict[str, int]]:
    """Non-delegated arithmetic inside attention, feed-forward or norm modules."""
    return {
        path: ops
        for path, ops in coverage.non_delegated_compute.items()
        if ".attn" in path or ".ff" in path or "norm" in path
    }


# Ops XNNPACK has no partitioner config for; the passes rewrite them away.
UNDELEGATED = ("group_norm", "scaled_dot_product_attention", "layer_norm")


def aten_graph(model, inputs) -> torch.fx.Graph:
    return torch.export.export(DenoiserWrapper(model).eval(), inputs).graph


def undelegated_ops(graph: torch.fx.Graph) -> list[str]:
    """Ops XNNPACK would leave to the portable kernels: the list above, and means that are
    not XNNPACK's only form (4-D over H, W, keepdim)."""
    found = []
    for node in graph.nodes:
        name = str(node.target)
        if node.op != "call_function":
            continue
        if any(op in name for op in UNDELEGATED):
            found.append(name)
        elif node.target == torch.ops.aten.mean.dim:
            rank = node.args[0].meta["val"].dim()
            dims = sorted(d % rank for d in node.args[1])
            if rank != 4 or dims != [2, 3]:
                found.append(f"{name} over {dims} of rank {rank}")
    return found


@pytest.mark.parametrize("preset", ["tiny-pixart-edit", "tiny-sd3-edit", "tiny-pixart", "tiny-sd3"])
def test_default_passes_remove_ops_xnnpack_lacks(preset):
    model = load_transformer(preset)
    inputs = TransformerSignature.of(model, 128, 128).example_inputs(seed=1)
    assert undelegated_ops(aten_graph(model, inputs)), "nothing for the passes to do?"
    rewritten = apply_passes(model, default_passes("xnnpack"))
    assert undelegated_ops(aten_graph(rewritten, inputs)) == []


def test_edit_attention_and_mlp_run_in_xnnpack(tmp_path):
    """The full lowering (slow: one preset) and a run in the ExecuTorch runtime."""
    model = load_transformer("tiny-pixart-edit")
    inputs = TransformerSignature.of(model, 128, 128).example_inputs(seed=1)
    edge, coverage = lower(apply_passes(model, default_passes("xnnpack")), inputs)
    assert compute_outside(coverage) == {}, coverage.non_delegated_compute
    assert coverage.flops_share_delegated > 0.999

    path = tmp_path / "model.pte"
    path.write_bytes(edge.to_executorch().buffer)
    got = Runtime.get().load_program(path).load_method("forward").execute(list(inputs))[0]
    with torch.no_grad():
        expected = DenoiserWrapper(model)(*inputs)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_ones_column_survives_fp16_xnnpack_after_pooled_group_norm():
    """The normaliser's ones column, downstream of PooledGroupNorm in one fp16 partition:
    a pad with value 1.0 came out as 0 there on x86 (XNNPACK's fp16 -> fp32 fallback)."""
    from edit_mobile.export.passes.attention_kernels import append_ones
    from edit_mobile.export.passes.group_norm_pooled import PooledGroupNorm

    class NormThenOnes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = PooledGroupNorm(torch.nn.GroupNorm(4, 16))

        def forward(self, image):  # (1, 16, 4, 4) -> (1, 16 tokens, 17)
            return append_ones(self.norm(image).flatten(2).transpose(1, 2), dim=-1)

    module = NormThenOnes().half().eval()
    image = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0)).half()
    exported = torch.export.export(module, (image,))
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    assert delegation_coverage(edge.exported_program().graph_module).non_delegated_compute == {}
    program = Runtime.get().load_program(edge.to_executorch().buffer)
    (got,) = program.load_method("forward").execute([image])
    assert torch.equal(got[..., -1], torch.ones(1, 16, dtype=torch.float16))
    torch.testing.assert_close(got, module(image), atol=2e-3, rtol=0)
