"""Static int8 of a trained denoiser in the ExecuTorch runtime, and the min-PSNR float fallback.

The model is the shipped shapes SD3 teacher (trained weights, 256 px, 256 image tokens): the
tiny random presets quantize unlike any real model (their sampler trajectories diverge, so one
per-tensor range spans latents of std 1 to 100 and they measure 22-26 dB where a trained model
measures 31-33), so every floor here is derived on trained weights.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from edit_mobile.calibration import CalibrationOptions, capture_calibration, load_calibration
from edit_mobile.errors import UserError
from edit_mobile.export.quantization.sensitivity import SensitivityAnalysis
from edit_mobile.export.quantization.xnnpack import quantize_for_xnnpack

MODEL = "shapes-sd3"
# Held-out output PSNR of the all-int8 teacher (q/dq program; the ExecuTorch runtime within 0.1 dB), this set (4 shapes
# captions, 6 sampler steps, 6 held-out records): measured 31.5 dB mean, 22.3 dB worst (AVX2 EPYC;
# bench/shapes_quality's 16 records: 32.7 / 22.4 dB). 27 dB leaves margin for the observers'
# histogram binning and other CPUs' kernels while failing a broken recipe (a wrong scale or a
# float program gives < 10 dB or inf).
STATIC_INT8_MIN_PSNR_DB = 27.0
# Dynamic int8 on the same records: measured 46.8 dB mean, 39.8 worst.
DYNAMIC_INT8_MIN_PSNR_DB = 40.0
# int4-weight (groups of 32, dynamic int8 activations) on the same records: measured 34.7 dB mean, 29.0 worst.
INT4_MIN_PSNR_DB = 30.0
# The float fallback's target: the one export --min-psnr is used with (make demo, the bench).
MIN_PSNR_TARGET_DB = 30.0


def capture_shapes_calibration(model: str, directory) -> None:
    """The floors' calibration set of a shipped shapes model in `directory`/set: 8 training
    captions (4 sampled), 6 sampler steps, 8 records and 6 held out."""
    from edit_mobile.shapes import sample_training_captions

    prompts = directory / "captions.txt"
    prompts.write_text("".join(f"{c.caption}\n" for c in sample_training_captions(8, seed=7)))
    capture_calibration(model, directory / "set", prompts_path=prompts, progress=False,
                        options=CalibrationOptions(steps=6, samples=4, records=8, heldout_records=6))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from edit_mobile.models import DenoiserWrapper, load_transformer

    directory = tmp_path_factory.mktemp("calib")
    capture_shapes_calibration(MODEL, directory)
    calibration = load_calibration(directory / "set")
    denoiser = DenoiserWrapper(load_transformer(MODEL)).eval()
    with torch.no_grad():
        exported = torch.export.export(denoiser, calibration.calibration_inputs[0], strict=False)
    return denoiser, exported, calibration


def test_static_int8_of_a_trained_denoiser_clears_its_floor(trained):
    """The q/dq program's held-out PSNR. Its lowering (80 s here) is left to the programs that
    run quantized denoisers in the ExecuTorch runtime already (the quantized pipeline test, every
    int8 export's self-check); on this model the ExecuTorch runtime measured 31.47 dB against the
    q/dq program's 31.54."""
    _, exported, calibration = trained
    _, record = quantize_for_xnnpack(exported, "int8-static", calibration.calibration_inputs,
                                     calibration.heldout_inputs, progress=False)
    assert record["scheme"] == "int8-static" and record["float_layers"] == []
    assert "time_text_embed.timestep_embedder.linear_1" in record["always_float_layers"]  # per-sample vectors
    assert STATIC_INT8_MIN_PSNR_DB <= record["heldout_psnr_db"] < 80.0  # quantized, and not broken


@pytest.fixture(scope="module")
def analysis(trained):
    _, exported, calibration = trained
    return SensitivityAnalysis(exported, calibration.calibration_inputs, calibration.heldout_inputs,
                               progress=False)


def test_sensitivity_ranks_every_layer(analysis):
    report = analysis.report("int8-static")
    layers = [cost.layer for cost in report.layers]
    assert sorted(layers) == sorted(["pos_embed", "context_embedder", "proj_out",
                                     *(f"transformer_blocks.{i}" for i in range(4))])
    worst = [cost.min_psnr_db for cost in report.layers]
    assert worst == sorted(worst)  # most sensitive (on the worst held-out record) first
    # Measured: the first joint block costs most (24.7 dB worst alone), the context embedder least
    # (66.8 dB): early blocks carry the layout the later ones refine.
    assert layers[0] == "transformer_blocks.0" and layers[-1] == "context_embedder"
    assert report.all_quantized_psnr_db <= min(cost.psnr_db for cost in report.layers) + 0.5


def test_min_psnr_keeps_sensitive_layers_float_until_the_target(trained, analysis):
    _, exported, calibration = trained
    target = MIN_PSNR_TARGET_DB
    _, record = quantize_for_xnnpack(exported, "int8-static", calibration.calibration_inputs,
                                     calibration.heldout_inputs, min_psnr=target, progress=False,
                                     analysis=analysis)
    # --min-psnr holds the worst held-out record, not the mean, to the target: all int8, the mean
    # clears it (31.5 dB measured) and the worst record does not (22.2 dB).
    all_int8 = analysis.report("int8-static")
    assert all_int8.all_quantized_min_psnr_db < target <= record["heldout_psnr_min_db"] <= record["heldout_psnr_db"]
    # Measured: blocks 0 and 1 and the patch embedding float (3 of 7), 35.9 dB mean, 32.0 worst.
    assert 0 < len(record["float_layers"]) <= record["layers_total"] // 2
    most_sensitive = analysis.report("int8-static").layers[0].layer
    assert most_sensitive in record["float_layers"]


@pytest.fixture(scope="module")
def sampler_check(trained):
    """The pipeline export's whole-sampler check on this teacher's held-out prompts."""
    from edit_mobile.export.sampler_check import SamplerImageCheck
    from edit_mobile.models.families import get_family
    from edit_mobile.models.vae import LatentDecoder
    from edit_mobile.pretrained import pipeline_folder

    denoiser, _, calibration = trained
    folder = pipeline_folder(MODEL)
    decoder = LatentDecoder(AutoencoderKL.from_pretrained(folder / "vae"), "sd3").eval()
    return SamplerImageCheck(denoiser, decoder, get_family("sd3").scheduler(folder), calibration,
                             calibration.input_names, batch=1)


def test_whole_sampler_images_extend_the_float_layers(trained, analysis, sampler_check):
    """Each step's held-out PSNR does not bound the image twenty guided steps make: the check
    replays the held-out prompts float and quantized, and a stricter image floor keeps more
    layers float than the held-out target alone."""
    _, exported, calibration = trained
    assert sampler_check(analysis.converted) in (True, False)  # every layer int8
    all_int8 = sampler_check.record
    assert all_int8["prompts"] == len(calibration.manifest["split"]["heldout"]["samples"]) >= 1
    assert all(10.0 < value < 80.0 for value in all_int8["image_psnr_db"])  # quantized, not broken
    _, held_out_only = quantize_for_xnnpack(exported, "int8-static", calibration.calibration_inputs,
                                            calibration.heldout_inputs, min_psnr=MIN_PSNR_TARGET_DB,
                                            progress=False, analysis=analysis)
    sampler_check.floor_db = min(all_int8["image_psnr_db"]) + 3.0  # unmet with every layer int8
    _, record = quantize_for_xnnpack(exported, "int8-static", calibration.calibration_inputs,
                                     calibration.heldout_inputs, min_psnr=MIN_PSNR_TARGET_DB, progress=False,
                                     analysis=analysis, accept=sampler_check)
    assert sampler_check.record["passed"] and min(sampler_check.record["image_psnr_db"]) >= sampler_check.floor_db
    assert set(held_out_only["float_layers"]) <= set(record["float_layers"])
    assert record["heldout_psnr_min_db"] >= MIN_PSNR_TARGET_DB


def test_unreachable_target_says_it_cannot(trained, analysis):
    _, exported, calibration = trained
    with pytest.raises(UserError, match="cannot reach 300 dB"):
        quantize_for_xnnpack(exported, "int8-static", calibration.calibration_inputs,
                             calibration.heldout_inputs, min_psnr=300.0, progress=False, analysis=analysis)


def test_dynamic_int8_needs_no_ranges_and_is_closer(trained):
    denoiser, exported, calibration = trained
    program, record = quantize_for_xnnpack(exported, "int8-dynamic", calibration.calibration_inputs[:1],
                                           calibration.heldout_inputs, progress=False)
    # Per-call ranges follow each record's own scale.
    assert DYNAMIC_INT8_MIN_PSNR_DB <= record["heldout_psnr_db"] < 80.0
    # Every Linear is int8, the adaLN modulation and timestep GEMMs of one row a sample too, and the
    # program holds none of their float weights (convert_pt2e leaves them on the module it folds).
    assert not any(layer.endswith(".linear") or "embedder" in layer for layer in record["always_float_layers"])
    held = {t.untyped_storage().data_ptr() for t in [*program.state_dict.values(), *program.constants.values()]
            if isinstance(t, torch.Tensor)}
    linears = [m for m in denoiser.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and not [m for m in linears if m.weight.untyped_storage().data_ptr() in held]


def test_int4_weight_quantizes_a_copy_that_shares_the_float_weights(trained):
    """int4-weight rewrites the eager model's Linears (torchao): on a structural copy holding the
    same tensors, so the caller's float model is neither changed nor held twice in memory."""
    denoiser, exported, calibration = trained
    before = {name: (tensor, tensor.clone()) for name, tensor in denoiser.state_dict(keep_vars=True).items()}
    program, record = quantize_for_xnnpack(exported, "int4-weight", calibration.calibration_inputs[:1],
                                           calibration.heldout_inputs, denoiser=denoiser, progress=False)
    after = denoiser.state_dict(keep_vars=True)
    assert all(after[name] is tensor and torch.equal(tensor, copy) for name, (tensor, copy) in before.items())
    held = {t.untyped_storage().data_ptr() for t in [*program.state_dict.values(), *program.constants.values()]
            if isinstance(t, torch.Tensor)}
    convolutions = [m.weight for m in denoiser.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.untyped_storage().data_ptr() in held for w in convolutions)  # shared, not copied
    linears = [m.weight for m in denoiser.modules() if isinstance(m, torch.nn.Linear)]
    assert not [w for w in linears if w.untyped_storage().data_ptr() in held]  # every Linear int4 here
    assert INT4_MIN_PSNR_DB <= record["heldout_psnr_db"] < DYNAMIC_INT8_MIN_PSNR_DB + 10
    # XNNPACK runs it: its qb4w GEMMs agree with the quantized module on a held-out record.
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.runtime import Runtime

    from edit_mobile.export.backends import executorch_program
    from edit_mobile.export.quantization.metrics import psnr_db

    edge, _ = executorch_program.lower(program, [XnnpackPartitioner()])
    buffer = executorch_program.to_executorch(edge).buffer  # the loaded program reads it: keep it alive
    method = Runtime.get().load_program(buffer).load_method("forward")
    inputs = calibration.heldout_inputs[0]
    with torch.no_grad():
        expected = program.module()(*inputs)
    assert psnr_db(expected, method.execute(list(inputs))[0]) > 40.0
    # Only weights carry ranges (activations are quantized per call): no calibration set needed.
    from edit_mobile.export.quantization import quantize_program
    from edit_mobile.models import TransformerSignature

    signature = TransformerSignature.of(denoiser.model)
    _, record = quantize_program(exported, backend="xnnpack", scheme="int4-weight", calibration=None,
                                 signature=signature, denoiser=denoiser, progress=False)
    assert record["scheme"] == "int4-weight"


def test_softmax_attention_keeps_its_scores_and_caption_mask_float():
    """The rewrite passes' softmax attention (bmm / softmax / bmm) leaves its element-wise ops
    (q * scale, scores + caption mask) float: the mask's -10000 for padded tokens would stretch
    one int8 range over the scores and flatten every cross-attention (measured on the trained
    PixArt shapes teacher: 15.9 dB held-out with every layer int8, 30.2 dB with this rule)."""
    from edit_mobile.export.passes import apply_passes
    from edit_mobile.export.quantization import pt2e
    from edit_mobile.export.quantization.layers import module_paths
    from edit_mobile.models import DenoiserWrapper, TransformerSignature, load_transformer

    model = load_transformer("tiny-pixart")
    signature = TransformerSignature.of(model)
    inputs = signature.example_inputs(seed=0)
    mask = inputs[signature.input_names.index("encoder_attention_mask")]
    assert not mask.bool().all()  # a padded prompt: the mask discards some tokens
    denoiser = DenoiserWrapper(apply_passes(model, ["softmax_attention_bmm"])).eval()
    with torch.no_grad():
        exported = torch.export.export(denoiser, inputs, strict=False)
    prepared = pt2e.prepare(exported, pt2e.make_quantizer(dynamic=False))
    observed = {node.args[0] for node in prepared.graph.nodes
                if node.op == "call_module" and "activation_post_process" in str(node.target)}

    def ops_in(kind: str, targets) -> list:
        return [node for node in prepared.graph.nodes if node.target in targets
                and any(path.endswith(kind) for path in module_paths(node))]

    scores = ops_in(".processor", {torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor})
    assert len(scores) >= 2 * 2  # q * scale in attn1 and attn2 of each block, + the mask in attn2
    assert not [node for node in scores if node in observed]
    projections = ops_in(".attn2.to_k", {torch.ops.aten.linear.default})
    assert projections and all(node in observed for node in projections)  # the GEMMs stay int8
