"""XNNPACK: the .pte runs in the ExecuTorch runtime and matches PyTorch; the .bpte verifies
itself in the runtime; the manifest describes the folder; attention and MLP stay delegated."""

from __future__ import annotations

import pytest
from export_artifacts import (
    attention_or_mlp_outside,
    exported,
    load_test_vectors,
    manifest,
    max_abs_diff,
)

from edit_mobile.models import load_transformer

TINY_PRESETS = ["tiny-pixart", "tiny-pixart-edit", "tiny-sd3", "tiny-sd3-edit"]
TOLERANCE = 1e-4  # float32, max abs


@pytest.mark.parametrize("model", TINY_PRESETS)
def test_pte_matches_pytorch_in_executorch_runtime(model):
    from executorch.runtime import Runtime

    art_dir = exported(model, "xnnpack")
    inputs, reference = load_test_vectors(art_dir)
    program = Runtime.get().load_program(art_dir / manifest(art_dir)["files"]["program"]["path"])
    (output,) = program.load_method("forward").execute(inputs)
    assert max_abs_diff(output, reference) <= TOLERANCE


@pytest.mark.parametrize("model", ["tiny-pixart-edit", "tiny-sd3-edit"])
def test_bundled_program_verifies_itself_in_runtime(model):
    from executorch.extension.pybindings import portable_lib

    art_dir = exported(model, "xnnpack")
    bundle = portable_lib._load_bundled_program_from_buffer(
        (art_dir / manifest(art_dir)["files"]["bundled_program"]["path"]).read_bytes()
    )
    # Runs the program on the bundled inputs and raises if the outputs differ from the
    # bundled expected outputs (ExecuTorch 1.5's BundledModule API).
    bundle.verify_result_with_bundled_expected_output("forward", 0, 0.0, TOLERANCE)


def test_external_weights_live_in_one_ptd_that_program_and_bundle_share():
    """Program-data separation: the .pte holds the graph, model.ptd the weights; the bundled
    program carries no second copy and verifies itself against the same model.ptd."""
    from executorch.runtime import Runtime

    from edit_mobile.runtime import load
    from edit_mobile.runtime.executorch_session import verify_bundled_program
    from edit_mobile.runtime.manifest import read_manifest

    art_dir = exported("tiny-pixart-edit", "xnnpack", backend_options={"weights": "external"})
    files = manifest(art_dir)["files"]
    inputs, reference = load_test_vectors(art_dir)
    program = Runtime.get().load_program(art_dir / files["program"]["path"], data_path=art_dir / files["weights"]["path"])
    (output,) = program.load_method("forward").execute(inputs)
    assert max_abs_diff(output, reference) <= TOLERANCE
    for role in ("program", "bundled_program"):  # the runtime's sessions hand model.ptd over
        session = load(art_dir, role=role)
        assert max_abs_diff(session.run(inputs)["noise_pred"], reference) <= TOLERANCE, role
    checks = verify_bundled_program(read_manifest(art_dir), rtol=0.0, atol=TOLERANCE)
    assert checks and all(check.passed for check in checks), checks
    strict = verify_bundled_program(read_manifest(art_dir), rtol=0.0, atol=-1.0)  # impossible: must fail
    assert not any(check.passed for check in strict)
    weights = files["weights"]["bytes"]
    parameters = sum(p.numel() for p in load_transformer("tiny-pixart-edit").parameters())
    assert weights >= 4 * parameters * 0.9  # float32: (nearly) every weight is in model.ptd
    assert files["program"]["bytes"] < weights / 4
    assert files["bundled_program"]["bytes"] < weights / 4


def test_fp16_at_64px_reaches_the_fp16_floor_in_executorch_runtime():
    """At 64 px the default passes leave both transformer blocks in one fp16 XNNPACK
    partition, where a ones column made by a pad lost its ones (6.7 dB); see append_ones."""
    from executorch.runtime import Runtime

    from edit_mobile.closeness import PSNR_FLOORS_DB
    from edit_mobile.runtime.metrics import closeness

    art_dir = exported("tiny-pixart-edit", "xnnpack", resolution=(64, 64), precision="fp16")
    inputs, reference = load_test_vectors(art_dir)
    program = Runtime.get().load_program(art_dir / manifest(art_dir)["files"]["program"]["path"])
    (output,) = program.load_method("forward").execute(inputs)
    psnr = closeness(reference, output).psnr_db
    assert psnr >= PSNR_FLOORS_DB["fp16"], f"fp16 XNNPACK at 64 px: {psnr:.1f} dB"


