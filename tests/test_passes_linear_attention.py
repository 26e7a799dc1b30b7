"""The mobile linear attention: fp16-safe at 16384 tokens, rank-3, no einsum, no 5-D tensors."""

from __future__ import annotations

import torch

from edit_mobile.export.passes import apply_passes
from edit_mobile.export.passes.attention_kernels import (
    linear_attention,
    linear_attention_channels_first,
)
from edit_mobile.models import (
    DenoiserWrapper,
    TransformerSignature,
    load_transformer,
    relu_linear_attention,
)

TOKENS = 16384  # 2048 px: 256 x 256 latent / patch 2 = 128 x 128 tokens


def features(heads: int = 4, head_dim: int = 16, seed: int = 0):
    """ReLU features and values with a non-zero mean, so unscaled fp16 sums overflow."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.relu(torch.randn(heads, TOKENS, head_dim, generator=generator) * 2)
    key = torch.relu(torch.randn(heads, TOKENS, head_dim, generator=generator) * 2)
    value = torch.randn(heads, TOKENS, head_dim, generator=generator) * 2 + 1
    query[0, :7] = 0.0  # tokens whose every query feature is zero: the normaliser is 0
    return query, key, value


def test_fp16_at_16384_tokens_is_finite_and_close_to_fp32():
    query, key, value = features()
    reference = relu_linear_attention(query[None].double(), key[None].double(), value[None].double(), 1e-6)[0]
    fp32 = linear_attention(query, key, value, eps=1e-6)
    torch.testing.assert_close(fp32.double(), reference, atol=1e-5, rtol=1e-5)

    fp16 = linear_attention(query.half(), key.half(), value.half(), eps=1e-6)
    assert torch.isfinite(fp16).all()
    error = (fp16.double() - reference).abs().max() / reference.abs().max()
    assert error < 5e-3, f"fp16 relative error {error:.2e}"

    first = linear_attention_channels_first(*(t.half().transpose(1, 2) for t in (query, key, value)), eps=1e-6)
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first.transpose(1, 2).double(), fp16.double(), atol=5e-3, rtol=0)

    # The unscaled formula is what the pass exists for: in fp16 its normaliser overflows.
    naive = relu_linear_attention(query[None].half(), key[None].half(), value[None].half(), 1e-6)[0]
    assert not torch.isfinite(naive).all()


def exported_attention_nodes(preset: str, passes: list[str]):
    model = apply_passes(load_transformer(preset), passes)
    inputs = TransformerSignature.of(model, 128, 128).example_inputs()
    graph = torch.export.export(DenoiserWrapper(model).eval(), inputs).graph
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and any(".attn" in path for path, _ in stack.values()):
            yield node


def test_exported_edit_attention_is_rank3_bmm_without_einsum():
    for preset in ("tiny-pixart-edit", "tiny-sd3-edit"):
        nodes = list(exported_attention_nodes(preset, ["linear_attention_bmm", "softmax_attention_bmm"]))
        names = {str(node.target) for node in nodes}
        assert not any("einsum" in name or "scaled_dot_product" in name for name in names), names
        ranks = {node.meta["val"].dim() for node in nodes if isinstance(node.meta.get("val"), torch.Tensor)}
        assert max(ranks) <= 4, f"{preset}: tensor of rank {max(ranks)} in attention"
        matmuls = [n for n in nodes if n.target in (torch.ops.aten.bmm.default, torch.ops.aten.matmul.default)]
        assert matmuls and all(n.meta["val"].dim() == 3 for n in matmuls)


def test_gelu_pass_is_native_in_fp32_and_sigmoid_in_fp16():
    from edit_mobile.export.passes.gelu_tanh_sigmoid import gelu_tanh

    x = torch.randn(4096) * 4
    assert torch.equal(gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh"))
    expected = torch.nn.functional.gelu(x.double(), approximate="tanh")
    torch.testing.assert_close(gelu_tanh(x.half()).double(), expected, atol=2e-2, rtol=1e-2)
    big = torch.tensor([300.0, -300.0], dtype=torch.float16)  # x * x overflows: GELU's limits
    assert gelu_tanh(big).tolist() == [300.0, 0.0]

    model = apply_passes(load_transformer("tiny-pixart-edit"), ["gelu_tanh_sigmoid"]).half()
    inputs = tuple(t.half() for t in TransformerSignature.of(model, 128, 128).example_inputs())
    graph = torch.export.export(DenoiserWrapper(model).eval(), inputs).graph
    names = {str(node.target) for node in graph.nodes}
    assert "aten.sigmoid.default" in names and not any("gelu" in name for name in names)


def count_forward_calls(model: torch.nn.Module, suffixes: tuple[str, ...]) -> dict[str, int]:
    """Forward calls of each module whose name ends with one of `suffixes`, counted from now on."""
    names = {module: name for name, module in model.named_modules() if name.endswith(suffixes)}
    calls = dict.fromkeys(names.values(), 0)

    def count(module, args, output):
        calls[names[module]] += 1

    for module in names:
        module.register_forward_hook(count)
    return calls


def test_mm_edit_projects_image_keys_and_values_once_per_block():
    """The prompt rows read the image K, V projections the compressors read: projecting them
    again put two more N x C x C GEMMs a block into every exported MM-EDiT program."""
    for passes in (["linear_attention_bmm"], ["linear_attention_bmm", "channels_first"]):
        model = apply_passes(load_transformer("tiny-sd3-edit"), passes)
        calls = count_forward_calls(model, ("attn.to_k", "attn.to_v"))
        with torch.no_grad():
            DenoiserWrapper(model).eval()(*TransformerSignature.of(model, 128, 128).example_inputs())
        assert len(calls) >= 4 and set(calls.values()) == {1}, (passes, calls)
