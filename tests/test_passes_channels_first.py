"""The neural-engine rewrite: (B, C, 1, S) throughout, Linear as 1x1 conv, no token-sized
transposes, rank <= 4, no einsum; at other resolutions than the preset's too."""

from __future__ import annotations

import torch

from edit_mobile.export.passes import apply_passes, default_passes
from edit_mobile.models import DenoiserWrapper, TransformerSignature, load_transformer

MATMUL_LIKE = ("linear", "addmm", "aten.mm", "matmul", "einsum", "scaled_dot_product")
TRANSPOSES = {"aten.transpose.int", "aten.permute.default", "aten.t.default"}


def data_dependent(graph: torch.fx.Graph, input_names: set[str]) -> set[torch.fx.Node]:
    """Nodes computed from the program's inputs (the rest is constant and folds at lowering)."""
    found: set[torch.fx.Node] = set()
    for node in graph.nodes:  # topological order
        if (node.op == "placeholder" and node.name in input_names) or any(a in found for a in node.all_input_nodes):
            found.add(node)
    return found


def test_edit_image_path_is_channels_first():
    model = load_transformer("tiny-pixart-edit")
    rewritten = apply_passes(model, default_passes("coreml"))
    inputs = TransformerSignature.of(model, 128, 256).example_inputs(seed=2)
    with torch.no_grad():
        torch.testing.assert_close(
            DenoiserWrapper(rewritten)(*inputs), DenoiserWrapper(model)(*inputs), atol=2e-5, rtol=1e-4
        )
    exported = torch.export.export(DenoiserWrapper(rewritten).eval(), inputs)
    graph = exported.graph
    dynamic = data_dependent(graph, set(exported.graph_signature.user_inputs))

    width = model.config.num_attention_heads * model.config.attention_head_dim
    image_tokens = (128 // 16) * (256 // 16)
    token_sized = image_tokens * width
    values = [n for n in graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    assert max(n.meta["val"].dim() for n in values) <= 4
    for node in graph.nodes:
        name = str(node.target)
        if node.op != "call_function":
            continue
        source = node.args[0].meta["val"] if node.args and hasattr(node.args[0], "meta") else None
        if any(op in name for op in MATMUL_LIKE):
            # only adaLN's timestep MLP, on (B, features), is left as a matmul
            assert "adaln_single" in str(node.meta.get("nn_module_stack")), f"{name} on {tuple(source.shape)}"
            assert source.dim() == 2
        # Image-token-sized, that is: the prompt is transposed once at the input and as softmax
        # keys, both by design, and 300 PixArt-Sigma prompt tokens outnumber these image tokens.
        if name in TRANSPOSES and node in dynamic:  # constants fold away
            assert not (image_tokens in source.shape and source.numel() >= token_sized), (
                f"token-sized {name} of {tuple(source.shape)}")
    convs = [n for n in graph.nodes if n.target == torch.ops.aten.conv2d.default]
    one_by_one = [n for n in convs if tuple(n.args[1].meta["val"].shape[-2:]) == (1, 1)]
    assert len(one_by_one) >= 6 * model.config.num_layers  # q, k, v, out, ff in, ff out per block


def test_sd3_is_channels_first_with_rank4_at_most():
    model = load_transformer("tiny-sd3-edit")
    rewritten = apply_passes(model, default_passes("coreml"))
    inputs = TransformerSignature.of(model, 128, 128).example_inputs(seed=2)
    graph = torch.export.export(DenoiserWrapper(rewritten).eval(), inputs).graph
    for node in graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor):
            assert value.dim() <= 4, f"{node.target} makes rank {value.dim()}"
        name = str(node.target)
        if node.op == "call_function" and any(op in name for op in MATMUL_LIKE):
            # only the timestep / pooled-text embedding and adaptive-norm linears, on (B, features)
            assert node.args[0].meta["val"].dim() == 2, f"{name} on {tuple(node.args[0].meta['val'].shape)}"