def test_manifest_describes_the_folder():
    from edit_mobile.export.manifest import SCHEMA, SCHEMA_VERSION
    from edit_mobile.runtime.manifest import read_manifest

    art_dir = exported("tiny-pixart-edit", "xnnpack")
    data = read_manifest(art_dir).data  # schema, every field and every file's sha256 checked
    assert (data["schema"], data["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert data["model"]["source"] == "tiny-pixart-edit"
    assert data["model"]["family"] == "pixart" and data["model"]["edit"] is True
    assert data["model"]["config"]["edit_config"]["compression_stride"] == 2
    assert data["resolution"] == [128, 128] and data["latent"] == [16, 16] and data["batch"] == 1
    assert (data["backend"], data["precision"], data["quantization"]) == ("xnnpack", "fp32", None)
    assert "linear_attention_bmm" in data["passes"]
    # The ETRecord lets `profile` and `validate --per-layer` map delegate events back to modules.
    assert set(data["files"]) == {"program", "bundled_program", "test_vectors", "reference_model", "etrecord"}
    assert [spec["name"] for spec in data["inputs"]] == [
        "hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"
    ]
    inputs, reference = load_test_vectors(art_dir)
    assert [list(t.shape) for t in inputs] == [spec["shape"] for spec in data["inputs"]]
    assert list(reference.shape) == data["outputs"][0]["shape"] == [1, 8, 16, 16]
    assert {"torch", "executorch", "diffusers"} <= set(data["tools"])
    assert "created" not in data and "timestamp" not in data  # byte-identical re-exports


def test_reference_model_folder_rebuilds_the_reference():
    import torch

    from edit_mobile.models import DenoiserWrapper, load_transformer

    art_dir = exported("tiny-pixart-edit", "xnnpack")
    model = load_transformer(art_dir / manifest(art_dir)["files"]["reference_model"]["path"])
    inputs, reference = load_test_vectors(art_dir)
    with torch.no_grad():
        assert max_abs_diff(DenoiserWrapper(model)(*inputs), reference) == 0.0


def test_attention_and_mlp_compute_stays_in_the_xnnpack_delegate():
    coverage = manifest(exported("tiny-pixart-edit", "xnnpack"))["delegation"]
    print(
        f"\ntiny-pixart-edit xnnpack: {coverage['ops_delegated']}/{coverage['ops_total']} ops, "
        f"{coverage['flops_share_delegated']:.4%} of FLOPs delegated in {coverage['delegate_calls']} "
        f"calls; outside: {coverage['non_delegated_ops']}"
    )
    assert coverage["delegates"] == ["XnnpackBackend"]
    outside = attention_or_mlp_outside(coverage)
    assert outside == {}, f"attention / MLP compute runs outside XNNPACK: {outside}"
    assert coverage["flops_share_delegated"] > 0.999


def test_a_lowering_failure_is_one_line_with_the_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    from edit_mobile.export.backends import executorch_program
    from edit_mobile.main import main

    def explode(*args, **kwargs):
        raise RuntimeError("partitioner exploded\nsecond line, for the log only")

    monkeypatch.setattr(executorch_program, "to_edge_transform_and_lower", explode)
    out = tmp_path / "art"
    code = main(["export", "tiny-pixart", "--backend", "xnnpack", "--resolution", "64", "-o", str(out)])
    err = capsys.readouterr().err
    log = tmp_path / "art.export-error.log"
    assert code == 2
    assert "Traceback" not in err and "second line" not in err
    (line,) = [line for line in err.splitlines() if "lowering failed" in line]
    assert line == (
        "edit-mobile export: error: xnnpack lowering failed in to_edge_transform_and_lower: "
        f"RuntimeError: partitioner exploded; the full log is in {log}"
    )
    text = log.read_text()
    assert "Traceback" in text and "second line, for the log only" in text and "in explode" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art.export-error.log"]  # no artifact, no staging
