"""Every mobile rewrite pass, alone and in each backend's default list, keeps the float32 output."""

from __future__ import annotations

import pytest
import torch

from edit_mobile.errors import UserError
from edit_mobile.export.passes import DEFAULT_PASSES, PASSES, apply_passes, default_passes
from edit_mobile.export.passes.channels_first_pixart import ChannelsFirstPixArtForward
from edit_mobile.export.passes.channels_first_sd3 import ChannelsFirstSD3Forward
from edit_mobile.export.passes.linear_attention_bmm import (
    EDiTBMMAttnProcessor,
    MMEDiTBMMAttnProcessor,
)
from edit_mobile.export.passes.softmax_processors import SoftmaxAttention
from edit_mobile.models import DenoiserWrapper, TransformerSignature, load_transformer, to_mm_edit

PRESETS = ["tiny-pixart", "tiny-pixart-edit", "tiny-sd3", "tiny-sd3-edit"]


@pytest.fixture(scope="module")
def models():
    return {name: load_transformer(name) for name in PRESETS}


def test_mm_edit_options_survive_the_rewrites():
    """MM-EDiT's non-default options: the exact shared normaliser, compressed image keys."""
    teacher = load_transformer("tiny-sd3")
    student = to_mm_edit(teacher, {"mm_normalizer": "exact", "mm_prompt_image_keys": "compressed"}).eval()
    with torch.no_grad():
        for name, parameter in student.named_parameters():
            if ".conv_fusion.expand." in name:
                parameter.normal_(0.0, 0.05)
    inputs = TransformerSignature.of(student, 128, 128).example_inputs(seed=4)
    reference = outputs(student, inputs)
    for names in (["linear_attention_bmm"], DEFAULT_PASSES["coreml"]):
        torch.testing.assert_close(outputs(apply_passes(student, names), inputs), reference, atol=2e-5, rtol=1e-4)


def outputs(model, inputs):
    with torch.no_grad():
        return DenoiserWrapper(model)(*inputs)


def pass_lists():
    single = [[name] for name in PASSES]
    defaults = [DEFAULT_PASSES[backend] for backend in ("xnnpack", "coreml")]
    return single + defaults + [list(PASSES)]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("names", pass_lists(), ids=lambda names: "+".join(names))
def test_pass_keeps_float32_output(models, preset, names):
    model = models[preset]
    inputs = TransformerSignature.of(model, 128, 192, batch=2).example_inputs(seed=3)
    reference = outputs(model, inputs)
    rewritten = apply_passes(model, names)
    got = outputs(rewritten, inputs)
    assert got.shape == reference.shape
    torch.testing.assert_close(got, reference, atol=2e-5, rtol=1e-4)


def test_passes_really_rewrite(models):
    """Guards the test above against passes that silently do nothing."""
    edit = apply_passes(models["tiny-pixart-edit"], ["linear_attention_bmm", "split_head_attention"])
    processors = [block.attn1.processor for block in edit.transformer_blocks]
    assert all(type(p) is EDiTBMMAttnProcessor for p in processors)
    cross = [block.attn2.processor.attention for block in edit.transformer_blocks]
    assert all(isinstance(a, SoftmaxAttention) and a.split_heads for a in cross)
    mm = apply_passes(models["tiny-sd3-edit"], ["linear_attention_bmm"])
    assert all(type(block.attn.processor) is MMEDiTBMMAttnProcessor for block in mm.transformer_blocks)
    counts = {name: PASSES[name].apply(apply_passes(models["tiny-pixart-edit"], [])) for name in PASSES
              if name not in DECODER_ONLY}
    assert all(count > 0 for count in counts.values()), counts
    assert isinstance(apply_passes(models["tiny-pixart"], ["channels_first"]), ChannelsFirstPixArtForward)
    assert isinstance(apply_passes(models["tiny-sd3-edit"], ["channels_first"]), ChannelsFirstSD3Forward)


DECODER_ONLY = ("upsample_nearest_deconv",)  # a VAE decoder's modules; denoisers have none


def test_decoder_rewrites_keep_the_image_and_leave_no_portable_ops():
    """The pipeline's decode method: its VAE with the decoder passes (mid-block attention as
    bmm + softmax, GroupNorms pooled, nearest upsampling as a deconvolution of ones) draws the
    same image and lowers to XNNPACK as one partition with nothing left on portable kernels."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edit_mobile.export.passes.upsample_nearest_deconv import DeconvUpsample2D
    from edit_mobile.export.pipeline import DECODER_PASSES
    from edit_mobile.models.vae import LatentDecoder, tiny_vae

    vae = tiny_vae("pixart")
    rewritten = apply_passes(vae, list(DECODER_PASSES), share_weights=True)
    assert sum(isinstance(m, DeconvUpsample2D) for m in rewritten.modules()) == 3
    latents = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    decoder = LatentDecoder(rewritten, "pixart").eval()
    with torch.no_grad():
        torch.testing.assert_close(decoder(latents), LatentDecoder(vae, "pixart")(latents), rtol=0, atol=1e-5)
        program = torch.export.export(decoder, (latents,), strict=False)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).exported_program()
    calls = [n for n in lowered.graph.nodes if n.op == "call_function"]
    assert sum("call_delegate" in str(n.target) for n in calls) == 1
    compute = [str(n.target) for n in calls if any(op in str(n.target) for op in
                                                   ("upsample", "any", "where", "group_norm", "mean"))]
    assert compute == []


def test_split_heads_keep_a_vae_attentions_group_norm_and_residual():
    """split_head_attention on a VAE (a Core ML / QNN decoder): its mid-block attention becomes
    the spatial form one head at a time, and the image stays the same."""
    from edit_mobile.export.passes.softmax_processors import SpatialSoftmaxAttnProcessor
    from edit_mobile.models.vae import LatentDecoder, tiny_vae

    vae = tiny_vae("pixart")
    for attn in (m for m in vae.modules() if hasattr(m, "set_processor")):
        attn.heads = 2  # tiny_vae has one head; two make the split visible (SDPA scales by the head size)
        attn.scale = (attn.inner_dim // 2) ** -0.5
    rewritten = apply_passes(vae, ["split_head_attention"], share_weights=True)
    processors = [m.processor for m in rewritten.modules() if hasattr(m, "set_processor")]
    assert processors and all(type(p) is SpatialSoftmaxAttnProcessor and p.attention.split_heads for p in processors)
    latents = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(LatentDecoder(rewritten, "pixart")(latents), LatentDecoder(vae, "pixart")(latents),
                                   rtol=0, atol=1e-5)


def test_apply_passes_leaves_the_input_model_alone(models):
    model = models["tiny-pixart-edit"]
    before = type(model.transformer_blocks[0].attn1.processor)
    apply_passes(model, list(DEFAULT_PASSES["coreml"]))
    assert type(model.transformer_blocks[0].attn1.processor) is before
    assert not isinstance(model, ChannelsFirstPixArtForward)


def test_defaults_and_bad_names():
    for backend in ("xnnpack", "vulkan", "onnx", "coreml", "coreml-pte", "qnn"):
        assert "linear_attention_bmm" in default_passes(backend)
    assert "group_norm_pooled" in default_passes("xnnpack") and "group_norm_pooled" in default_passes("qnn")
    assert "channels_first" in default_passes("coreml") and "split_head_attention" in default_passes("qnn")
    assert "channels_first" not in default_passes("xnnpack")
    with pytest.raises(UserError, match="unknown pass"):
        apply_passes(torch.nn.Linear(2, 2), ["fast_mode"])
    with pytest.raises(UserError, match="backend"):
        default_passes("tpu")
