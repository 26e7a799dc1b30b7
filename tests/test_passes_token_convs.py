"""EDiT's convolutions as token-layout GEMMs and multiply-adds (`conv_fusion_gemm`,
`compressor_tokens`): equal to the convolutions in float32, with trained-like (non-zero)
ConvFusion weights, every ConvFusion option, both families; no convolution left for XNNPACK."""

from __future__ import annotations

import pytest
import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime
from test_passes_xnnpack import compute_outside

from edit_mobile.export.coverage import delegation_coverage
from edit_mobile.export.passes import apply_passes, default_passes
from edit_mobile.export.passes.token_convs import GemmConvFusion, TokenSpatialCompressor
from edit_mobile.models import (
    DenoiserWrapper,
    TransformerSignature,
    load_transformer,
    to_edit,
    to_mm_edit,
)

TOKEN_CONVS = ["conv_fusion_gemm", "compressor_tokens"]


def with_signal(student):
    """A converted student's ConvFusion starts at zero (queries = teacher's), which would hide
    any error in its 3x3 path: give every EDiT parameter a random value, as training would."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in student.named_parameters():
            if ".conv_fusion." in name or "_compressor." in name:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator) + (1.0 if name.endswith("norm.weight") else 0.0))
    return student.eval()


def outputs(model, inputs):
    with torch.no_grad():
        return DenoiserWrapper(model)(*inputs)


OPTIONS = [
    {},
    {"fusion_groups": 4, "fusion_order": "act_norm"},
    {"fusion_reduction": 2, "fusion_norm_groups": 4},
]


def student_inputs_reference(family: str, options: dict):
    """A tiny converted student with trained-like EDiT weights, inputs at 8 x 12 tokens (batch 2)
    and its unrewritten outputs."""
    convert = to_edit if family == "pixart" else to_mm_edit
    student = with_signal(convert(load_transformer(f"tiny-{family}"), options))
    inputs = TransformerSignature.of(student, 128, 192, batch=2).example_inputs(seed=3)
    return student, inputs, outputs(student, inputs)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("family", ["pixart", "sd3"])
def test_token_convs_equal_the_convolutions(family, options):
    student, inputs, reference = student_inputs_reference(family, options)
    for names in (TOKEN_CONVS[:1], TOKEN_CONVS[1:], ["linear_attention_bmm", *TOKEN_CONVS, "group_norm_pooled"]):
        rewritten = apply_passes(student, names)
        got = outputs(rewritten, inputs)
        torch.testing.assert_close(got, reference, atol=2e-5, rtol=1e-4)
    kinds = {type(m) for m in apply_passes(student, TOKEN_CONVS).modules()}
    assert {GemmConvFusion, TokenSpatialCompressor} <= kinds


def lowered_and_run(student, passes: list[str], tmp_path) -> list[str]:
    """Export `student` (128 px) after `passes`, lower it to XNNPACK and check that no compute and
    no copy is left outside the delegate and that the ExecuTorch run equals eager; return the
    exported graph's convolutions."""
    inputs = TransformerSignature.of(student, 128, 128).example_inputs(seed=1)
    exported = torch.export.export(DenoiserWrapper(apply_passes(student, passes)).eval(), inputs)
    convolutions = [n.name for n in exported.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph_module
    assert compute_outside(delegation_coverage(graph)) == {}
    # Every copy the token forms add stays in the delegate too (an indexed tap weight once left
    # 36 select_copy ops on the portable kernels, and 150 MiB of planned buffers at 512 px).
    assert not [n.name for n in graph.graph.nodes if n.op == "call_function" and "select_copy" in str(n.target)]
    path = tmp_path / "model.pte"
    path.write_bytes(edge.to_executorch().buffer)
    got = Runtime.get().load_program(path).load_method("forward").execute(list(inputs))[0]
    torch.testing.assert_close(got, outputs(student, inputs), atol=1e-4, rtol=1e-4)
    return convolutions


def test_token_convs_leave_no_convolution_and_run_in_xnnpack(tmp_path):
    student = with_signal(to_edit(load_transformer("tiny-pixart"), {"fusion_groups": 2}))
    convolutions = lowered_and_run(student, [*default_passes("xnnpack"), *TOKEN_CONVS], tmp_path)
    assert len(convolutions) == 1, convolutions  # the patch embedding's only
