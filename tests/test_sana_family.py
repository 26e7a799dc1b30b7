"""SANA, the third model family, on tiny-sana: its family facts (32x VAE, patch 1: resolutions
a multiple of 32), the published presets' sizes, XNNPACK and ONNX artifacts run in their own
runtimes against PyTorch, calibration through its flow DPM-Solver with a random Gemma-2, and
validate / profile on the artifacts. Prompts are 32 tokens throughout to keep it fast."""

from __future__ import annotations

import json

import pytest
import torch
from export_artifacts import load_test_vectors, manifest

from edit_mobile.closeness import IMAGE_FLOORS_DB, PSNR_FLOORS_DB, psnr_db
from edit_mobile.main import main

MODEL = "tiny-sana"
TOKENS = "32"
CALIBRATION = ["--steps", "4", "--samples", "3", "--records", "6", "--heldout-records", "4"]


@pytest.fixture(scope="module")
def model():
    from edit_mobile.models import load_transformer

    return load_transformer(MODEL)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """ART_DIRs of `edit-mobile export tiny-sana` for XNNPACK and ONNX, at its default 128 px, and
    of its EDiT student for ONNX (onnx-edit)."""
    root = tmp_path_factory.mktemp("sana")
    for model, backend, name in ((MODEL, "xnnpack", "xnnpack"), (MODEL, "onnx", "onnx"), (MODEL + "-edit", "onnx", "onnx-edit")):
        assert main(["export", model, "--backend", backend, "--prompt-tokens", TOKENS, "-o", str(root / name)]) == 0
    return root


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sana-calibration") / "calib"
    assert main(["calibrate", MODEL, "--random-text-encoder", "--prompt-tokens", TOKENS, *CALIBRATION,
                 "-o", str(directory)]) == 0
    return directory


@pytest.fixture(scope="module")
def sana_folder(tmp_path_factory):
    """A SANA pipeline folder as diffusers writes one (SanaPipeline.save_pretrained) from tiny
    parts: tiny-sana, a random Gemma-2 with its byte tokenizer, the tiny DC-AE, the scheduler."""
    from diffusers import SanaPipeline

    from edit_mobile.calibration.text_encoders import random_text_encoder
    from edit_mobile.models import load_transformer
    from edit_mobile.models.families import get_family
    from edit_mobile.models.vae import tiny_vae

    text = random_text_encoder("sana", int(TOKENS), 32)
    folder = tmp_path_factory.mktemp("sana-folder") / "pipeline"
    SanaPipeline(tokenizer=text.tokenizer, text_encoder=text.text_encoder, vae=tiny_vae("sana"),
                 transformer=load_transformer(MODEL), scheduler=get_family("sana").default_scheduler()
                 ).save_pretrained(folder, safe_serialization=True)
    return folder


def pytorch_output(model, inputs) -> torch.Tensor:
    from edit_mobile.models import DenoiserWrapper

    with torch.no_grad():
        return DenoiserWrapper(model)(*inputs)


def test_the_family_is_its_file_presets_text_encoder_and_all():
    """A family is found by its file in models/families/ (no list elsewhere names it), and its
    presets and text encoder come from that file: what lets SANA touch no other module."""
    from pathlib import Path

    from edit_mobile.models import families
    from edit_mobile.models.families import sana
    from edit_mobile.models.presets import PRESETS

    files = {path.stem for path in Path(families.__file__).parent.glob("*.py")} - {"__init__", "base"}
    assert set(families.FAMILY_MODULES) == files and families.get_family("sana") is sana.FAMILY
    assert {name for name, preset in PRESETS.items() if preset.family == "sana"} == set(sana.PRESETS)
    tokenizer, encoder = sana.FAMILY.random_text_encoder_parts(32)
    assert type(encoder).__name__ == "Gemma2Model" and encoder.config.hidden_size == 32


def test_sana_converts_to_core_ml_in_the_token_layout(tmp_path, capsys):
    """Core ML's defaults without channels_first, which has no SANA form (a default a model cannot
    take is left out; asked for by name it is refused): the EDiT student's package is converted
    and inspected here (it runs on a Mac), its linear attention in Neural Engine friendly ops."""
    from edit_mobile.export.backends.coreml import inspect_package

    out = tmp_path / "coreml"
    assert main(["export", MODEL + "-edit", "--backend", "coreml", "--prompt-tokens", TOKENS, "-o", str(out)]) == 0
    data = manifest(out)
    assert "channels_first" not in data["passes"] and "linear_attention_bmm" in data["passes"]
    report = inspect_package(out / data["files"]["program"]["path"])
    assert report["inputs"] == data["inputs"] and {"relu", "matmul", "conv"} <= set(report["ops"])
    assert report["matmul_max_rank"] <= 4
    refused = main(["export", MODEL, "--backend", "coreml", "--passes", "channels_first", "-o", str(tmp_path / "cf")])
    assert refused == 2 and "channels_first supports PixArt and SD3" in capsys.readouterr().err
    assert not (tmp_path / "cf").exists()


