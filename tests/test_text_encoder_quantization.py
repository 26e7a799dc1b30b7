"""`export --pipeline --text-encoder-quantize` and `--without-t5`: text encoders a phone can hold.

The encode_prompt module of a seeded random SD3 encoder (CLIP-L, CLIP-G, T5: every layer kind
the real ones have) quantized, lowered to XNNPACK and run in the ExecuTorch runtime; the record's
embedding PSNR is what the program computes. The whole pipeline with both options is exported
and validated against StableDiffusion3Pipeline in the closing note (80 s an export: not here).
"""

import math

import pytest
import torch

from edit_mobile.calibration.encoder_sd3 import SD3TextEncoder
from edit_mobile.export.pipeline import text_check_inputs

# Measured on this encoder (AVX2 EPYC), worst of 4 prompts, hidden states / pooled: int8-dynamic
# 51.6 / 42.2 dB, int4-weight 30.9 / 20.3 dB (the pooled vector passes through few, narrow
# layers); floors 4 dB under the worse output, NaN fails them.
FLOORS_DB = {"int8-dynamic": 38.0, "int4-weight": 16.0}


@pytest.fixture(scope="module")
def encoder():
    return SD3TextEncoder.random(joint_dim=64, pooled_dim=32, t5_tokens=16)


# int4-weight's Linears go through the denoiser's int4-weight path (test_quantization_xnnpack): its record only.
@pytest.mark.parametrize(("scheme", "run"), [("int8-dynamic", True), ("int4-weight", False)])
def test_a_quantized_text_encoder_runs_in_executorch_near_its_recorded_psnr(encoder, scheme, run):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.runtime import Runtime

    from edit_mobile.closeness import psnr_db
    from edit_mobile.export.backends import executorch_program
    from edit_mobile.export.quantization.text_encoder import quantize_text_encoder

    module = encoder.prompt_module().eval()
    heldout = text_check_inputs(encoder, count=4)
    with torch.no_grad():
        exported = torch.export.export(module, heldout[0], strict=False)
    program, record = quantize_text_encoder(exported, module, scheme, module.output_names, heldout)
    assert record["scheme"] == scheme and record["heldout_records"] == 4
    for name in module.output_names:
        assert record["embedding_psnr_db"][name]["min_db"] >= FLOORS_DB[scheme], record
    if not run:
        return
    # In the runtime: the CLIP encoders (T5's int8 Linears lower alike; 45 s with it, half without).
    module = encoder.without_t5().prompt_module().eval()
    heldout = [inputs[:2] for inputs in heldout]
    with torch.no_grad():
        exported = torch.export.export(module, heldout[0], strict=False)
    program, _ = quantize_text_encoder(exported, module, scheme, module.output_names, heldout)
    edge, coverage = executorch_program.lower_methods({"encode_prompt": program}, [XnnpackPartitioner()], False)
    buffer = executorch_program.to_executorch(edge).buffer
    method = Runtime.get().load_program(buffer).load_method("encode_prompt")
    with torch.no_grad():
        for inputs in heldout:
            expected = module(*inputs)
            got = method.execute(list(inputs))
            for want, have in zip(expected, got, strict=True):
                assert psnr_db(want, have) >= FLOORS_DB[scheme] - 3  # the runtime's kernels, not PyTorch's


def test_a_nan_embedding_fails_every_floor():
    from edit_mobile.export.quantization.text_encoder import embedding_psnr

    reference = lambda ids: (torch.ones(1, 2, 3), torch.ones(1, 3))  # noqa: E731
    broken = lambda ids: (torch.full((1, 2, 3), math.nan), torch.ones(1, 3))  # noqa: E731
    record = embedding_psnr(reference, broken, ["encoder_hidden_states", "pooled_projections"], [(torch.ones(1),)])
    assert math.isnan(record["heldout_psnr_min_db"])


def test_without_t5_gives_zeros_in_t5s_place(encoder):
    clip_only = encoder.without_t5()
    assert [item.input_ids for item in clip_only.tokenizer_inputs()] == ["clip_l_input_ids", "clip_g_input_ids"]
    hidden, pooled = clip_only.prompt_module()(**clip_only.tokenize(["a red circle"]))
    assert hidden.shape == (1, 77 + 16, 64) and bool((hidden[:, 77:] == 0).all())
    full_hidden, full_pooled = encoder.prompt_module()(**encoder.tokenize(["a red circle"]))
    torch.testing.assert_close(pooled, full_pooled)  # the CLIP half is the same encoder's
    torch.testing.assert_close(hidden[:, :77], full_hidden[:, :77])


@pytest.mark.parametrize(("argv", "message"), [
    (["tiny-pixart", "--backend", "xnnpack", "--pipeline", "--without-t5"], "applies to SD3 models"),
    (["tiny-sd3", "--backend", "xnnpack", "--pipeline", "--text-encoder-quantize", "int8-static"],
     "int8-dynamic or int4-weight"),
    (["tiny-sd3", "--backend", "onnx", "--pipeline", "--text-encoder-quantize", "int8-dynamic"],
     "quantizes encode_prompt for xnnpack so far"),
    (["tiny-sd3", "--backend", "xnnpack", "--without-t5"], "add --pipeline"),
])
def test_text_encoder_options_refuse_in_one_line(argv, message, tmp_path, capsys):
    from edit_mobile.main import main

    assert main(["export", *argv, "-o", str(tmp_path / "art")]) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "art").exists()
