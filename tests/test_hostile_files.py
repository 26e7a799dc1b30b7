"""Hostile or corrupt files: each class is refused in one line (exit 2 on the command line),
never followed out of the artifact, and never crashes or hangs the interpreter.

Cases that crashed or hung before they were fixed run in a subprocess with a timeout, so a
regression fails this test instead of killing (or stalling) the test session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from export_artifacts import exported
from test_fuzz_artifacts import delegate_blobs
from test_runtime_artifacts import rehash

from edit_mobile.calibration.calibration_set import MANIFEST as CALIBRATION_MANIFEST
from edit_mobile.calibration.calibration_set import load_calibration, write_calibration_set
from edit_mobile.errors import UserError
from edit_mobile.fileio import sha256_file
from edit_mobile.main import main
from edit_mobile.runtime.manifest import read_manifest
from edit_mobile.runtime.pte_format import BUNDLED_PROGRAM, PLAN_NON_CONST_BUFFER_SIZES, FlatBuffer

SUBPROCESS_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def pristine() -> Path:
    return exported("tiny-pixart-edit", "xnnpack")


@pytest.fixture
def art(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "art"))


def refused_line(capsys, argv: list[str]) -> str:
    """The command's one stderr line, after checking it exited 2 (ExecuTorch's own C++ log
    lines, which cannot be silenced, are not ours and are skipped)."""
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("edit-mobile", "Traceback"))]
    assert code == 2 and len(lines) == 1, (code, lines)
    assert lines[0].startswith(f"edit-mobile {argv[0]}: error: ")
    return lines[0]


def edit_manifest(art: Path, change) -> None:
    path = art / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Python `code` in a fresh interpreter: a crash or hang there is a failure here."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)


# --- links out of the artifact ------------------------------------------------------------------


def test_a_program_linked_to_a_file_outside_is_refused(art, tmp_path, capsys):
    outside = tmp_path / "outside.pte"
    shutil.move(art / "model.pte", outside)
    (art / "model.pte").symlink_to(outside)  # same bytes: the hash alone would pass it
    line = refused_line(capsys, ["validate", str(art)])
    assert "model.pte" in line and "outside the artifact folder" in line


def test_a_reference_folder_linked_outside_is_refused(art, tmp_path, capsys):
    outside = tmp_path / "outside-reference"
    shutil.move(art / "reference", outside)
    (art / "reference").symlink_to(outside, target_is_directory=True)
    line = refused_line(capsys, ["validate", str(art)])
    assert "reference" in line and "outside the artifact folder" in line


def test_a_file_inside_the_reference_folder_linked_outside_is_refused(art, tmp_path, capsys):
    outside = tmp_path / "config.json"
    shutil.move(art / "reference" / "config.json", outside)
    (art / "reference" / "config.json").symlink_to(outside)
    line = refused_line(capsys, ["validate", str(art)])
    assert "reference/config.json" in line and "outside the artifact folder" in line


def test_a_manifest_linked_outside_is_refused(art, tmp_path, capsys):
    outside = tmp_path / "manifest.json"
    shutil.move(art / "manifest.json", outside)
    (art / "manifest.json").symlink_to(outside)
    assert "outside the artifact folder" in refused_line(capsys, ["validate", str(art)])


def test_links_that_stay_inside_the_artifact_are_followed(art):
    shutil.move(art / "reference" / "config.json", art / "config-copy.json")
    (art / "reference" / "config.json").symlink_to(Path("..") / "config-copy.json")
    assert read_manifest(art).has("reference_model")  # same files, same hashes: accepted


def test_a_fifo_in_place_of_a_file_is_refused_without_blocking(art):
    (art / "test_vectors.safetensors").unlink()
    os.mkfifo(art / "test_vectors.safetensors")
    result = run_isolated(
        "from edit_mobile.errors import UserError\n"
        "from edit_mobile.runtime.manifest import read_manifest\n"
        f"try:\n    read_manifest({str(art)!r})\nexcept UserError as err:\n    print(err)\n"
    )
    assert result.returncode == 0 and "not a regular file" in result.stdout


# --- the manifest's fields ---------------------------------------------------------------------

BAD_FIELDS = [
    ("inputs is a number", lambda m: m.update(inputs=5), "inputs must be a list"),
    ("a fractional dim", lambda m: m["inputs"][0].update(shape=[1.5, 4, 16, 16]), "inputs[0].shape must be"),
    ("a negative dim", lambda m: m["inputs"][0].update(shape=[1, -4, 16, 16]), "inputs[0].shape must be"),
    ("a huge element count", lambda m: m["outputs"][0].update(shape=[1, 10**5, 10**5, 10**5]), "elements"),
    ("an unknown dtype", lambda m: m["inputs"][3].update(dtype="float99"), "inputs[3].dtype must be one of"),
    ("resolution of floats", lambda m: m.update(resolution=[1e7, 1e7]), "resolution must be"),
    ("resolution far too big", lambda m: m.update(resolution=[10**7, 10**7]), "resolution must be"),
    ("prompt_tokens 1e9", lambda m: m.update(prompt_tokens=1e9), "prompt_tokens must be"),
    ("prompt_tokens 10**9", lambda m: m.update(prompt_tokens=10**9), "prompt_tokens must be"),
    ("batch as text", lambda m: m.update(batch="1"), "batch must be"),
    ("model as text", lambda m: m.update(model="tiny"), "model must be an object"),
    ("files as a list", lambda m: m.update(files=[1, 2]), "files must be an object"),
    ("a path up and out", lambda m: m["files"]["test_vectors"].update(path="../test_vectors.safetensors"),
     "leaves the artifact folder"),
    ("an absolute path", lambda m: m["files"]["program"].update(path="/etc/passwd"), "leaves the artifact folder"),
    ("a sha256 of the wrong type", lambda m: m["files"]["program"].update(sha256=5), "files.program.sha256 must be"),
    ("negative bytes", lambda m: m["files"]["program"].update(bytes=-1), "files.program.bytes must be"),
    ("schema_version true", lambda m: m.update(schema_version=True), "schema_version True"),
    ("delegates as text", lambda m: m["delegation"].update(delegates="XnnpackBackend"), "delegation.delegates must be"),
    ("heldout_records as text", lambda m: m.update(quantization={"scheme": "int8", "heldout_records": "many"}),
     "quantization.heldout_records must be"),
]


@pytest.mark.parametrize("change, expected", [case[1:] for case in BAD_FIELDS], ids=[case[0] for case in BAD_FIELDS])
def test_each_bad_manifest_field_is_one_line_and_exit_2(art, capsys, change, expected):
    edit_manifest(art, change)
    assert expected in refused_line(capsys, ["validate", str(art)])


@pytest.mark.parametrize("text, expected", [
    ('{"schema": ' + "[" * 200_000 + "]" * 200_000 + "}", "nests deeper than"),
    ('{"schema": [' * 40 + "]}" * 40, "nests deeper than"),
    ('{"schema": NaN}', "not valid JSON"),
    ('{"schema": ' + "9" * 5000 + "}", "not valid JSON"),
], ids=["200k levels", "40 levels", "NaN", "5000 digits"])
def test_json_that_is_deep_or_not_numbers_is_one_line(art, capsys, text, expected):
    (art / "manifest.json").write_text(text)
    assert expected in refused_line(capsys, ["validate", str(art)])


def test_a_manifest_bigger_than_any_real_one_is_refused_unread(art, capsys):
    (art / "manifest.json").write_bytes(b" " * (17 << 20))
    assert "MiB" in refused_line(capsys, ["validate", str(art)])


# --- programs -----------------------------------------------------------------------------------


def test_a_bundled_program_with_a_corrupt_inner_program_is_refused_not_run(art):
    """An offset in the inner program's execution plan pointed off the end: ExecuTorch's bundled
    loader used to run such a program unverified and segfault."""
    bundle = art / "model.bpte"
    data = bytearray(bundle.read_bytes())
    start, length = FlatBuffer(bytes(data), "model.bpte").root().vector(BUNDLED_PROGRAM, 1)
    plan = FlatBuffer(bytes(data[start : start + length]), "program").root().tables(1)[0]
    values_field = start + plan._field(2, 4)  # ExecutionPlan.values
    data[values_field : values_field + 4] = struct.pack("<I", 0x7FFFFFF0)
    bundle.write_bytes(bytes(data))
    rehash(art, "bundled_program")
    result = run_isolated(
        "from edit_mobile.errors import UserError\n"
        "from edit_mobile.runtime import load, read_manifest\n"
        "from edit_mobile.runtime.executorch_session import verify_bundled_program\n"
        "for attempt in (lambda: load(ART, role='bundled_program'), lambda: verify_bundled_program(read_manifest(ART), 0, 1)):\n"
        "    try:\n        attempt()\n    except UserError as err:\n        print('refused:', err)\n"
        .replace("ART", repr(str(art)))
    )
    refusals = [line for line in result.stdout.splitlines() if line.startswith("refused:")]
    assert result.returncode == 0 and len(refusals) == 2, result.stderr[-2000:]
    assert all("model.bpte" in line for line in refusals)


def test_a_program_length_field_set_huge_is_refused_without_hanging(art):
    """non_const_buffer_sizes' length said 2**31 - 1: the reader used to loop (and allocate) 2**31 times."""
    program = art / "model.pte"
    data = bytearray(program.read_bytes())
    head = FlatBuffer(bytes(data), "model.pte", size=int.from_bytes(data[16:24], "little"))
    length_at = head.root().tables(1)[0]._target(PLAN_NON_CONST_BUFFER_SIZES)
    data[length_at : length_at + 4] = struct.pack("<I", 0x7FFFFFFF)
    program.write_bytes(bytes(data))
    rehash(art, "program")
    result = run_isolated(
        "from edit_mobile.errors import UserError\n"
        "from edit_mobile.runtime import load\n"
        f"try:\n    load({str(art)!r})\nexcept UserError as err:\n    print(err)\n"
    )
    assert result.returncode == 0 and f"model.pte is corrupt at offset {length_at + 4}" in result.stdout


