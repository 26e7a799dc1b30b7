"""`export --pipeline`: text encoder, denoiser and VAE decoder as methods of one ExecuTorch program
with its weights once in model.ptd; `generate` runs it alone; `validate --pipeline` holds it to
diffusers' own PixArtSigmaPipeline (StableDiffusion3Pipeline for the shipped SD3 teacher). Real programs in the real ExecuTorch runtime.

The shapes pipeline here is a 2-step smoke run of training/train_teacher.py (a real pipeline
folder with the world's tokenizer and the shipped VAE; plumbing, not quality).
"""

import json

import pytest
import torch

from edit_mobile.export.pipeline import PipelineRequest, export_pipeline
from edit_mobile.pretrained import VAE_FOLDER

RESOLUTIONS = ((64, 64), (64, 128))


def run_cli(argv, capsys):
    from edit_mobile.main import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "tiny"
    return export_pipeline(PipelineRequest("tiny-pixart-edit", out, resolutions=RESOLUTIONS, weights="external"))


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    from edit_mobile.training import train_teacher

    root = tmp_path_factory.mktemp("shapes")
    (root / "pixart").mkdir()
    train_teacher.train("pixart", VAE_FOLDER, root / "pixart", stages=[(128, 2)], batch=4, lr=1e-3, seed=0,
                        images=8, text_steps=0, cache=root / "cache")
    return root / "pixart"