def test_family_facts_32x_latents_patch_1(model):
    from edit_mobile.models import TransformerSignature, default_resolution
    from edit_mobile.models.families import family_of

    family = family_of(model)
    assert family.name == "sana" and family.vae_scale == 32 and family.latent_channels == 32
    assert family.resolution_multiple(model) == 32 and default_resolution(model) == (128, 128)
    signature = TransformerSignature.of(model, 96, 160)
    assert signature.latent_hw == (3, 5)
    assert signature.input_names == ["hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"]
    assert signature.outputs[0].shape == (1, 32, 3, 5)
    assert tuple(pytorch_output(model, signature.example_inputs()).shape) == (1, 32, 3, 5)


@pytest.mark.parametrize("command", [["info", MODEL, "--resolution", "100"],
                                     ["export", MODEL, "--backend", "onnx", "--resolution", "80x96", "-o", "OUT"]])
def test_a_size_off_the_32_px_rule_is_refused_in_one_line(command, tmp_path, capsys):
    command = [str(tmp_path / "out") if part == "OUT" else part for part in command]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "multiple of 32" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("preset, billions", [("sana-600m-512", 0.6), ("sana-1600m-1024", 1.6)])
def test_published_presets_have_their_parameter_counts(preset, billions):
    from edit_mobile.models import build_preset, default_resolution

    teacher = build_preset(preset, device="meta")
    parameters = sum(p.numel() for p in teacher.parameters())
    assert abs(parameters / 1e9 - billions) / billions < 0.05, parameters
    assert default_resolution(teacher)[0] == int(preset.rsplit("-", 1)[1])


def test_xnnpack_program_matches_pytorch_in_executorch_runtime(artifacts, model):
    from executorch.runtime import Runtime

    art_dir = artifacts / "xnnpack"
    data = manifest(art_dir)
    assert data["model"]["family"] == "sana" and data["latent"] == [4, 4] and data["self_check"]["passed"]
    inputs, _ = load_test_vectors(art_dir)
    program = Runtime.get().load_program(art_dir / data["files"]["program"]["path"])
    (output,) = program.load_method("forward").execute(inputs)
    assert psnr_db(pytorch_output(model, inputs), output) >= PSNR_FLOORS_DB["fp32"]
    assert data["delegation"]["flops_share_delegated"] > 0.95  # SANA's ReLU linear attention and GLUMBConv included


@pytest.mark.parametrize("name", ["onnx", "onnx-edit"])
def test_onnx_model_matches_pytorch_in_onnxruntime(name, artifacts, model):
    import onnxruntime as ort

    from edit_mobile.models import load_transformer

    art_dir = artifacts / name
    data = manifest(art_dir)
    assert data["model"]["edit"] is (name == "onnx-edit")
    if data["model"]["edit"]:
        model = load_transformer(MODEL + "-edit")
    inputs, _ = load_test_vectors(art_dir)
    session = ort.InferenceSession(str(art_dir / data["files"]["program"]["path"]), providers=["CPUExecutionProvider"])
    feeds = {spec["name"]: tensor.numpy() for spec, tensor in zip(data["inputs"], inputs, strict=True)}
    (output,) = session.run(None, feeds)
    assert psnr_db(pytorch_output(model, inputs), torch.from_numpy(output)) >= PSNR_FLOORS_DB["fp32"]


def test_calibration_runs_the_flow_sampler_with_a_random_gemma2(calibration, model):
    from edit_mobile.calibration import load_calibration
    from edit_mobile.models import TransformerSignature

    calib = load_calibration(calibration)
    sampler = calib.manifest["sampler"]
    assert sampler["scheduler"] == "DPMSolverMultistepScheduler"
    assert sampler["config"]["use_flow_sigmas"] and sampler["config"]["flow_shift"] == 3.0
    assert sampler["config"]["prediction_type"] == "flow_prediction"
    assert calib.manifest["text_encoder"]["kind"] == "random-gemma2"
    signature = TransformerSignature.of(model, prompt_tokens=int(TOKENS))
    assert len(calib.calibration_inputs) == 6 and len(calib.heldout_inputs) == 4
    for record in calib.calibration_inputs + calib.heldout_inputs:
        assert [tuple(t.shape) for t in record] == [(1, 32, 4, 4), (1, 32, 32), (1, 32), (1,)]
    calib.check_matches(signature.inputs)
    assert torch.isfinite(pytorch_output(model, calib.calibration_inputs[0])).all()


