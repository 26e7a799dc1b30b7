"""edit-mobile validate: good artifacts pass, a program with one perturbed layer fails, naming the
output, and the per-layer report points at that layer (ExecuTorch via ETDump, ONNX via its
intermediate values)."""

from __future__ import annotations

import json

import pytest
from test_runtime_artifacts import PERTURBED_WEIGHT, artifact, copy_artifact, perturb_program_weight

from edit_mobile.main import main

PERTURBED_LAYER = PERTURBED_WEIGHT.rsplit(".", 1)[0]  # transformer_blocks.1.ff.net.2


def _validate(tmp_path, art, *options) -> tuple[int, dict]:
    report = tmp_path / "report.json"
    code = main(["validate", str(art), "--samples", "2", "--json", str(report), *options])
    return code, json.loads(report.read_text())


@pytest.mark.parametrize("kind", ["xnnpack", "onnx"])
def test_a_faithful_artifact_passes_on_test_vectors_and_random_inputs(kind, tmp_path, capsys):
    code, report = _validate(tmp_path, artifact(kind))
    assert code == 0 and report["passed"] and "PASS" in capsys.readouterr().out
    assert {score["source"] for score in report["outputs"]} == {"test_vectors", "random"}
    for score in report["outputs"]:
        assert score["psnr_db_min"] > 60 and score["cosine_min"] > 0.999999 and score["max_abs"] < 1e-3
    assert report["reference_check"][0]["psnr_db_min"] >= 80  # reference/ reproduces the stored outputs
    if kind == "xnnpack":  # the .bpte's own test case, verified inside the ExecuTorch runtime
        assert [case["passed"] for case in report["bundled_program"]] == [True]


@pytest.mark.parametrize("kind", ["xnnpack", "onnx"])
def test_a_perturbed_layer_fails_validation_and_per_layer_points_at_it(kind, tmp_path, capsys):
    art = copy_artifact(kind, tmp_path / "art")
    perturb_program_weight(art)
    code, report = _validate(tmp_path, art, "--per-layer")
    out = capsys.readouterr().out
    assert code == 1 and not report["passed"]
    assert "FAIL noise_pred: worst PSNR" in out and all("noise_pred" in failure for failure in report["failures"])
    layers = report["per_layer"]
    assert layers["first_layers"][0] == PERTURBED_LAYER, layers["gap_opens_at"]
    first_failing = layers["gap_opens_at"][0]["order"]
    earlier = [row for row in layers["rows"] if row["order"] < first_failing]
    assert len(earlier) > 10 and all(row["psnr_db"] >= 60 for row in earlier)  # block 0 and more stay exact
    assert any(row["module"].startswith("transformer_blocks.0") for row in earlier)


def test_held_out_calibration_inputs_are_used_when_given(tmp_path):
    from edit_mobile.calibration import CalibrationOptions, capture_calibration

    calibration = capture_calibration(
        "tiny-pixart-edit", tmp_path / "calib", progress=False,
        options=CalibrationOptions(steps=2, samples=4, records=4, heldout_records=3),
    )
    code, report = _validate(tmp_path, artifact("onnx"), "--calibration", str(calibration))
    heldout = next(score for score in report["outputs"] if score["source"] == "heldout")
    assert code == 0 and heldout["samples"] == 2 and heldout["psnr_db_min"] > 60


def test_images_compare_artifact_and_pytorch_side_by_side(tmp_path):
    from PIL import Image

    grid, prompts = tmp_path / "grid.png", tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na red bicycle against a blue wall\nfog over a pine forest at dawn\n")
    code, report = _validate(tmp_path, artifact("onnx"), "--samples", "0", "--images", str(grid),
                             "--image-steps", "2", "--prompts", str(prompts))
    assert code == 0 and Image.open(grid).size[0] >= 2 * 128
    images = report["images"]["per_image"]
    assert [image["prompt"] for image in images] == ["a red bicycle against a blue wall", "fog over a pine forest at dawn"]
    assert all(image["psnr_db"] > 40 for image in images)  # an fp32 artifact: the same pictures


def test_a_quantized_artifact_below_the_floor_is_refused_kept_on_request_and_failed_by_validate(tmp_path, capsys):
    """int8 of the random tiny model: its worst held-out record is far below the 30 dB floor
    (measured 19 dB; random weights quantize unlike trained ones). Export refuses it, keeps it
    with --allow-below-floor (said in the manifest), and validate fails it on the worst record,
    whatever export measured. Its bundle holds the host's ExecuTorch outputs (the device must
    reproduce them)."""
    from executorch.extension.pybindings import portable_lib

    from edit_mobile.calibration import CalibrationOptions, capture_calibration

    calibration = capture_calibration(
        "tiny-pixart-edit", tmp_path / "calib", progress=False,
        options=CalibrationOptions(steps=2, samples=4, records=4, heldout_records=3),
    )
    art = tmp_path / "int8"
    export = ["export", "tiny-pixart-edit", "--backend", "xnnpack", "--quantize", "int8",
              "--calibration", str(calibration), "-o", str(art)]
    assert main([*export, "--allow-below-floor"]) == 0
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["quantization"]["scheme"] == "int8-static"  # the alias
    checked = manifest["self_check"]
    assert checked["allowed_below_floor"] and checked["psnr_db_min"] < 30 <= checked["floor_db"]
    # Without --allow-below-floor the same self-check refuses it (one export spared: the rule is
    # enforce_floor's, and a refused export leaves nothing, as atomic_output_dir guarantees).
    from edit_mobile.errors import UserError
    from edit_mobile.export.self_check import enforce_floor

    record = {key: value for key, value in checked.items() if key != "allowed_below_floor"}
    with pytest.raises(UserError, match="below the 30 dB floor; nothing was written"):
        enforce_floor(record, "xnnpack int8-static", allow_below_floor=False)
    assert any("sampler diverged" in warning for warning in manifest["calibration_warnings"])
    bundle = portable_lib._load_bundled_program_from_buffer((art / "model.bpte").read_bytes())
    bundle.verify_result_with_bundled_expected_output("forward", 0, 0.0, 1e-6)  # raises if not
    code, report = _validate(tmp_path, art, "--calibration", str(calibration))
    heldout = next(row for row in report["outputs"] if row["source"] == "heldout")
    assert code == 1 and not report["passed"] and report["verdict_inputs"] == ["heldout"]
    assert heldout["psnr_db_min"] < 30 and heldout["per_timestep_bucket"]
    assert any("worst PSNR" in failure for failure in report["failures"])


def test_per_layer_on_an_fp16_program_reports_instead_of_crashing(tmp_path, capsys):
    """ExecuTorch's ETDump reader rejects the debug events of fp16 XNNPACK programs (events
    without a name): validate keeps its verdict and says why there are no per-layer values."""
    from export_artifacts import exported

    art = exported("tiny-pixart-edit", "xnnpack", resolution=(64, 64), precision="fp16")  # shared export
    code, report = _validate(tmp_path, art, "--samples", "0", "--per-layer")
    assert code == 0 and report["passed"]
    assert any("ETDump reader" in note for note in report["per_layer"]["notes"])