def unique_weight_bytes(*modules) -> int:
    seen = {}
    for module in modules:
        for tensor in module.state_dict().values():
            seen[(tensor.data_ptr(), tensor.shape)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def test_every_method_runs_and_the_weights_are_stored_once(tiny_artifact):
    from edit_mobile.calibration.pipeline_parts import load_pipeline_parts
    from edit_mobile.runtime.manifest import read_manifest
    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

    manifest = read_manifest(tiny_artifact)
    assert manifest.data["schema_version"] == 2
    methods = manifest.pipeline["methods"]
    assert sorted(methods) == ["decode_64x128", "decode_64x64", "denoise_64x128", "denoise_64x64", "encode_prompt"]
    assert all(record["passed"] for record in manifest.data["self_check"]["methods"].values())
    # Every method again, from the artifact alone, on its test vectors.
    artifact = PipelineArtifact(tiny_artifact)
    from safetensors.torch import load_file

    vectors = load_file(tiny_artifact / "test_vectors.safetensors")
    for name, spec in methods.items():
        outputs = artifact.run(name, {item["name"]: vectors[f"{name}.input.{item['name']}"] for item in spec["inputs"]})
        for item in spec["outputs"]:
            expected = vectors[f"{name}.output.{item['name']}"]
            assert list(outputs[item["name"]].shape) == item["shape"]
            torch.testing.assert_close(outputs[item["name"]], expected, rtol=1e-3, atol=1e-4)
    # Two resolutions, one copy: model.ptd holds each weight once (the decoder's too).
    parts = load_pipeline_parts("tiny-pixart-edit")
    once = unique_weight_bytes(parts.transformer, parts.text.text_encoder, parts.vae.decoder, parts.vae.post_quant_conv)
    stored = manifest.file("weights").bytes
    assert 0.9 * once <= stored <= 1.1 * once, (stored, once)
    assert manifest.file("program").bytes < 0.5 * once


def test_generate_matches_diffusers_pipeline(tiny_artifact, tmp_path, capsys):
    from PIL import Image

    from edit_mobile.runtime.validate_pipeline import validate_pipeline

    report = validate_pipeline(tiny_artifact, ["a red circle"], steps=3, resolution=(64, 128))
    row = report.prompts[0]
    assert report.passed and row["image_psnr_db"] >= 40 and row["embeddings_psnr_db"] >= 60, row
    assert len(report.bundled) == 5 and all(case["passed"] for case in report.bundled)  # one a method
    image = tmp_path / "cat.png"
    code, _ = run_cli(["generate", str(tiny_artifact), "--prompt", "a red circle", "--steps", "3",
                       "--size", "64x128", "-o", str(image)], capsys)
    assert code == 0
    assert Image.open(image).size == (128, 64)  # (width, height)
    assert report.images[0][1].tobytes() == Image.open(image).tobytes()  # the same run, the same pixels


def test_fixed_prompts_ship_embeddings_instead_of_the_text_encoder(tmp_path, capsys, java_classes):
    """--fixed-prompts: no encode_prompt and no tokenizer on the phone; the prompts' rows of
    prompts.safetensors draw what diffusers' pipeline draws and what the Android app's Java draws,
    and other prompts are refused (by both)."""
    import subprocess

    from edit_mobile.runtime.manifest import read_manifest
    from edit_mobile.runtime.validate_pipeline import validate_pipeline

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# the app's two prompts\na red circle\na blue square on a yellow background\n")
    art = tmp_path / "fixed"
    code, err = run_cli(["export", "tiny-pixart-edit", "--backend", "xnnpack", "--pipeline", "--resolution", "64",
                         "--fixed-prompts", str(prompts), "-o", str(art)], capsys)
    assert code == 0, err
    manifest = read_manifest(art)
    assert sorted(manifest.pipeline["methods"]) == ["decode_64x64", "denoise_64x64"]
    precomputed = manifest.pipeline["text"]["precomputed"]
    assert precomputed["prompts"] == ["a red circle", "a blue square on a yellow background"]
    assert "tokenizer" not in manifest.data["files"] and manifest.has("prompts")
    report = validate_pipeline(art, steps=3)  # the artifact's own prompts, guided: row 0 is ""
    assert [row["prompt"] for row in report.prompts] == precomputed["prompts"]
    assert report.passed and all(row["embeddings_psnr_db"] >= 60 for row in report.prompts), report.prompts
    profiled = tmp_path / "profile.json"
    code, _ = run_cli(["profile", str(art), "--iters", "1", "--warmup", "0", "--json", str(profiled)], capsys)
    image = json.loads(profiled.read_text())["image_ms"]["64x64"]
    assert code == 0 and image["encode"] == 0 and image["total"] > 0  # embeddings are read, not computed
    code, err = run_cli(["generate", str(art), "--prompt", "a green triangle", "--steps", "2", "-o",
                         str(tmp_path / "x.png")], capsys)
    assert code == 2 and "2 fixed prompts" in err and not (tmp_path / "x.png").exists()
    # The Android app's TextToImage (plain Java) draws the fixed prompt as generate does, from the
    # same rows: no encode_prompt call, 2 guided denoise calls a step, one decode.
    request = {"prompt": "a blue square on a yellow background", "steps": 2, "guidance": 4.5, "seed": 3,
               "size": [64, 64]}
    answer, python_rgb, java_rgb = replay_in_java(art, request, java_classes, tmp_path)
    assert answer["calls"] == answer["recorded_calls"] == 2 * 2 + 1 and "encode_prompt" not in answer["worst_input_error"]
    assert answer["worst_input_error"]["denoise"] < 1e-5 and answer["worst_input_error"]["decode"] < 1e-5, answer
    assert abs(java_rgb.astype(int) - python_rgb).max() <= 1
    (tmp_path / "request.json").write_text(json.dumps({**request, "prompt": "a green triangle"}))
    app = subprocess.run(["java", "-cp", str(java_classes), "PipelineCheck", "generate", str(art),
                          str(tmp_path / "calls.safetensors"), str(tmp_path / "request.json")],
                         capture_output=True, text=True, timeout=300)
    assert app.returncode == 3 and "2 fixed prompts" in json.loads(app.stdout.splitlines()[-1])["error"], app.stdout


def test_bundled_cases_fail_past_their_tolerance(tiny_artifact):
    from edit_mobile.runtime.executorch_session import verify_pipeline_bundle
    from edit_mobile.runtime.manifest import read_manifest

    checks = verify_pipeline_bundle(read_manifest(tiny_artifact), relative_error=-1.0)  # no output can meet it
    assert len(checks) == 5 and not any(check.passed for check in checks)


def test_profile_times_every_method_and_one_image(tiny_artifact, tmp_path, capsys):
    out = tmp_path / "profile.json"
    code, _ = run_cli(["profile", str(tiny_artifact), "--iters", "2", "--warmup", "0", "--json", str(out)], capsys)
    result = json.loads(out.read_text())
    assert code == 0 and len(result["methods"]) == 5 and result["load_ms"] > 0
    assert all(stats["runs"] == 2 and 0 < stats["min"] <= stats["median"] for stats in result["methods"].values())
    image = result["image_ms"]["64x128"]  # 20 steps, guided, batch 1: two denoise calls a step
    expected = 20 * 2 * result["methods"]["denoise_64x128"]["median"]
    assert image["guided"] and abs(image["total"] - image["encode"] - image["decode"] - expected) < 1e-6


def test_a_nan_image_fails_the_pipeline_floor():
    from edit_mobile.closeness import peak_psnr_db
    from edit_mobile.runtime.validate_pipeline import PipelineReport

    psnr = peak_psnr_db(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), float("nan")), 1.0)
    report = PipelineReport("x", "fp32", 40.0, {}, [{"image_psnr_db": psnr}])
    assert not report.passed


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline-onnx") / "tiny"
    return export_pipeline(PipelineRequest("tiny-pixart-edit", out, resolutions=RESOLUTIONS, backend="onnx"))


