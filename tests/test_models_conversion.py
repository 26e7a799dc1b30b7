"""Conversion of diffusers teachers, parity of what it leaves alone, save/load, linear cost."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from edit_mobile.errors import UserError
from edit_mobile.models import (
    DenoiserWrapper,
    EDiTAttnProcessor,
    MMEDiTAttnProcessor,
    PixArtEDiTTransformer2DModel,
    TransformerSignature,
    build_preset,
    convert,
    load_transformer,
    to_edit,
    to_mm_edit,
    to_teacher,
)
from edit_mobile.models.flops import count_step_flops
from edit_mobile.models.presets import load_architecture


def denoise(model, height=128, width=None, seed=0):
    signature = TransformerSignature.of(model, height, width)
    with torch.no_grad():
        return DenoiserWrapper(model)(*signature.example_inputs(seed))


@pytest.mark.parametrize("name", ["tiny-pixart", "tiny-sd3"])
def test_wrapper_is_the_diffusers_teacher_call(name):
    teacher = build_preset(name)
    signature = TransformerSignature.of(teacher)
    hidden, context, conditioning, timestep = signature.example_inputs()
    extra = {"encoder_attention_mask": conditioning} if name == "tiny-pixart" else {"pooled_projections": conditioning}
    with torch.no_grad():
        direct = teacher(hidden, encoder_hidden_states=context, timestep=timestep, **extra).sample
    assert torch.equal(denoise(teacher), direct)


@pytest.mark.parametrize("name", ["tiny-pixart", "tiny-sd3"])
def test_conversion_leaves_everything_but_image_attention_bit_identical(name):
    teacher = build_preset(name)
    student = convert(teacher)
    teacher_weights, student_weights = teacher.state_dict(), student.state_dict()
    for key, value in teacher_weights.items():
        assert torch.equal(student_weights[key], value), key  # W_q, W_k, W_v, W_o, MLP, norms reused
    assert all(".processor." in key for key in set(student_weights) - set(teacher_weights))
    # Dropping the EDiT processors gives the teacher back, bit for bit.
    assert torch.equal(denoise(to_teacher(student)), denoise(teacher))


def test_pixart_conversion_touches_self_attention_only():
    student = to_edit(build_preset("tiny-pixart"))
    for block in student.transformer_blocks:
        assert isinstance(block.attn1.processor, EDiTAttnProcessor)
        assert isinstance(block.attn2.processor, AttnProcessor2_0)  # cross-attention untouched


def test_pixart_untouched_modules_give_teacher_outputs():
    teacher = build_preset("tiny-pixart")
    student = to_edit(teacher)
    captured = {}

    def capture(tag):
        return lambda module, args, output: captured.setdefault(tag, output)

    for tag, model in (("teacher", teacher), ("student", student)):
        model.pos_embed.register_forward_hook(capture(f"{tag}.pos_embed"))
        model.caption_projection.register_forward_hook(capture(f"{tag}.caption"))
        model.transformer_blocks[0].ff.register_forward_hook(capture(f"{tag}.ff_unused"))
        denoise(model)
    assert torch.equal(captured["teacher.pos_embed"], captured["student.pos_embed"])
    assert torch.equal(captured["teacher.caption"], captured["student.caption"])
    block_t, block_s = teacher.transformer_blocks[1], student.transformer_blocks[1]
    x, ctx = torch.randn(1, 64, 64), torch.randn(1, 120, 64)
    with torch.no_grad():
        assert torch.equal(block_t.attn2(x, encoder_hidden_states=ctx), block_s.attn2(x, encoder_hidden_states=ctx))
        assert torch.equal(block_t.ff(x), block_s.ff(x))


def test_sd3_conversion_covers_joint_and_mmditx_attention():
    student = to_mm_edit(build_preset("tiny-sd3"))
    assert isinstance(student.transformer_blocks[0].attn.processor, MMEDiTAttnProcessor)
    assert isinstance(student.transformer_blocks[0].attn2.processor, EDiTAttnProcessor)
    assert student.transformer_blocks[1].attn2 is None


def test_conversion_refuses_the_wrong_family_and_students():
    with pytest.raises(UserError, match="expected a pixart"):
        to_edit(build_preset("tiny-sd3"))
    with pytest.raises(UserError, match="already an EDiT"):
        convert(build_preset("tiny-pixart-edit"))


@pytest.mark.parametrize("name", ["tiny-pixart-edit", "tiny-sd3-edit"])
def test_save_and_load_roundtrip(tmp_path, name):
    student = build_preset(name)
    student.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_transformer(tmp_path)
    assert type(loaded) is type(student)
    assert loaded.config["edit_config"] == student.config["edit_config"]
    saved, restored = student.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[key], restored[key]) for key in saved)  # the weights: exactly
    # The outputs: to float tolerance. Reloaded tensors can be laid out differently (strides,
    # alignment), which picks another CPU kernel: on an AVX2 EPYC the outputs differ by ~5e-7.
    torch.testing.assert_close(denoise(loaded), denoise(student), rtol=1e-5, atol=1e-5)


def test_options_are_recorded_and_restored(tmp_path):
    student = to_edit(build_preset("tiny-pixart"), {"fusion_groups": 2, "mm_normalizer": "exact"})
    student.save_pretrained(tmp_path, safe_serialization=True)
    loaded = PixArtEDiTTransformer2DModel.from_pretrained(tmp_path)
    assert loaded.config["edit_config"]["fusion_groups"] == 2
    assert loaded.transformer_blocks[0].attn1.processor.conv_fusion.local.groups == 2


@pytest.mark.parametrize("name", ["tiny-pixart", "tiny-sd3"])
def test_a_student_without_conv_fusion_starts_where_the_faithful_one_starts(name, tmp_path):
    """--fusion none: no ConvFusion parameters at all; ConvFusion's 1x1 starts at zero, so at
    conversion both forms give the same outputs, also through the XNNPACK passes; the form is
    recorded and restored."""
    from edit_mobile.export.artifact import apply_passes
    from edit_mobile.export.passes import default_passes

    teacher = build_preset(name)
    plain, faithful = convert(teacher, {"fusion": "none"}), convert(teacher)
    assert not any("conv_fusion" in key for key in plain.state_dict())
    assert any("conv_fusion" in key for key in faithful.state_dict())
    torch.testing.assert_close(denoise(plain), denoise(faithful), rtol=0, atol=1e-6)
    rewritten = apply_passes(plain, default_passes("xnnpack"))
    torch.testing.assert_close(denoise(rewritten), denoise(plain), rtol=1e-4, atol=2e-5)
    plain.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_transformer(tmp_path)
    assert loaded.config["edit_config"]["fusion"] == "none"
    assert not any("conv_fusion" in key for key in loaded.state_dict())


@pytest.mark.parametrize("name", ["tiny-pixart-edit", "tiny-sd3-edit"])
def test_non_square_latents(name):
    model = build_preset(name)
    assert denoise(model, 128, 256).shape[-2:] == (16, 32)
    assert denoise(model, 192, 64).shape[-2:] == (24, 8)


def test_an_export_size_off_the_multiple_is_refused_with_the_nearest_one():
    model = build_preset("tiny-pixart-edit")
    with pytest.raises(UserError, match="multiple of 32 pixels per side, e.g. 160x160"):
        TransformerSignature.of(model, 144)


@pytest.mark.parametrize("name", ["tiny-pixart-edit", "tiny-sd3-edit"])
def test_odd_token_grids_compress_to_the_ceiling(name):
    """diffusers' aspect-ratio bins give token grids not divisible by the compression stride
    (256 px bins: 29 x 8 tokens and the like): the compressor's padded conv takes any grid, and
    the XNNPACK token form of it (export pass compressor_tokens) agrees on odd grids too."""
    from edit_mobile.export.passes.token_convs import TokenSpatialCompressor
    from edit_mobile.models import SpatialCompressor

    model = build_preset(name)
    inputs = list(TransformerSignature.of(model, 128).example_inputs(0))
    inputs[0] = torch.randn(1, inputs[0].shape[1], 58, 16)  # 464 x 128 px, a 256 px bin: 29 x 8 tokens
    with torch.no_grad():
        assert DenoiserWrapper(model)(*inputs).shape[-2:] == (58, 16)
    compressor = next(m for m in model.modules() if isinstance(m, SpatialCompressor))
    with torch.no_grad():
        compressor.conv.weight.normal_()
        for grid in ((5, 7), (4, 6), (1, 3)):
            tokens = torch.randn(2, grid[0] * grid[1], compressor.conv.in_channels)
            expected = compressor(tokens, grid)
            assert expected.shape[1] == -(-grid[0] // 2) * -(-grid[1] // 2)
            torch.testing.assert_close(TokenSpatialCompressor(compressor)(tokens, grid), expected,
                                       rtol=1e-5, atol=1e-5)


def test_attention_cost_is_linear_for_edit_and_quadratic_for_the_teacher():
    edit = load_architecture("pixart-sigma-xl-1024-edit")
    teacher = to_teacher(edit)
    growth = {}
    for label, model in (("teacher", teacher), ("edit", edit)):
        small, large = (count_step_flops(model, TransformerSignature.of(edit, side)).attention for side in (2048, 4096))
        growth[label] = large / small  # 4x the tokens
    assert 3.6 < growth["edit"] < 4.4
    assert growth["teacher"] > 13  # ~16x once N^2 dominates the projections


def test_tiny_presets_are_known_by_name_config_or_converted_folder(tmp_path):
    from edit_mobile.models import is_tiny

    student = load_transformer("tiny-sd3-edit")
    student.save_pretrained(tmp_path / "student")
    assert is_tiny("tiny-pixart") and is_tiny(tmp_path / "student")
    assert is_tiny("my-model", dict(student.config))  # a renamed copy keeps the tiny architecture
    assert not is_tiny("pixart-sigma-xl-512") and not is_tiny(tmp_path / "missing")
    assert not is_tiny("my-model", {**student.config, "num_layers": 28})


@pytest.mark.parametrize("name", ["tiny-pixart", "tiny-sd3"])
def test_teacher_and_student_take_the_same_resolutions(name):
    """One rule (the family's: VAE 8 x patch 2 x compression stride 2) for calibrate, export and
    the API: calibrate used to accept 8 x patch for teachers, which export then refused."""
    from edit_mobile.errors import UserError
    from edit_mobile.models import TransformerSignature
    from edit_mobile.models.signature import required_multiple

    teacher, student = build_preset(name), build_preset(name + "-edit")
    assert required_multiple(teacher) == required_multiple(student) == 32
    for model in (teacher, student):
        assert TransformerSignature.of(model, 96, 64).latent_hw == (12, 8)
        with pytest.raises(UserError, match="not divisible by 32"):
            TransformerSignature.of(model, 80, 80)