def test_a_delegate_blob_that_aborts_executorch_is_refused_from_a_trial_process(art):
    """A weight key in an XNNPACK blob made non-UTF-8: XNNPACK logs the key it cannot find,
    pybind11 cannot decode the line and the process aborts (SIGABRT), past every verifier."""
    program = art / "model.pte"
    data = bytearray(program.read_bytes())
    for low, high in delegate_blobs(bytes(data)):
        key = re.search(rb"[0-9a-f]{64}", bytes(data[low:high]))  # a named-data key (a sha256)
        if key:
            data[low + key.start()] = 0xFF
            break
    program.write_bytes(bytes(data))
    rehash(art, "program")
    result = run_isolated(
        "from edit_mobile.errors import UserError\n"
        "from edit_mobile.runtime import load\n"
        f"try:\n    load({str(art)!r})\nexcept UserError as err:\n    print(err)\n"
    )
    assert result.returncode == 0 and "ExecuTorch was killed by SIGABRT" in result.stdout, result.stderr[-2000:]
    assert "model.pte" in result.stdout and "re-export" in result.stdout


def test_corrupt_test_vectors_are_one_line(art, capsys):
    vectors = art / "test_vectors.safetensors"
    data = bytearray(vectors.read_bytes())
    data[0:8] = struct.pack("<Q", len(data) * 4)  # a header longer than the file
    vectors.write_bytes(bytes(data))
    rehash(art, "test_vectors")
    assert "not a valid safetensors file" in refused_line(capsys, ["validate", str(art)])
    vectors.write_bytes(bytes(data[: len(data) // 2]))
    rehash(art, "test_vectors")
    assert "test_vectors.safetensors" in refused_line(capsys, ["validate", str(art)])


# --- ONNX ---------------------------------------------------------------------------------------


def _onnx_program(art: Path, model_bytes: bytes) -> None:
    (art / "model.onnx").write_bytes(model_bytes)
    edit_manifest(art, lambda m: m["files"].update(program={"path": "model.onnx", "sha256": "0" * 64}))
    rehash(art, "program")


def test_a_corrupt_onnx_model_is_one_line(art, capsys):
    _onnx_program(art, b"\x08\x07\x12\xff\xff\xff\xff\x0f" + os.urandom(64))
    line = refused_line(capsys, ["validate", str(art)])
    assert "model.onnx is not a valid ONNX model" in line


def test_onnx_external_data_outside_the_artifact_is_refused(art, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    weight = TensorProto(name="weight", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../secret.bin")
    graph = helper.make_graph([helper.make_node("Add", ["x", "weight"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    _onnx_program(art, helper.make_model(graph).SerializeToString())
    onnx.load(str(art / "model.onnx"), load_external_data=False)  # a well-formed model otherwise
    line = refused_line(capsys, ["validate", str(art)])
    assert "'weight'" in line and "outside the artifact" in line


# --- calibration sets ---------------------------------------------------------------------------

SPECS = [("hidden_states", [1, 4, 8, 8]), ("encoder_hidden_states", [1, 6, 8]),
         ("encoder_attention_mask", [1, 6]), ("timestep", [1])]


def calibration_set(folder: Path, records: int = 3, prompts: int = 2, latent_hw: int = 8) -> Path:
    """A small well-formed set, as `edit-mobile calibrate` lays one out."""
    generator = torch.Generator().manual_seed(0)
    split = {
        "inputs.hidden_states": torch.randn(records, 4, latent_hw, latent_hw, generator=generator),
        "inputs.timestep": torch.rand(records, generator=generator) * 999,
        "prompt_inputs.encoder_hidden_states": torch.randn(prompts, 6, 8, generator=generator),
        "prompt_inputs.encoder_attention_mask": torch.ones(prompts, 6),
        "record.prompt_index": torch.arange(records) % prompts,
        "record.sample": torch.zeros(records, dtype=torch.int64),
        "record.step": torch.arange(records),
        "record.branch": torch.ones(records, dtype=torch.int64),
    }
    manifest = {"inputs": [{"name": name, "shape": shape, "dtype": "float32"} for name, shape in SPECS],
                "steps": records, "samples": 2, "seed": 0, "resolution": [64, 64],
                "split": {"calibration": {"records": records}, "heldout": {"records": records}}}
    folder.mkdir()
    write_calibration_set(folder, manifest, {"calibration": split, "heldout": dict(split)})
    return folder


def edit_calibration(folder: Path, change) -> None:
    path = folder / CALIBRATION_MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def refused_calibration(folder: Path) -> str:
    with pytest.raises(UserError) as error:
        load_calibration(folder)
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_a_well_formed_calibration_set_loads(tmp_path):
    assert len(load_calibration(calibration_set(tmp_path / "set")).heldout_inputs) == 3


def test_a_calibration_record_path_up_and_out_is_refused(tmp_path):
    folder = calibration_set(tmp_path / "set")
    shutil.move(folder / "heldout.safetensors", tmp_path / "heldout.safetensors")  # a real file, right hash
    edit_calibration(folder, lambda m: m["files"]["heldout"].update(path="../heldout.safetensors"))
    assert "leaves the calibration set" in refused_calibration(folder)


def test_a_calibration_file_linked_outside_is_refused(tmp_path):
    folder = calibration_set(tmp_path / "set")
    shutil.move(folder / "heldout.safetensors", tmp_path / "heldout.safetensors")
    (folder / "heldout.safetensors").symlink_to(tmp_path / "heldout.safetensors")
    assert "outside the calibration set" in refused_calibration(folder)


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(inputs=5), "inputs must be a list"),
    (lambda m: m["inputs"][0].update(shape=[1, 4, 8.5, 8]), "inputs[0].shape must be"),
    (lambda m: m.update(files=[]), "files must be an object"),
    (lambda m: m["files"]["calibration"].update(sha256=None), "files.calibration.sha256 must be"),
    (lambda m: m.update(steps=10**9), "steps must be"),
    (lambda m: m["split"]["calibration"].update(records=10**9), "needs 1000000000 records, not 3"),
    (lambda m: m["inputs"][0].update(shape=[1, 4, 9, 9]), "needs inputs.hidden_states of float32 (N, 4, 9, 9)"),
    (lambda m: m.update(inputs=[*m["inputs"], {"name": "pooled_projections", "shape": [1, 8], "dtype": "float32"}]),
     "needs prompt_inputs.pooled_projections"),
], ids=["inputs 5", "fractional dim", "files list", "sha256 null", "absurd steps", "absurd records",
        "shapes disagree", "an input not recorded"])
def test_each_bad_calibration_field_is_one_line(tmp_path, change, expected):
    folder = calibration_set(tmp_path / "set")
    edit_calibration(folder, change)
    assert expected in refused_calibration(folder)


def test_calibration_records_pointing_past_their_prompts_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = calibration_set(tmp_path / "set")
    split = folder / "calibration.safetensors"
    tensors = load_file(split)
    tensors["record.prompt_index"] = torch.tensor([0, 1, 7])
    save_file(tensors, split)
    edit_calibration(folder, lambda m: m["files"]["calibration"].update(sha256=sha256_file(split), bytes=split.stat().st_size))
    assert "record.prompt_index within 0..1" in refused_calibration(folder)


def test_a_corrupt_calibration_split_and_deep_json_are_one_line(tmp_path):
    folder = calibration_set(tmp_path / "set")
    split = folder / "calibration.safetensors"
    split.write_bytes(split.read_bytes()[:100])
    edit_calibration(folder, lambda m: m["files"]["calibration"].update(sha256=sha256_file(split), bytes=100))
    assert "not a readable safetensors file" in refused_calibration(folder)
    (folder / CALIBRATION_MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
    assert "nested too deep" in refused_calibration(folder)


def test_validate_refuses_a_hostile_calibration_set_in_one_line(pristine, tmp_path, capsys):
    folder = calibration_set(tmp_path / "set")
    edit_calibration(folder, lambda m: m["files"]["heldout"].update(path="../../etc/passwd"))
    line = refused_line(capsys, ["validate", str(pristine), "--calibration", str(folder), "--samples", "1"])
    assert "leaves the calibration set" in line


class _RunsCode:
    """A pickle that, when fully unpickled, creates a marker file (an attacker's payload)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the payload's, refused as it should be
def test_an_etrecord_with_a_pickled_payload_runs_no_code(tmp_path, capsys):
    """A hostile ETRecord (re-hashed in its manifest) must not get code run by profile or
    validate. ExecuTorch 1.5.1's deserializer loads restricted only (checked: the payload does
    not run without our guard either); torch.export's own retries with full pickle, which the
    guard (edit_mobile.safe_read.no_pickled_code) closes should a loader ever take that path."""
    import io
    import pickle
    import zipfile

    from edit_mobile.export.manifest import file_entry

    art = tmp_path / "art"  # a copy of a shared export (its weights in model.ptd, the ETRecord's stubbed)
    shutil.copytree(exported("tiny-pixart-edit", "xnnpack", backend_options={"weights": "external"}), art)
    marker = tmp_path / "payload-ran"
    buffer = io.BytesIO()
    pickle.dump({"x": _RunsCode(str(marker))}, buffer)
    record = art / "etrecord.bin"
    entries = {info.filename: zipfile.ZipFile(record).read(info.filename) for info in zipfile.ZipFile(record).infolist()}
    for name in entries:
        if name.endswith("state_dict") or name.endswith("constants"):
            entries[name] = buffer.getvalue()
    with zipfile.ZipFile(record, "w") as rewritten:
        for name, data in entries.items():
            rewritten.writestr(name, data)
    manifest = json.loads((art / "manifest.json").read_text())
    role = next(role for role, entry in manifest["files"].items() if entry["path"] == "etrecord.bin")
    manifest["files"][role] = file_entry(art, "etrecord.bin")
    (art / "manifest.json").write_text(json.dumps(manifest))
    main(["profile", str(art), "--iters", "1", "--warmup", "0"])
    main(["validate", str(art), "--samples", "0", "--per-layer"])
    capsys.readouterr()
    assert not marker.exists()
