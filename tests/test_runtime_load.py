"""load(ART_DIR): one interface over every runtime, and clear refusals of bad artifacts / inputs."""

from __future__ import annotations

import json
import platform

import pytest
import torch
from test_runtime_artifacts import artifact, copy_artifact, rehash

from edit_mobile.errors import UserError
from edit_mobile.runtime import load, load_reference
from edit_mobile.runtime.validate import load_test_vectors


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("kind, options, runtime", [
    ("xnnpack", {}, "executorch"),
    ("xnnpack", {"role": "bundled_program"}, "executorch"),
    ("onnx", {}, "onnxruntime"),
])
def test_every_runtime_gives_the_reference_output_through_one_interface(kind, options, runtime):
    session = load(artifact(kind), **options)
    vectors, stored = load_test_vectors(session.manifest)
    produced = session.run(vectors[0])
    assert session.runtime == runtime and list(produced) == ["noise_pred"]
    assert torch.allclose(produced["noise_pred"], stored["noise_pred"][0], atol=1e-4)
    by_name = session.run(dict(zip(session.input_names, vectors[0], strict=True)))["noise_pred"]
    assert torch.equal(by_name, produced["noise_pred"])
    reference = load_reference(artifact(kind))
    grad_enabled = []
    reference.wrapper.register_forward_pre_hook(lambda module, args: grad_enabled.append(torch.is_grad_enabled()))
    assert torch.allclose(reference(*vectors[0]), stored["noise_pred"][0], atol=1e-6)
    # Without autograd: with it a forward keeps every activation for a backward that never comes.
    assert grad_enabled == [False]


def test_a_file_changed_after_export_is_refused(tmp_path):
    art = copy_artifact("xnnpack", tmp_path / "art")
    data = bytearray((art / "model.pte").read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes
    (art / "model.pte").write_bytes(bytes(data))
    with pytest.raises(UserError) as error:
        load(art)
    assert "model.pte" in _one_line(error) and "sha256" in str(error.value)


def test_a_changed_reference_folder_is_refused(tmp_path):
    art = copy_artifact("onnx", tmp_path / "art")
    (art / "reference" / "config.json").write_text((art / "reference" / "config.json").read_text() + " ")
    with pytest.raises(UserError) as error:
        load(art)
    assert "reference" in _one_line(error)


def test_a_truncated_program_is_refused_by_size_then_by_its_own_header(tmp_path):
    art = copy_artifact("xnnpack", tmp_path / "art")
    program = art / "model.pte"
    program.write_bytes(program.read_bytes()[: program.stat().st_size // 2])
    with pytest.raises(UserError) as error:
        load(art)
    assert "truncated" in _one_line(error) and "model.pte" in str(error.value)
    rehash(art, "program")  # even when the manifest was rewritten to match, the .pte header tells
    with pytest.raises(UserError) as error:
        load(art)
    assert "model.pte is truncated" in _one_line(error)


def test_inputs_of_the_wrong_shape_dtype_or_name_are_refused_before_running():
    for kind in ("xnnpack", "onnx"):
        session = load(artifact(kind))
        good = load_test_vectors(session.manifest)[0][0]
        wrong_shape = (torch.zeros(1, 4, 32, 32), *good[1:])
        with pytest.raises(UserError) as error:
            session.run(wrong_shape)
        assert "'hidden_states'" in _one_line(error) and "[1, 4, 32, 32]" in str(error.value) and "[1, 4, 16, 16]" in str(error.value)
        wrong_dtype = (*good[:3], good[3].double())
        with pytest.raises(UserError) as error:
            session.run(wrong_dtype)
        assert "'timestep'" in _one_line(error) and "float64" in str(error.value) and "float32" in str(error.value)
        with pytest.raises(UserError) as error:
            session.run(dict(zip(["latents", *session.input_names[1:]], good, strict=True)))
        assert "'latents'" in _one_line(error)
        with pytest.raises(UserError) as error:
            session.run(good[:3])
        assert "3 inputs" in _one_line(error)


def test_a_program_needing_a_backend_this_runtime_lacks_is_refused(tmp_path):
    art = copy_artifact("xnnpack", tmp_path / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["delegation"]["delegates"] = ["CoreMLBackend"]
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError) as error:
        load(art)
    assert "CoreMLBackend" in _one_line(error)


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_core_ml_is_refused_off_macos_with_the_reason(tmp_path):
    art = copy_artifact("onnx", tmp_path / "art")
    package = art / "model.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["program"] = {"path": "model.mlpackage", "sha256": "0", "bytes": 2}
    manifest["backend"] = "coreml"
    (art / "manifest.json").write_text(json.dumps(manifest))
    rehash(art, "program")
    with pytest.raises(UserError) as error:
        load(art)
    assert "only on macOS" in _one_line(error)


def test_manifests_that_are_missing_foreign_or_newer_are_refused(tmp_path):
    with pytest.raises(UserError) as error:
        load(tmp_path)
    assert "no manifest.json" in _one_line(error)
    art = copy_artifact("onnx", tmp_path / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    (art / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 3}))
    with pytest.raises(UserError) as error:
        load(art)
    assert "schema_version 3" in _one_line(error) and "update edit-mobile" in _one_line(error)
    (art / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 2}))  # v2 without its pipeline
    with pytest.raises(UserError) as error:
        load(art)
    assert "pipeline must be an object" in _one_line(error)
    (art / "manifest.json").write_text(json.dumps({**manifest, "schema": "something-else"}))
    with pytest.raises(UserError) as error:
        load(art)
    assert "not an edit-mobile" in _one_line(error) or "schema" in str(error.value)


def test_the_command_line_prints_a_refusal_as_one_line_and_exits_2(tmp_path, capsys):
    from edit_mobile.main import main

    art = copy_artifact("xnnpack", tmp_path / "art")
    (art / "model.pte").write_bytes(b"ET12" * 10)
    assert main(["validate", str(art)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("edit-mobile validate: error:") and "model.pte" in error and "\n" not in error