def external_tensors(path) -> dict[str, tuple[int, int]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {t.name: tuple(int(e.value) for e in t.external_data if e.key in ("offset", "length"))
            for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}


def test_an_onnx_pipeline_runs_in_onnxruntime_with_its_weights_once(onnx_artifact):
    from safetensors.torch import load_file

    from edit_mobile.runtime.manifest import read_manifest
    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact
    from edit_mobile.runtime.validate_pipeline import validate_pipeline

    manifest = read_manifest(onnx_artifact)
    methods = manifest.pipeline["methods"]
    assert sorted(methods) == ["decode_64x128", "decode_64x64", "denoise_64x128", "denoise_64x64", "encode_prompt"]
    assert manifest.data["self_check"]["runtime"] == "onnxruntime" and manifest.data["self_check"]["passed"]
    artifact = PipelineArtifact(onnx_artifact)
    assert artifact.methods.runtime == "onnxruntime"
    vectors = load_file(onnx_artifact / "test_vectors.safetensors")
    for name, spec in methods.items():
        outputs = artifact.run(name, {item["name"]: vectors[f"{name}.input.{item['name']}"] for item in spec["inputs"]})
        for item in spec["outputs"]:
            torch.testing.assert_close(outputs[item["name"]], vectors[f"{name}.output.{item['name']}"],
                                       rtol=1e-3, atol=1e-4)
    # Both sizes' denoisers point at the same stored bytes: together they add at most a few
    # size-dependent constants to one of them.
    small, large = (external_tensors(manifest.file(methods[name]["file"]).path)
                    for name in ("denoise_64x64", "denoise_64x128"))
    one = sum(length for _, length in small.values())
    both = sum(length for _, length in set(small.values()) | set(large.values()))
    assert one > 0 and both <= 1.05 * one, (one, both)
    report = validate_pipeline(onnx_artifact, ["a red circle"], steps=3, resolution=(64, 128))
    assert report.passed and report.prompts[0]["image_psnr_db"] >= 40 and report.bundled == []


def test_an_onnx_pipeline_refuses_external_data_outside_it(onnx_artifact, tmp_path):
    import shutil

    import onnx

    from edit_mobile.errors import UserError
    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

    art = tmp_path / "art"
    shutil.copytree(onnx_artifact, art)
    path = art / "encode_prompt.onnx"
    model = onnx.load(str(path), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    next(e for e in tensor.external_data if e.key == "location").value = "../../outside.bin"
    onnx.save_model(model, str(path))
    from edit_mobile.fileio import sha256_file

    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["method.encode_prompt"].update(sha256=sha256_file(path), bytes=path.stat().st_size)
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="outside the artifact"):
        PipelineArtifact(art)


def test_a_core_ml_pipeline_is_a_package_a_component_with_a_function_a_size(tmp_path):
    """Converted and inspected only: Core ML runs on Apple systems, not here."""
    import coremltools as ct

    from edit_mobile.calibration.pipeline_parts import load_pipeline_parts
    from edit_mobile.errors import UserError
    from edit_mobile.runtime.manifest import read_manifest
    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

    art = export_pipeline(PipelineRequest("tiny-pixart-edit", tmp_path / "art", resolutions=RESOLUTIONS,
                                          backend="coreml", precision="fp16"))
    manifest = read_manifest(art)
    methods = manifest.pipeline["methods"]
    assert manifest.data["self_check"]["ran"] is False and "Apple" in manifest.data["self_check"]["reason"]
    assert {methods[name]["file"] for name in methods} == {"program", "component.text_encoder", "component.decoder"}
    denoiser = ct.utils.load_spec(str(manifest.file("program").path)).description
    functions = {f.name: [list(i.type.multiArrayType.shape) for i in f.input] for f in denoiser.functions}
    assert functions == {name: [item["shape"] for item in methods[name]["inputs"]]
                         for name in ("denoise_64x64", "denoise_64x128")}
    assert methods["denoise_64x128"]["function"] == "denoise_64x128" and methods["encode_prompt"]["function"] == "main"
    # Two functions, one copy of the fp16 weights.
    weights = next(manifest.file("program").path.rglob("weight.bin")).stat().st_size
    fp16_bytes = 2 * sum(t.numel() for t in load_pipeline_parts("tiny-pixart-edit").transformer.state_dict().values())
    assert 0.5 * fp16_bytes <= weights <= 1.2 * fp16_bytes, (weights, fp16_bytes)
    with pytest.raises(UserError, match="cannot run"):
        PipelineArtifact(art)


@pytest.fixture(scope="module")
def quantized_calibration(tmp_path_factory):
    from edit_mobile.main import main

    root = tmp_path_factory.mktemp("quantized-calib")
    assert main(["calibrate", "tiny-pixart-edit", "--resolution", "64", "--steps", "2", "--samples", "2",
                 "--records", "4", "--heldout-records", "2", "-o", str(root / "calib")]) == 0
    return root / "calib"


@pytest.fixture(scope="module")
def quantized_artifact(tmp_path_factory, quantized_calibration):
    """tiny-pixart-edit with its denoise method int8-static at the calibration set's 64x64. Random
    weights quantize badly (about 11 dB on the worst held-out record): written with
    --allow-below-floor, the plumbing is what is tested here; the trained teacher's figures are
    measured by bench/shapes_quality.py."""
    from edit_mobile.main import main

    root = tmp_path_factory.mktemp("quantized")
    assert main(["export", "tiny-pixart-edit", "--backend", "xnnpack", "--pipeline", "--quantize", "int8",
                 "--calibration", str(quantized_calibration), "--allow-below-floor", "-o", str(root / "art")]) == 0
    return root / "art", quantized_calibration


def check_quantized_denoise_method(art, calib):
    """What every quantized pipeline holds, whatever its backend: the calibration set's one size,
    the denoise method alone int8-static, its test vector a held-out record judged at the
    quantized floor, whole sampler runs judged against float, `validate --pipeline` at the
    quantized floor. Returns (manifest, validate report)."""
    from safetensors.torch import load_file

    from edit_mobile.calibration import load_calibration
    from edit_mobile.runtime.manifest import read_manifest
    from edit_mobile.runtime.validate_pipeline import validate_pipeline

    manifest = read_manifest(art)
    methods = manifest.pipeline["methods"]
    assert sorted(methods) == ["decode_64x64", "denoise_64x64", "encode_prompt"]  # the set's one size
    assert methods["denoise_64x64"]["quantization"] == "int8-static" and "quantization" not in methods["decode_64x64"]
    assert manifest.quantization["scheme"] == "int8-static" and manifest.quantization["calibration"]["records"]
    # The quantized method's test vector is a held-out record, judged at the quantized floor.
    held_out = load_calibration(calib).heldout_inputs[0]
    vectors = load_file(art / "test_vectors.safetensors")
    torch.testing.assert_close(vectors["denoise_64x64.input.hidden_states"], held_out[0], rtol=0, atol=0)
    checked = manifest.data["self_check"]["methods"]
    assert checked["denoise_64x64"]["floor_db"] == 30 and checked["encode_prompt"]["floor_db"] == 60
    # Whole sampler runs of the held-out prompt, float against int8, judged at the image floor.
    images = manifest.quantization["sampler_images"]
    assert images["prompts"] == 1 and images["steps"] == 2 and images["floor_db"] == 25
    assert all(0 < value < 100 for value in images["image_psnr_db"])
    assert manifest.data["self_check"]["passed"] == (checked["denoise_64x64"]["passed"] and images["passed"])
    # int8 arithmetic in the program: far from float's agreement, which the float methods keep.
    assert checked["denoise_64x64"]["psnr_db_min"] < 50 < 100 < checked["encode_prompt"]["psnr_db_min"]
    report = validate_pipeline(art, ["a red circle"], steps=2)
    assert report.precision == "quantized" and report.floor_db < 40
    return manifest, report


def test_a_quantized_pipeline_quantizes_the_denoiser_on_held_out_records(quantized_artifact):
    _, report = check_quantized_denoise_method(*quantized_artifact)
    assert all(case["passed"] for case in report.bundled)  # the device reproduces the host's int8 outputs


def test_an_onnx_pipeline_quantizes_its_written_denoiser(quantized_calibration, tmp_path):
    """onnx --pipeline --quantize int8: the denoise model QDQ int8 (onnxruntime.quantization on the
    written model), encode_prompt and decode float; judged as the XNNPACK pipeline is, on a
    held-out record at the quantized floor and on whole sampler runs (in onnxruntime) against
    float. Random weights: --allow-below-floor, as for XNNPACK's plumbing test above."""
    import onnx

    from edit_mobile.main import main

    art = tmp_path / "art"
    assert main(["export", "tiny-pixart-edit", "--backend", "onnx", "--pipeline", "--quantize", "int8",
                 "--calibration", str(quantized_calibration), "--allow-below-floor", "-o", str(art)]) == 0
    manifest, _ = check_quantized_denoise_method(art, quantized_calibration)
    assert manifest.data["self_check"]["runtime"] == "onnxruntime" and manifest.quantization["heldout_records"] == 2
    ops = {name: {node.op_type for node in onnx.load(str(manifest.file(spec["file"]).path),
                                                     load_external_data=False).graph.node}
           for name, spec in manifest.pipeline["methods"].items()}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["denoise_64x64"]
    assert not ops["encode_prompt"] & {"QuantizeLinear", "DequantizeLinear"}
    assert not ops["decode_64x64"] & {"QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def shapes_artifact(shapes_folder, tmp_path_factory):
    from edit_mobile.main import main

    out = tmp_path_factory.mktemp("shapes-art") / "art"
    assert main(["export", str(shapes_folder), "--backend", "xnnpack", "--pipeline", "-o", str(out)]) == 0  # 256 px
    return out


def test_shapes_pipeline_folder_exports_with_its_tokenizer(shapes_folder, shapes_artifact):
    from edit_mobile.calibration.pipeline_parts import load_pipeline_parts

    manifest = json.loads((shapes_artifact / "manifest.json").read_text())
    assert manifest["program"]["weights"] == "embedded" and "weights" not in manifest["files"]  # auto, < 1 GiB
    parts = load_pipeline_parts(str(shapes_folder))
    once = unique_weight_bytes(parts.transformer, parts.text.text_encoder, parts.vae.decoder, parts.vae.post_quant_conv)
    assert once <= manifest["files"]["program"]["bytes"] <= 1.2 * once  # embedded, still once
    assert manifest["pipeline"]["text"]["tokenizer_class"] != "ByT5Tokenizer"  # the world's own
    assert manifest["pipeline"]["text"]["max_length"] == 32  # its tokenizer's, not PixArt's 300
    scheduler = manifest["pipeline"]["scheduler"]["config"]  # the folder's: flow sigmas, as trained
    assert scheduler["prediction_type"] == "flow_prediction" and scheduler["use_flow_sigmas"]
    assert manifest["pipeline"]["defaults"] == {"steps": 20, "guidance": 2.0}  # the folder's, measured
    from edit_mobile.runtime.validate_pipeline import validate_pipeline

    report = validate_pipeline(shapes_artifact, ["a small red circle in the top left on a white background"], steps=2)
    assert report.passed, report.prompts


def test_evaluate_scores_a_pipeline_artifact_as_diffusers_pipeline(shapes_folder, shapes_artifact):
    from edit_mobile.runtime.evaluate import Settings, evaluate

    report, shown = evaluate(shapes_artifact, ["seen"], samples=2, settings=Settings(steps=2), teacher=str(shapes_folder))
    assert len(shown) == 2 and report["image_psnr_vs_teacher"] >= 40  # the same images, 8-bit


@pytest.fixture(scope="module")
def sd3_artifact(tmp_path_factory):
    """The shipped shapes SD3 teacher's pipeline: CLIP-L, CLIP-G and T5 with their own tokenizers."""
    from edit_mobile.pretrained import pipeline_folder

    out = tmp_path_factory.mktemp("sd3-art") / "art"
    return export_pipeline(PipelineRequest(str(pipeline_folder("shapes-sd3")), out))


def test_an_sd3_pipeline_tokenizes_three_ways_and_draws_as_stable_diffusion_3_pipeline(sd3_artifact, tmp_path,
                                                                                        capsys):
    from PIL import Image

    from edit_mobile.runtime.validate_pipeline import validate_pipeline

    manifest = json.loads((sd3_artifact / "manifest.json").read_text())
    tokenizers = manifest["pipeline"]["text"]["tokenizers"]
    assert [t["input_ids"] for t in tokenizers] == ["clip_l_input_ids", "clip_g_input_ids", "t5_input_ids"]
    assert [t["tokenizer_class"] for t in tokenizers] == ["CLIPTokenizer", "CLIPTokenizer", "T5Tokenizer"]
    assert all((sd3_artifact / t["files"] / "tokenizer.json").is_file() for t in tokenizers)
    assert "max_length" not in manifest["pipeline"]["text"]  # no one-tokenizer field to misread
    encode = manifest["pipeline"]["methods"]["encode_prompt"]
    assert [o["name"] for o in encode["outputs"]] == ["encoder_hidden_states", "pooled_projections"]
    assert manifest["pipeline"]["scheduler"]["class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert manifest["pipeline"]["defaults"] == {"steps": 20, "guidance": 3.0}  # the folder's, measured
    report = validate_pipeline(sd3_artifact, ["a large green triangle in the bottom right on a black background"],
                               steps=3)
    row = report.prompts[0]
    assert report.passed and row["embeddings_psnr_db"] >= 60 and row["image_psnr_db"] >= 40, row
    assert len(report.bundled) == 3 and all(case["passed"] for case in report.bundled)
    image = tmp_path / "triangle.png"
    code, _ = run_cli(["generate", str(sd3_artifact), "--prompt", "a large green triangle in the bottom right on a "
                       "black background", "--steps", "3", "-o", str(image)], capsys)
    assert code == 0 and report.images[0][1].tobytes() == Image.open(image).tobytes()


def replay_in_java(art, request: dict, java_classes, tmp_path):
    """`generate --noise portable` on `art` in Python, its program calls recorded, then the app's
    TextToImage (plain Java, JVM) on the same request with those calls replayed (ReplayRunner: a
    test double for the phone's ExecuTorch), so tokenizers, noise, scheduler, guidance, call
    inputs and pixels are all Java's. (PipelineCheck's answer, Python's and Java's pixels)."""
    import subprocess

    import numpy as np
    from safetensors.torch import save_file

    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

    size = tuple(request["size"])
    artifact = PipelineArtifact(art)
    artifact.calls = []
    settings = artifact.default_settings(request["steps"], request["guidance"], request["seed"])
    stages = artifact.generate(request["prompt"], settings, size, noise="portable")
    recording = {}
    for number, (method, inputs, outputs) in enumerate(artifact.calls):
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for j, tensor in enumerate(tensors):
                recording[f"call.{number:04d}.{method}.{kind}.{j}"] = tensor.clone()
    save_file(recording, str(tmp_path / "calls.safetensors"))
    (tmp_path / "request.json").write_text(json.dumps(request))
    completed = subprocess.run(["java", "-cp", str(java_classes), "PipelineCheck", "generate", str(art),
                                str(tmp_path / "calls.safetensors"), str(tmp_path / "request.json")],
                               capture_output=True, text=True, timeout=300)
    answer = json.loads(completed.stdout.splitlines()[-1])
    assert completed.returncode == 0, answer
    java_rgb = np.asarray(answer.pop("rgb"), dtype=np.uint8).reshape(*size, 3)
    return answer, np.asarray(stages.image()), java_rgb


def assert_java_draws_as_python(answer, python_rgb, java_rgb, calls: int) -> None:
    import numpy as np

    assert answer["calls"] == answer["recorded_calls"] == calls, answer
    assert answer["worst_input_error"]["encode_prompt"] == 0, answer  # token ids: identical
    assert answer["worst_input_error"]["denoise"] < 1e-5 and answer["worst_input_error"]["decode"] < 1e-5, answer
    assert np.abs(java_rgb.astype(int) - python_rgb).max() <= 1 and (java_rgb == python_rgb).mean() > 0.99


def test_the_android_pipeline_draws_what_generate_draws(shapes_artifact, java_classes, tmp_path):
    """The app's TextToImage against `generate --noise portable` on a PixArt pipeline (one T5
    tokenizer, lower-cased and stripped)."""
    request = {"prompt": "A Large Blue Square at the bottom right on a yellow background ", "steps": 3,
               "guidance": 4.5, "seed": 7, "size": [256, 256]}
    answer, python_rgb, java_rgb = replay_in_java(shapes_artifact, request, java_classes, tmp_path)
    assert_java_draws_as_python(answer, python_rgb, java_rgb, 2 + 3 * 2 + 1)  # 2 prompts, 3 guided steps, decode


def test_the_android_pipeline_draws_an_sd3_pipeline_as_generate_does(sd3_artifact, java_classes, tmp_path):
    """The same on the shipped SD3 teacher's pipeline: CLIP-L, CLIP-G and T5 ids (prompt as typed,
    capitals and trailing space kept), pooled projections beside the hidden states, and
    FlowMatchEulerDiscreteScheduler's shifted sigmas as timesteps."""
    manifest = json.loads((sd3_artifact / "manifest.json").read_text())
    assert [t["preprocessing"] for t in manifest["pipeline"]["text"]["tokenizers"]] == ["none"] * 3
    request = {"prompt": "A Large Green Triangle in the Bottom Right on a black background ", "steps": 3,
               "guidance": 3.0, "seed": 11, "size": [256, 256]}
    answer, python_rgb, java_rgb = replay_in_java(sd3_artifact, request, java_classes, tmp_path)
    assert_java_draws_as_python(answer, python_rgb, java_rgb, 2 + 3 * 2 + 1)  # batch-1 denoiser: 2 calls a step


def test_the_android_apps_pipeline_keys_are_what_export_writes(tiny_artifact):
    import re
    from pathlib import Path

    java = Path(__file__).resolve().parents[1] / "android_demo/app/src/main/java/org/editmobile/demo"
    block = re.search(r"// BEGIN PIPELINE KEYS(.*?)// END PIPELINE KEYS", (java / "PipelineSpec.java").read_text(), re.S)
    keys = dict(re.findall(r'static final String (\w+) = "([^"]+)";', block.group(1)))
    manifest = json.loads((tiny_artifact / "manifest.json").read_text())
    pipeline = manifest["pipeline"]
    (entry,) = pipeline["text"]["tokenizers"]  # PixArt: one, also described by the older text fields
    where = {"P": pipeline, "METHOD": pipeline["methods"]["encode_prompt"], "TEXT": pipeline["text"],
             "DEFAULTS": pipeline["defaults"], "TOKENIZER": entry}
    for name, value in keys.items():
        prefix = name.split("_")[0]
        if prefix in where:
            assert value in where[prefix], name
    assert keys["ENCODE_METHOD"] in pipeline["methods"]
    assert keys["FIXED_PROMPTS_TEXT"] == "precomputed"  # what export --fixed-prompts writes (test above)
    assert keys["PREPROCESSING_LOWER_STRIP"] == pipeline["text"]["preprocessing"] == entry["preprocessing"]
    from edit_mobile.calibration.token_inputs import PREPROCESSINGS

    assert {keys["PREPROCESSING_LOWER_STRIP"], keys["PREPROCESSING_NONE"]} == set(PREPROCESSINGS)
    # An older artifact's one tokenizer fills the inputs PixArt's entry names.
    assert pipeline["text"][keys["TEXT_TOKENIZER"]] == entry["files"]
    assert (keys["OLDER_INPUT_IDS"], keys["OLDER_ATTENTION_MASK"]) == (entry["input_ids"], entry["attention_mask"])
    top = re.search(r'TOP_PIPELINE = "(\w+)"', (java / "ArtifactManifest.java").read_text()).group(1)
    assert top in manifest and manifest["files"]["tokenizer"] and manifest["files"]["scheduler"]


def test_the_ios_apps_pipeline_keys_are_the_android_apps_and_what_export_writes(tiny_artifact):
    import re
    from pathlib import Path

    apps = Path(__file__).resolve().parents[1]
    java_block = re.search(r"// BEGIN PIPELINE KEYS(.*?)// END PIPELINE KEYS",
                           (apps / "android_demo/app/src/main/java/org/editmobile/demo/PipelineSpec.java").read_text(), re.S)
    java = dict(re.findall(r'static final String (\w+) = "([^"]+)";', java_block.group(1)))
    swift_block = re.search(r"// BEGIN PIPELINE KEYS(.*?)// END PIPELINE KEYS",
                            (apps / "ios_demo/EDiTDemo/PipelineSpec.swift").read_text(), re.S)
    swift = {re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper(): value  # camel -> the Java SNAKE name
             for name, value in re.findall(r'static let (\w+) = "([^"]+)"', swift_block.group(1))}
    # iOS reads the scheduler from the manifest (Android from the scheduler/ folder): those keys
    # are checked on the export; every other key is the Android app's, by name and value.
    scheduler = {k: swift.pop(k) for k in ("P_SCHEDULER", "SCHEDULER_CLASS_NAME", "SCHEDULER_CONFIG")}
    assert swift and {k: java.get(k) for k in swift} == swift
    written = json.loads((tiny_artifact / "manifest.json").read_text())["pipeline"][scheduler["P_SCHEDULER"]]
    assert written[scheduler["SCHEDULER_CLASS_NAME"]] in ("DPMSolverMultistepScheduler", "FlowMatchEulerDiscreteScheduler")
    assert isinstance(written[scheduler["SCHEDULER_CONFIG"]], dict)


@pytest.mark.parametrize(("argv", "message"), [
    (["--backend", "vulkan", "--pipeline"], "--pipeline exports to xnnpack, onnx, coreml so far"),
    (["--backend", "coreml", "--pipeline", "--resolution", "64", "128", "--coreml-target", "iOS17"], "need iOS18"),
    (["--backend", "onnx", "--pipeline", "--weights", "embedded"], "--weights applies to xnnpack"),
    (["--backend", "xnnpack", "--pipeline", "--resolution", "64", "64"], "lists a size twice"),
    (["--backend", "xnnpack", "--resolution", "64", "128"], "several --resolution values need --pipeline"),
    (["--backend", "xnnpack", "--pipeline", "--no-passes"], "do not apply with --pipeline"),
    (["--backend", "xnnpack", "--pipeline", "--quantize", "int8"], "needs --calibration"),
    (["--backend", "xnnpack", "--pipeline", "--min-psnr", "30"], "apply only with --quantize"),
    (["--backend", "xnnpack", "--pipeline", "--quantize", "int8", "--precision", "fp16"], "drop --precision fp16"),
    (["--backend", "xnnpack", "--fixed-prompts", "p.txt"], "add --pipeline"),
    (["--backend", "xnnpack", "--pipeline", "--fixed-prompts", "p.txt", "--text-encoder-quantize", "int8-dynamic"],
     "drop --text-encoder-quantize"),
    (["--backend", "coreml", "--pipeline", "--quantize", "int8"], "exports to xnnpack and onnx so far"),
])
def test_bad_pipeline_requests_are_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "art"
    code, err = run_cli(["export", "tiny-pixart", *argv, "-o", str(out)], capsys)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_generate_refuses_a_size_the_artifact_lacks(tiny_artifact, tmp_path, capsys):
    code, err = run_cli(["generate", str(tiny_artifact), "--prompt", "x", "--size", "128", "-o",
                         str(tmp_path / "x.png")], capsys)
    assert code == 2 and "draws at 64x64, 64x128" in err, err


def test_a_v2_manifest_without_a_resolutions_decoder_is_refused(tiny_artifact, tmp_path):
    import shutil

    from edit_mobile.errors import UserError
    from edit_mobile.runtime.manifest import read_manifest

    copy = tmp_path / "art"
    shutil.copytree(tiny_artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    del data["pipeline"]["methods"]["decode_64x64"]
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="decode_64x64"):
        read_manifest(copy)