@pytest.mark.parametrize("backend", ["xnnpack", "onnx"])
def test_validate_on_held_out_records_and_images_then_profile(backend, artifacts, calibration, tmp_path, capsys):
    """validate's images are drawn through the tiny DC-AE: 4 x 4 latents -> 128 px."""
    from PIL import Image

    art_dir = str(artifacts / backend)
    report, images, prompts = tmp_path / "report.json", tmp_path / "images.png", tmp_path / "prompts.txt"
    prompts.write_text("a red circle on a blue background\n")
    assert main(["validate", art_dir, "--samples", "2", "--calibration", str(calibration), "--images", str(images),
                 "--prompts", str(prompts), "--image-steps", "2", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    scores = {score["source"]: score for score in result["outputs"]}
    assert {"test_vectors", "heldout"} <= set(scores) and scores["heldout"]["samples"] == 2
    assert all(score["psnr_db_min"] >= PSNR_FLOORS_DB["fp32"] for score in scores.values())
    assert all(image["psnr_db"] >= IMAGE_FLOORS_DB["fp32"] for image in result["images"]["per_image"])
    assert len(result["images"]["per_image"]) == 1 and Image.open(images).width >= 2 * 128
    profile = tmp_path / "profile.json"
    assert main(["profile", art_dir, "--iters", "3", "--warmup", "1", "--json", str(profile)]) == 0
    result = json.loads(profile.read_text())
    assert result["latency_ms"]["runs"] == 3 and result["latency_ms"]["median"] > 0
    assert {"transformer_blocks.0", "transformer_blocks.1"} <= set(result["operators"]["by_block"])
    assert "latency" in capsys.readouterr().out


def test_tiny_vae_is_a_32x_dc_ae():
    from edit_mobile.models.vae import LatentDecoder, tiny_vae

    vae = tiny_vae("sana")
    assert type(vae).__name__ == "AutoencoderDC" and vae.config.scaling_factor == pytest.approx(0.41407)
    with torch.no_grad():
        image = LatentDecoder(vae, "sana")(torch.randn(1, 32, 4, 3))
    assert tuple(image.shape) == (1, 3, 128, 96) and 0 <= image.min() <= image.max() <= 1


def test_convert_gives_the_edit_student_with_every_sana_weight(model, tmp_path):
    from edit_mobile.models import TransformerSignature, convert, is_edit, load_transformer

    student = convert(model)
    assert type(student).__name__ == "SanaEDiTTransformer2DModel" and is_edit(student)
    teacher_state = model.state_dict()
    assert all(torch.equal(student.state_dict()[name], tensor) for name, tensor in teacher_state.items())
    student.save_pretrained(tmp_path / "student", safe_serialization=True)
    reloaded = load_transformer(tmp_path / "student")
    inputs = TransformerSignature.of(student, 160, 96).example_inputs()  # odd 5 x 3 token grid
    torch.testing.assert_close(pytorch_output(reloaded, inputs), pytorch_output(student, inputs), rtol=0, atol=1e-5)


def test_encoding_and_sampler_are_sana_pipelines():
    """What calibration and the runtime do (the random Gemma-2's encoding, the family's flow
    DPM-Solver with guidance) gives diffusers' SanaPipeline's embeddings and latents exactly."""
    from edit_mobile.calibration.pipeline_parts import load_pipeline_parts
    from edit_mobile.calibration.sampler import denoise
    from edit_mobile.models import DenoiserWrapper

    parts = load_pipeline_parts(MODEL, int(TOKENS))
    pipe, options = parts.diffusers_pipeline(), parts.family.pipeline_call_options(int(TOKENS))
    prompt, steps, guidance = "A red circle on a blue background", 4, 4.5
    encoded = parts.text.encode([prompt], guidance=True)
    positive, negative = encoded.positive.as_inputs(), encoded.negative.as_inputs()
    assert torch.equal(parts.family.diffusers_prompt_embeds(pipe, prompt, options), positive["encoder_hidden_states"])
    noise = torch.randn(1, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=128, width=128,
                    latents=noise.clone(), output_type="latent", **options).images
    names = ("hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep")
    _, latents = denoise(DenoiserWrapper(parts.transformer), names, parts.scheduler, noise, positive, negative,
                         steps, guidance, lambda step, branch: False)
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-5)


def test_a_sana_pipeline_folder_brings_its_gemma2_dc_ae_and_scheduler(sana_folder, tmp_path):
    from edit_mobile.calibration import load_calibration
    from edit_mobile.calibration.pipeline_parts import load_pipeline_parts

    parts = load_pipeline_parts(str(sana_folder), int(TOKENS))
    assert type(parts.vae).__name__ == "AutoencoderDC" and type(parts.text.text_encoder).__name__ == "Gemma2Model"
    assert parts.text.description["kind"] == "gemma2" and parts.scheduler.config.use_flow_sigmas
    directory = tmp_path / "calib"
    assert main(["calibrate", str(sana_folder), "--prompt-tokens", TOKENS, *CALIBRATION, "-o", str(directory)]) == 0
    calib = load_calibration(directory)
    assert calib.manifest["text_encoder"]["kind"] == "gemma2"
    assert [tuple(t.shape) for t in calib.calibration_inputs[0]] == [(1, 32, 4, 4), (1, 32, 32), (1, 32), (1,)]


def test_a_vae_of_another_class_is_refused_in_one_line(artifacts, tmp_path, capsys):
    from edit_mobile.models.vae import tiny_vae

    tiny_vae("pixart").save_pretrained(tmp_path / "vae")  # an 8x AutoencoderKL
    assert main(["generate", str(artifacts / "onnx"), "--prompt", "a red circle", "--vae", str(tmp_path / "vae"),
                 "-o", str(tmp_path / "image.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "AutoencoderKL" in err and "AutoencoderDC" in err
    assert not (tmp_path / "image.png").exists()
