"""ConvFusion's 3x3 as Winograd F(2x2, 3x3) token GEMMs (`conv_fusion_winograd`): equal to the
convolution in float32 with trained-like weights, for every ConvFusion option and both families;
grouped 3x3s left alone; the whole form inside XNNPACK, run in the ExecuTorch runtime."""

from __future__ import annotations

import pytest
import torch
from test_passes_token_convs import (
    OPTIONS,
    lowered_and_run,
    outputs,
    student_inputs_reference,
    with_signal,
)

from edit_mobile.export.passes import apply_passes, default_passes
from edit_mobile.export.passes.conv_fusion_winograd import WinogradConvFusion
from edit_mobile.models import (
    TransformerSignature,
    load_transformer,
    to_edit,
)
from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.edit_attention import ConvFusion


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("family", ["pixart", "sd3"])
def test_winograd_equals_the_convolution(family, options):
    student, inputs, reference = student_inputs_reference(family, options)
    rewritten = apply_passes(student, ["conv_fusion_winograd", *default_passes("xnnpack")])
    torch.testing.assert_close(outputs(rewritten, inputs), reference, atol=2e-5, rtol=1e-4)
    fusions = sum(type(m) is ConvFusion for m in student.modules())
    winograd = sum(type(m) is WinogradConvFusion for m in rewritten.modules())
    # A grouped 3x3 has no dense tile GEMMs to save: it stays a convolution.
    assert fusions > 0 and winograd == (0 if options.get("fusion_groups", 1) > 1 else fusions)


@pytest.mark.parametrize("grid", [(5, 7), (2, 2), (6, 4)])
def test_winograd_tiles_any_grid(grid):
    """Odd sides read one more zero row / column of tiles, cropped from the output."""
    torch.manual_seed(0)
    fusion = ConvFusion(32, EDiTConfig(fusion_reduction=4, fusion_norm_groups=4)).eval()
    with torch.no_grad():
        fusion.expand.weight.normal_(0.0, 0.2)
        tokens = torch.randn(2, grid[0] * grid[1], 32)
        torch.testing.assert_close(WinogradConvFusion(fusion).tokens(tokens, grid), fusion.tokens(tokens, grid),
                                   atol=1e-5, rtol=1e-4)


def test_winograd_runs_inside_xnnpack(tmp_path):
    student = with_signal(to_edit(load_transformer("tiny-pixart")))
    convolutions = lowered_and_run(student, ["conv_fusion_winograd", *default_passes("xnnpack")], tmp_path)
    assert len(convolutions) == 1 + 2 * len(student.transformer_blocks)  # patch embedding + the compressors


def test_winograd_is_a_float32_and_int8_dynamic_default_up_to_1024_px_tokens():
    """Measured: a gain in float32 and under int8-dynamic up to 4096 image tokens; slower at
    16384 (2048 px at PixArt-XL's patch); under int8-static not lowerable; fp16 not measured.
    The export's defaults follow; asked by name, it applies."""
    from edit_mobile.export.artifact import resolve_passes

    student = to_edit(load_transformer("tiny-pixart"))
    assert TransformerSignature.of(student, 128, 192).image_tokens == 8 * 12
    assert TransformerSignature.of(student, 1024, 1024).image_tokens == 4096
    assert "conv_fusion_winograd" in resolve_passes(None, "xnnpack", student, 4096, "int8-dynamic")
    assert "conv_fusion_winograd" not in resolve_passes(None, "xnnpack", student, 16384, "int8-dynamic")
    assert "conv_fusion_winograd" in resolve_passes(None, "xnnpack", student, 4096, "fp32")
    assert "conv_fusion_winograd" not in resolve_passes(None, "xnnpack", student, 16384, "fp32")
    assert "conv_fusion_winograd" not in resolve_passes(None, "xnnpack", student, 4096, "fp16")
    assert "conv_fusion_winograd" not in resolve_passes(None, "xnnpack", student, 4096)
    assert "conv_fusion_winograd" not in resolve_passes(None, "xnnpack", student, 4096, "int8-static")
    assert "conv_fusion_winograd" in resolve_passes(["conv_fusion_winograd"], "xnnpack", student, 16384)
