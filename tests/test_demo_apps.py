"""The Android / iOS demo apps against the exporter, as far as this machine can check them.

No Android SDK, Kotlin compiler or Xcode here, so the apps are not built. What is checked:
- the manifest keys and values each app reads (its marked MANIFEST KEYS block) exist where the
  exporter writes them (edit_mobile.export.manifest, the models' TensorSpec, the schema in the
  helper brief), and the two apps read the same ones;
- the Android app's plain-Java logic (manifest, sha256 of files and folders, safetensors,
  PSNR, latency statistics, result line) compiled with javac and run on an artifact folder built
  with the exporter's own functions from the real tiny EDiT model, against Python's figures;
- refusals: a tampered file, a manifest whose shape disagrees with the test vectors;
- hostile files (paths leading out of the folder, damaged safetensors offsets and lengths, a
  4 GiB file, JSON nested 100k deep, NaN outputs): each one named refusal, never a crash;
- benchmark mode on a pipeline artifact (PipelineBenchmark.java) over a counting test double
  with a scripted clock: calls per method, the timed runs, one image's cost by the host's formula,
  and the results blocks it builds read by the host;
- one PSNR: Java's equals edit_mobile.runtime.metrics.closeness on shared vectors;
- the iOS app (Swift, not compiled here) by inspection: same result-line prefix and fields,
  the same PSNR cases and the same overflow-checked, folder-confined reading; every source
  parses with tree-sitter's Swift grammar (syntax only).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from edit_mobile.models import DenoiserWrapper, TensorSpec, TransformerSignature, load_transformer

REPO = Path(__file__).resolve().parents[1]
JAVA_SOURCES = REPO / "android_demo" / "app" / "src" / "main" / "java" / "org" / "editmobile" / "demo"
SWIFT_SOURCES = REPO / "ios_demo" / "EDiTDemo"
BLOCK = re.compile(r"// BEGIN MANIFEST KEYS(.*?)// END MANIFEST KEYS", re.S)
RESULT_PREFIX = "EDIT_DEMO_RESULT "

# The manifest schema of the helper brief (v1): the contract both apps were written against.
BRIEF_BACKENDS = {"xnnpack", "vulkan", "coreml-pte", "qnn", "coreml", "onnx"}
BRIEF_TOP_KEYS = {
    "schema", "schema_version", "created_by", "model", "resolution", "batch", "prompt_tokens",
    "backend", "precision", "quantization", "passes", "inputs", "outputs", "files",
    "delegation", "tools",
}
BRIEF_MODEL_KEYS = {"source", "family", "edit", "class_name", "config"}
# "weights": model.ptd, written when an ExecuTorch program keeps its weights outside it.
BRIEF_FILE_ROLES = {"program", "weights", "bundled_program", "test_vectors", "reference_model",
                    "tokenizer", "scheduler"}  # the last two: pipeline artifacts (schema v2)
# File roles only the Android app's block names: iOS reads the scheduler from the manifest's
# pipeline.scheduler config, and both apps find tokenizer folders by the files role each
# pipeline.text.tokenizers entry names (PipelineSpec), not by a fixed "tokenizer" role.
ANDROID_ONLY_KEYS = {"ROLE_TOKENIZER", "ROLE_SCHEDULER"}
BRIEF_FILE_KEYS = {"path", "sha256", "bytes"}


# ---------------------------------------------------------------- the apps' key blocks

def java_keys() -> dict[str, object]:
    text = (JAVA_SOURCES / "ArtifactManifest.java").read_text()
    block = BLOCK.search(text).group(1)
    keys: dict[str, object] = {}
    for name, value in re.findall(r"static final (?:String|int) (\w+) = ([^;]+);", block):
        keys[name] = json.loads(value)
    return keys


def swift_keys() -> dict[str, object]:
    text = (SWIFT_SOURCES / "ArtifactManifest.swift").read_text()
    block = BLOCK.search(text).group(1)
    keys: dict[str, object] = {}
    for name, value in re.findall(r"static let (\w+) = (.+)", block):
        keys[re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()] = json.loads(value)  # camel -> SNAKE
    return keys


def exporter_schema() -> dict:
    """What edit_mobile.export writes."""
    from edit_mobile.export import manifest as export_manifest

    built = build_manifest_dict(
        inputs=[TensorSpec("x", (1, 4, 16, 16)).to_dict()], outputs=[], files={}, backend="xnnpack"
    )
    return {"schema": export_manifest.SCHEMA, "schema_version": export_manifest.SCHEMA_VERSION,
            "pipeline_schema_version": export_manifest.PIPELINE_SCHEMA_VERSION, "pipeline_top_keys": {"pipeline"},  # checked on a real export: test_pipeline_artifact
            "backends": set(export_manifest.BACKENDS), "top_keys": set(built),
            "file_keys": set(file_entry_dict(REPO, "pyproject.toml"))}


def check_block(keys: dict[str, object]) -> list[str]:
    """Each key of an app's block checked against the place its prefix says it lives."""
    schema = exporter_schema()
    spec_keys = set(TensorSpec("x", (1,)).to_dict())
    problems = []
    for name, value in keys.items():
        prefix = name.split("_")[0]
        allowed = {
            "TOP": schema["top_keys"] & BRIEF_TOP_KEYS,
            "MODEL": BRIEF_MODEL_KEYS,
            "SPEC": spec_keys,
            "ROLE": BRIEF_FILE_ROLES,
            "FILE": schema["file_keys"] & BRIEF_FILE_KEYS,
            "VECTOR": {"input.", "output."},
            "BACKEND": schema["backends"],
            "DTYPE": {d for d in ("float32", "float16", "bfloat16") if isinstance(getattr(torch, d), torch.dtype)},
        }.get(prefix)
        if name == "SCHEMA_NAME":
            ok = value == schema["schema"]
        elif name == "SCHEMA_VERSION":
            ok = value == schema["schema_version"]
        elif name == "PIPELINE_SCHEMA_VERSION":
            ok = value == schema["pipeline_schema_version"]
        elif name == "TOP_PIPELINE":
            ok = value in schema["pipeline_top_keys"]
        elif allowed is None:
            ok = False
            problems.append(f"{name}: unknown prefix, cannot be checked")
            continue
        else:
            ok = value in allowed
        if not ok:
            problems.append(f"{name} = {value!r} is not what the exporter writes")
    return problems


def test_android_manifest_keys_are_what_the_exporter_writes():
    keys = java_keys()
    assert {"TOP_INPUTS", "SPEC_SHAPE", "ROLE_PROGRAM", "FILE_SHA256", "VECTOR_INPUT_PREFIX"} <= set(keys)
    assert check_block(keys) == []


def test_ios_manifest_keys_are_what_the_exporter_writes():
    keys = swift_keys()
    assert {"TOP_INPUTS", "SPEC_SHAPE", "ROLE_PROGRAM", "FILE_SHA256", "VECTOR_INPUT_PREFIX"} <= set(keys)
    assert check_block(keys) == []


def test_both_apps_read_the_same_fields():
    java, swift = java_keys(), swift_keys()
    fields = {k for k in java if not k.startswith("BACKEND_") and k not in ANDROID_ONLY_KEYS}
    assert fields == {k for k in swift if not k.startswith("BACKEND_")}
    assert {k: java[k] for k in fields} == {k: swift[k] for k in fields}
    # Android runs ExecuTorch .pte programs only; iOS also Core ML packages.
    assert "coreml" not in java.values() and "coreml" in swift.values()


def test_ios_result_line_has_the_android_fields():
    """Swift is not compiled here: compare the JSON field names its report writes with Java's."""
    java = (JAVA_SOURCES / "DemoReport.java").read_text()
    swift = (SWIFT_SOURCES / "DemoReport.swift").read_text()
    java_fields = set(re.findall(r'\\"(\w+)\\": ', java))
    swift_fields = set(re.findall(r'"(\w+)": ', swift))
    assert {"psnr_db", "max_abs_err", "median", "p90", "files_verified"} <= java_fields
    assert java_fields == swift_fields
    assert f'"{RESULT_PREFIX}"' in java and f'"{RESULT_PREFIX}"' in swift


# ---------------------------------------------------------------- artifact built by the exporter

def build_manifest_dict(*, inputs, outputs, files, backend, model=None) -> dict:
    """The exporter's own build_manifest."""
    from edit_mobile.export.manifest import build_manifest

    return build_manifest(model=model or {"source": "tiny-pixart-edit"}, resolution=(128, 128), batch=1,
                          prompt_tokens=120, backend=backend, precision="fp32", quantization=None,
                          passes=[], inputs=inputs, outputs=outputs, files=files, delegation=None)


def file_entry_dict(root: Path, relative: str) -> dict:
    from edit_mobile.export.manifest import file_entry

    return file_entry(root, relative)


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """An artifact folder of the tiny EDiT PixArt at 128 px: real inputs, the real PyTorch
    output as expected vector, the real model saved as reference folder. The program file is not
    an exported .pte (exporting one takes ~1 min here): the Java logic only checks its hash and
    size; running it is the phone's part."""
    folder = tmp_path_factory.mktemp("artifact")
    model = load_transformer("tiny-pixart-edit").eval()
    signature = TransformerSignature.of(model, 128, 128)
    inputs = signature.example_inputs(seed=0)
    with torch.no_grad():
        output = DenoiserWrapper(model)(*inputs)
    vectors = {f"input.{spec.name}": t.contiguous() for spec, t in zip(signature.inputs, inputs, strict=True)}
    vectors[f"output.{signature.outputs[0].name}"] = output.contiguous()
    save_file(vectors, str(folder / "test_vectors.safetensors"))
    (folder / "model.pte").write_bytes(np.random.default_rng(0).bytes(4096))
    model.save_pretrained(folder / "reference")
    # Names whose order differs between plain string sort and pathlib's per-component sort.
    (folder / "reference" / "a").mkdir()
    (folder / "reference" / "a" / "b").write_text("nested")
    (folder / "reference" / "a.txt").write_text("flat")
    roles = {"program": "model.pte", "test_vectors": "test_vectors.safetensors", "reference_model": "reference"}
    write_manifest(folder, build_manifest_dict(
        inputs=[spec.to_dict() for spec in signature.inputs],
        outputs=[spec.to_dict() for spec in signature.outputs],
        files={role: file_entry_dict(folder, path) for role, path in roles.items()},
        backend="xnnpack",
    ))
    return folder



def run_jvm_check(classes: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", str(classes), "JvmCheck", *args],
                          capture_output=True, text=True, timeout=60)


def run_java(classes: Path, folder: Path, produced: Path, warmup: int, runs_ms: list[float]):
    completed = run_jvm_check(classes, str(folder), str(produced), str(warmup),
                              ",".join(repr(t) for t in runs_ms))
    lines = [out for out in completed.stdout.splitlines() if out.startswith(RESULT_PREFIX)]
    if len(lines) != 1:  # a crash: no result line, a stack trace instead
        pytest.fail(f"no single result line (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return completed.returncode, json.loads(lines[0][len(RESULT_PREFIX):]), completed.stdout


def python_psnr(reference: torch.Tensor, produced: torch.Tensor) -> tuple[float, float]:
    from edit_mobile.runtime.metrics import closeness

    close = closeness(reference, produced)
    return close.psnr_db, close.max_abs


@pytest.mark.parametrize("kind", ["float16-rounded", "noisy-float32", "identical"])
def test_java_logic_matches_python_on_real_test_vectors(artifact, java_classes, tmp_path, kind):
    vectors = load_file(str(artifact / "test_vectors.safetensors"))
    key = next(k for k in vectors if k.startswith("output."))
    reference = vectors[key]
    if kind == "float16-rounded":  # what an fp16 program's output looks like, stored as F16
        produced = reference.half()
    elif kind == "noisy-float32":
        produced = reference + 0.05 * reference.abs().max() * torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))
    else:
        produced = reference.clone()
    save_file({key: produced.contiguous()}, str(tmp_path / "produced.safetensors"))
    runs_ms = [12.5, 10.25, 11.0, 30.75, 10.5, 10.875, 11.25, 9.9]

    code, result, stdout = run_java(java_classes, artifact, tmp_path / "produced.safetensors", 3, runs_ms)

    assert code == 0, stdout
    assert result["status"] == "ok" and result["backend"] == "xnnpack" and result["resolution"] == "128x128"
    # Every role was hashed, the reference folder with the exporter's folder digest included.
    assert sorted(result["files_verified"]) == ["program", "reference_model", "test_vectors"]
    psnr, max_abs = python_psnr(reference, produced.float())
    (check,) = result["outputs"]
    assert check["name"] == key.removeprefix("output.")
    assert check["psnr_db"] == pytest.approx(psnr, rel=1e-5)
    assert check["max_abs_err"] == pytest.approx(max_abs, rel=1e-5, abs=1e-12)
    if kind == "identical":
        assert check["psnr_db"] == 200.0  # the runtime's PERFECT_DB, not infinity
    latency = result["latency_ms"]
    assert latency["warmup"] == 3 and latency["runs"] == len(runs_ms)
    assert latency["median"] == pytest.approx(np.median(runs_ms), rel=1e-5)
    assert latency["min"] == pytest.approx(min(runs_ms), rel=1e-5)
    assert latency["p90"] == pytest.approx(np.percentile(runs_ms, 90), rel=1e-5)
    assert "PSNR" in stdout and "median" in stdout  # the screen text


def copy_artifact(artifact: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "artifact"
    shutil.copytree(artifact, folder)
    return folder


def test_java_refuses_a_tampered_program(artifact, java_classes, tmp_path):
    folder = copy_artifact(artifact, tmp_path)
    data = bytearray((folder / "model.pte").read_bytes())
    data[100] ^= 0xFF
    (folder / "model.pte").write_bytes(bytes(data))
    code, result, _ = run_java(java_classes, folder, folder / "test_vectors.safetensors", 1, [1.0])
    assert code == 3 and result["status"] == "error"
    assert "model.pte sha256" in result["error"] and "push it again" in result["error"]


def test_java_refuses_test_vectors_that_disagree_with_the_manifest(artifact, java_classes, tmp_path):
    folder = copy_artifact(artifact, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inputs"][0]["shape"][-1] += 8
    write_manifest(folder, manifest)
    code, result, _ = run_java(java_classes, folder, folder / "test_vectors.safetensors", 1, [1.0])
    assert code == 3
    assert result["error"].startswith(f"input.{manifest['inputs'][0]['name']} has shape")


def test_java_skips_roles_not_pushed_but_requires_the_program(artifact, java_classes, tmp_path):
    folder = copy_artifact(artifact, tmp_path)
    shutil.rmtree(folder / "reference")  # nobody pushes the PyTorch reference to a phone
    code, result, _ = run_java(java_classes, folder, folder / "test_vectors.safetensors", 1, [1.0])
    assert code == 0 and sorted(result["files_verified"]) == ["program", "test_vectors"]
    (folder / "model.pte").unlink()
    code, result, _ = run_java(java_classes, folder, folder / "test_vectors.safetensors", 1, [1.0])
    assert code == 3 and "files.program = model.pte is missing" in result["error"]


def exported_artifacts() -> list[Path]:
    """ExecuTorch denoiser artifacts `make demo` left in demo_out/, if any (written by the real
    exporter). Pipeline artifacts are left out: the benchmark self-check reads a denoiser's
    vectors; the app's pipeline path is checked piece by piece in test_app_pipeline_logic."""
    found = []
    for manifest in sorted((REPO / "demo_out").glob("**/manifest.json")):
        content = json.loads(manifest.read_text())
        if content.get("backend") in {"xnnpack", "vulkan", "qnn"} and not content.get("pipeline"):
            found.append(manifest.parent)
    return found


@pytest.mark.parametrize("folder", exported_artifacts() or [None], ids=lambda p: p.name if p else "none")
def test_java_reads_artifacts_the_exporter_wrote(folder, java_classes):
    if folder is None:
        pytest.skip("no ExecuTorch artifact under demo_out/ (run `make demo` first)")
    code, result, stdout = run_java(java_classes, folder, folder / "test_vectors.safetensors", 1, [1.0])
    assert code == 0, stdout
    assert "program" in result["files_verified"] and "test_vectors" in result["files_verified"]
    assert all(check["psnr_db"] == 200.0 for check in result["outputs"])


# ---------------------------------------------------------------- hostile files

@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory) -> Path:
    """A minimal artifact (one (1, 4) input and output, no real model) that each hostile case
    copies and damages: cheap to copy and to hash."""
    folder = tmp_path_factory.mktemp("small")
    save_file({"input.x": torch.arange(4.0).reshape(1, 4), "output.y": torch.ones(1, 4)},
              str(folder / "test_vectors.safetensors"))
    (folder / "model.pte").write_bytes(bytes(64))
    (folder / "reference").mkdir()
    (folder / "reference" / "config.json").write_text("{}")
    roles = {"program": "model.pte", "test_vectors": "test_vectors.safetensors", "reference_model": "reference"}
    write_manifest(folder, build_manifest_dict(
        inputs=[TensorSpec("x", (1, 4)).to_dict()], outputs=[TensorSpec("y", (1, 4)).to_dict()],
        files={role: file_entry_dict(folder, path) for role, path in roles.items()}, backend="xnnpack",
    ))
    return folder


def update_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    write_manifest(folder, manifest)


def outside_copy(folder: Path) -> Path:
    """The real test vectors, next to (not inside) the folder: reading them would succeed."""
    outside = folder.parent / "outside.safetensors"
    shutil.copy(folder / "test_vectors.safetensors", outside)
    return outside


def manifest_path(role: str, path) -> Callable[[Path], None]:
    """The manifest names `path` (a string, or a function of the folder) for `role`."""
    def damage(folder: Path) -> None:
        named = path(folder) if callable(path) else path
        update_manifest(folder, lambda m: m["files"][role].update(path=str(named)))
    return damage


def symlinked_vectors(folder: Path) -> None:
    outside = outside_copy(folder)
    (folder / "test_vectors.safetensors").unlink()
    (folder / "test_vectors.safetensors").symlink_to(outside)


def symlink_in_reference(folder: Path) -> None:
    (folder / "reference" / "leak").symlink_to(outside_copy(folder))
    update_manifest(folder, lambda m: m["files"].update(reference_model=file_entry_dict(folder, "reference")))


def raw_safetensors(header, *, length: int | None = None, data: bytes = bytes(16)) -> bytes:
    """A safetensors file byte for byte: header length (unsigned 64-bit), header, data."""
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def vectors_file(content: bytes) -> Callable[[Path], None]:
    """These bytes as the test vectors, the manifest's sha256 and size updated to match, so
    the check gets past verification to the reader."""
    def damage(folder: Path) -> None:
        (folder / "test_vectors.safetensors").write_bytes(content)
        update_manifest(folder, lambda m: m["files"].update(
            test_vectors=file_entry_dict(folder, "test_vectors.safetensors")))
    return damage


def vectors_with_output(**tensor) -> Callable[[Path], None]:
    """A good input.x and an output.y entry of dtype / shape / data_offsets given."""
    entry = {"dtype": "F32", "shape": [1, 4], "data_offsets": [16, 32]} | tensor
    return vectors_file(raw_safetensors({"input.x": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]},
                                         "output.y": entry}, data=bytes(32)))


FOUR_GIB_AND_100 = 4 * 2**30 + 100


def sparse_file(path: Path, head: bytes) -> None:
    """FOUR_GIB_AND_100 bytes, only `head` stored: the rest is a hole, no disk used. An int cast
    of the size reads it as 100 bytes, i.e. as `head` padded to 100."""
    with open(path, "wb") as f:
        f.write(head.ljust(100, b" "))
        f.truncate(FOUR_GIB_AND_100)


def sparse_manifest(folder: Path) -> None:
    sparse_file(folder / "manifest.json", b"{}")


def sparse_produced(folder: Path) -> Path:
    # Its first 100 bytes are a valid file holding output.y: truncation would read it fine.
    header = json.dumps({"output.y": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}})
    header = header.ljust(100 - 8 - 16)
    sparse_file(folder.parent / "produced.safetensors", raw_safetensors(header, data=bytes(16)))
    return folder.parent / "produced.safetensors"


def nan_output(folder: Path) -> Path:
    produced = folder.parent / "produced.safetensors"
    save_file({"output.y": torch.tensor([[1.0, float("nan"), 1.0, 1.0]])}, str(produced))
    return produced


DEEP = 100_000
# case: (damage the folder, returning the produced-outputs file when not the test vectors; the
# refusal's text). Each must end in exit 3, the app's refusal, with that text.
HOSTILE = {
    "path-traversal": (
        manifest_path("program", "../../../../etc/passwd"),
        "files.program = ../../../../etc/passwd climbs out with '..', outside the artifact folder"),
    "path-traversal-to-vectors": (
        manifest_path("test_vectors", lambda f: f"../{outside_copy(f).name}"), "outside the artifact folder"),
    "absolute-path": (
        manifest_path("test_vectors", outside_copy), "is an absolute path, outside the artifact folder"),
    "symlink-out": (symlinked_vectors, "files.test_vectors = test_vectors.safetensors resolves to"),
    "symlink-out-of-reference": (symlink_in_reference, "reference/leak resolves to"),
    "negative-offset": (
        vectors_with_output(data_offsets=[-16, 0]),
        "tensor output.y data_offsets has -16, not an integer in [0, 2^53]"),
    "offset-past-2^64": (
        vectors_with_output(data_offsets=[2**64 - 16, 2**64]),
        "tensor output.y data_offsets has 1.8446744073709552E19, not an integer"),
    "offset-past-2^63": (
        vectors_with_output(dtype="U8", shape=[2**63 - 1], data_offsets=[0, 2**63 - 1]),
        "tensor output.y shape has 9.223372036854776E18, not an integer"),
    "shape-product-overflows": (
        vectors_with_output(shape=[2**40, 2**40], data_offsets=[16, 16]),
        "shape [1099511627776, 1099511627776] has too many elements"),
    "reversed-offsets": (vectors_with_output(data_offsets=[32, 16]), "data_offsets [32, 16) are reversed"),
    "offsets-past-file-end": (
        vectors_with_output(data_offsets=[1000, 1016]),
        "data_offsets [1000, 1016) run past the end of the 32 data bytes"),
    "offsets-size-mismatch": (
        vectors_with_output(data_offsets=[16, 24]), "hold 8 bytes, shape [1, 4] of F32 needs 16"),
    "header-longer-than-file": (
        vectors_file(raw_safetensors({}, length=1000)), "header length 1000 does not fit the file"),
    "header-length-2^63-1": (
        vectors_file(raw_safetensors({}, length=2**63 - 1)),
        "header length 9223372036854775807 does not fit the file"),
    "header-length-negative": (
        vectors_file(raw_safetensors({}, length=2**64 - 1)), "header length -1 does not fit the file"),
    "header-nested-100k": (
        vectors_file(raw_safetensors("[" * DEEP + "]" * DEEP)),
        "the header is not valid JSON: bad JSON at character 64: nested deeper than 64 levels"),
    "manifest-nested-100k": (
        lambda f: (f / "manifest.json").write_text('{"a": ' + "[" * DEEP + "]" * DEEP + "}"),
        "manifest.json is not valid JSON: bad JSON at character 69: nested deeper than 64 levels"),
    "manifest-4GiB+100": (
        sparse_manifest,
        f"manifest.json is {FOUR_GIB_AND_100} bytes, more than the 16777216 this app reads;"
        " refused rather than truncated"),
    "outputs-4GiB+100": (
        sparse_produced,
        f"produced.safetensors is {FOUR_GIB_AND_100} bytes, more than the 2147483639 this app reads"),
    "nan-output": (nan_output, "non-finite output: y has 1 NaN/inf values of 4"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_java_refuses_hostile_files_with_one_message(small_artifact, java_classes, tmp_path, case):
    folder = copy_artifact(small_artifact, tmp_path)
    damage, refusal = HOSTILE[case]
    try:
        produced = damage(folder) or folder / "test_vectors.safetensors"
        code, result, stdout = run_java(java_classes, folder, produced, 1, [1.0])
    finally:
        for path in tmp_path.rglob("*"):  # the sparse files: cost no disk, but nobody wants them
            if path.is_file() and not path.is_symlink() and path.stat().st_size > 2**31:
                path.unlink()
    assert code == 3, stdout  # a DemoException: the app's refusal, not the catch-all (exit 4)
    assert result["status"] == "error" and refusal in result["error"], result["error"]


def test_small_artifact_passes_before_it_is_damaged(small_artifact, java_classes, tmp_path):
    """So that each hostile case fails for its damage, not for the artifact it starts from."""
    vectors = small_artifact / "test_vectors.safetensors"
    code, result, stdout = run_java(java_classes, small_artifact, vectors, 1, [1.0])
    assert code == 0, stdout
    assert sorted(result["files_verified"]) == ["program", "reference_model", "test_vectors"]
    assert result["outputs"][0]["psnr_db"] == 200.0


# ---------------------------------------------------------------- benchmark mode on a pipeline artifact

PIPELINE_SIZES = ((64, 64), (64, 128))
PROMPT_TOKENS, TEXT_WIDTH, LATENT_CHANNELS = 8, 16, 4


def write_pipeline_artifact(folder: Path, *, batch: int = 1, steps: int = 20, guidance: float = 4.5,
                            sizes=PIPELINE_SIZES) -> Path:
    """A pipeline artifact as `export --pipeline` lays it out (manifest v2, test vectors
    `<method>.input.<name>` / `<method>.output.<name>` for encode_prompt and each denoise_HxW and
    decode_HxW, tokenizer and scheduler folders) without a model: the program is random bytes,
    the vectors random tensors of the methods' shapes, which is all that benchmark mode and
    `profile --device` read from it. Cheap: a few kB, no export."""
    from edit_mobile.export.manifest import PIPELINE_SCHEMA_VERSION, build_manifest, file_entry

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)

    def spec(name, shape, dtype="float32"):
        return {"name": name, "shape": list(shape), "dtype": dtype}

    text = [spec("encoder_hidden_states", (1, PROMPT_TOKENS, TEXT_WIDTH)), spec("encoder_attention_mask", (1, PROMPT_TOKENS))]
    methods = {"encode_prompt": {
        "inputs": [spec("input_ids", (1, PROMPT_TOKENS), "int64"), spec("attention_mask", (1, PROMPT_TOKENS), "int64")],
        "outputs": text, "precision": "fp32"}}
    for height, width in sizes:
        latent = (LATENT_CHANNELS, height // 8, width // 8)
        methods[f"denoise_{height}x{width}"] = {
            "inputs": [spec("hidden_states", (batch, *latent)), spec("encoder_hidden_states", (batch, PROMPT_TOKENS, TEXT_WIDTH)),
                       spec("encoder_attention_mask", (batch, PROMPT_TOKENS)), spec("timestep", (batch,))],
            "outputs": [spec("noise_pred", (batch, *latent))], "precision": "fp32", "resolution": [height, width]}
        methods[f"decode_{height}x{width}"] = {
            "inputs": [spec("latents", (1, *latent))], "outputs": [spec("image", (1, 3, height, width))],
            "precision": "fp32", "resolution": [height, width]}
    vectors = {}
    for method, io in methods.items():
        for kind in ("input", "output"):
            for item in io[f"{kind}s"]:
                shape = tuple(item["shape"])
                vectors[f"{method}.{kind}.{item['name']}"] = (
                    torch.randint(0, 100, shape, generator=gen) if item["dtype"] == "int64" else torch.randn(shape, generator=gen))
    save_file(vectors, str(folder / "test_vectors.safetensors"))
    (folder / "model.pte").write_bytes(np.random.default_rng(0).bytes(512))
    for role, name, content in (("tokenizer", "tokenizer.json", "{}"), ("scheduler", "scheduler_config.json", "{}")):
        (folder / role).mkdir(exist_ok=True)
        (folder / role / name).write_text(content)
    roles = {"program": "model.pte", "test_vectors": "test_vectors.safetensors", "tokenizer": "tokenizer",
             "scheduler": "scheduler"}
    first = f"denoise_{sizes[0][0]}x{sizes[0][1]}"
    manifest = build_manifest(
        model={"source": "tiny-pixart-edit", "family": "pixart"}, resolution=sizes[0], batch=batch,
        prompt_tokens=PROMPT_TOKENS, backend="xnnpack", precision="fp32", quantization=None, passes=[],
        inputs=methods[first]["inputs"], outputs=methods[first]["outputs"],
        files={role: file_entry(folder, path) for role, path in roles.items()}, delegation=None,
        program={"format": "executorch-pte", "method": first, "weights": "embedded", "methods": list(methods)})
    manifest["schema_version"] = PIPELINE_SCHEMA_VERSION
    manifest["pipeline"] = {
        "resolutions": [list(size) for size in sizes], "methods": methods,
        "text": {"tokenizers": [{"files": "tokenizer", "max_length": PROMPT_TOKENS, "input_ids": "input_ids",
                                 "attention_mask": "attention_mask", "preprocessing": "lower-strip"}],
                 "negative_prompt": ""},
        "scheduler": {"class_name": "DPMSolverMultistepScheduler", "config": {}},
        "defaults": {"steps": steps, "guidance": guidance}, "latent_channels": LATENT_CHANNELS,
    }
    write_manifest(folder, manifest)
    return folder


def run_pipeline_check(classes: Path, *args: str) -> tuple[int, dict]:
    completed = subprocess.run(["java", "-cp", str(classes), "PipelineCheck", *args],
                               capture_output=True, text=True, timeout=60)
    lines = completed.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        pytest.fail(f"no JSON answer (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return completed.returncode, json.loads(lines[-1])


# Each method's scripted durations (ms, exact in binary), call by call, cycling: the first call is
# the untimed accuracy run, then the warm-up runs, then the timed ones.
SCRIPT_MS = {"encode_prompt": [50.0, 2.5, 3.0, 2.0, 4.5, 2.25], "denoise_64x64": [90.0, 20.0, 21.5, 19.0, 25.0],
             "denoise_64x128": [70.0, 41.0, 40.0, 44.5], "decode_64x64": [30.0, 31.0, 29.5],
             "decode_64x128": [60.0, 61.25, 59.0, 62.0, 58.5, 63.0, 60.5]}


@pytest.mark.parametrize(("batch", "guidance", "calls_a_step", "prompts"), [
    (1, 4.5, 2, 2),  # guided, a batch-1 denoiser: one call per branch
    (2, 4.5, 1, 2),  # guided, both branches in one batch-2 call
    (1, 1.0, 1, 1),  # no guidance: one branch, the prompt encoded once
], ids=["guided-batch1", "guided-batch2", "unguided"])
def test_pipeline_benchmark_times_every_method_and_costs_an_image(java_classes, tmp_path, batch, guidance,
                                                                  calls_a_step, prompts):
    from edit_mobile.runtime import device_profile
    from edit_mobile.runtime.manifest import read_manifest
    from edit_mobile.runtime.profile_pipeline import image_estimate
    from edit_mobile.runtime.profiling import latency_stats

    folder = write_pipeline_artifact(tmp_path / "pipeline", batch=batch, guidance=guidance, steps=7)
    warmup, iters, load_ms = 2, 5, 12.5
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"warmup": warmup, "iters": iters, "load_ms": load_ms, "ms": SCRIPT_MS}))

    code, answer = run_pipeline_check(java_classes, "benchmark", str(folder), str(request))

    assert code == 0, answer
    assert sorted(answer["files_verified"]) == ["program", "scheduler", "test_vectors", "tokenizer"]
    # Every method of the program: loaded once, then 1 accuracy + warm-up + timed calls.
    assert answer["loads"] == {name: 1 for name in SCRIPT_MS}
    assert answer["calls"] == {name: 1 + warmup + iters for name in SCRIPT_MS}
    manifest = read_manifest(folder)
    assert list(answer["methods"]) == list(manifest.pipeline["methods"])  # the manifest's order
    medians = {}
    for name, script in SCRIPT_MS.items():
        method = answer["methods"][name]
        timed = [script[(1 + warmup + i) % len(script)] for i in range(iters)]
        assert method["latencies_ms"] == timed, name  # exactly the scripted calls after the warm-up
        assert method["warmup"] == warmup and method["load_ms"] == load_ms
        assert method["memory_source"] == "VmHWM" and method["etdump"] == "/sdcard/fake/results.etdp"
        assert answer["psnr"][name] == [200.0] * len(answer["psnr"][name])  # outputs checked, identical
        medians[name] = float(np.median(timed))
    peaks = [method["peak_memory_bytes"] for method in answer["methods"].values()]
    assert peaks == sorted(peaks) and peaks[0] > 2**20  # read after each method's runs
    # One image: encode x prompts, steps x (denoise x calls a step), one decode; as the host's formula.
    pipeline = answer["pipeline"]
    assert pipeline["steps"] == 7 and pipeline["guidance"] == guidance
    for height, width in PIPELINE_SIZES:
        size = f"{height}x{width}"
        cost = pipeline["image_ms"][size]
        assert cost["encode"] == prompts * medians["encode_prompt"]
        assert cost["per_step"] == calls_a_step * medians[f"denoise_{size}"]
        assert cost["decode"] == medians[f"decode_{size}"]
        assert cost["total"] == pytest.approx(cost["encode"] + 7 * cost["per_step"] + cost["decode"], rel=1e-12)
    host = image_estimate(manifest.pipeline, {name: latency_stats([ms / 1000 for ms in answer["methods"][name]["latencies_ms"]])
                                              for name in SCRIPT_MS})
    for size, cost in host.items():
        assert pipeline["image_ms"][size] == pytest.approx({k: cost[k] for k in ("encode", "per_step", "decode", "total")},
                                                           rel=1e-9)
    assert f"one 64x128 image, 7 steps{' with guidance' if guidance > 1 else ''}" in answer["screen"]
    assert sum("of 5): checking its outputs" in line for line in answer["progress"]) == 5

    # The blocks the app writes, in a results JSON as BenchmarkResults wraps them, are what the host reads.
    results = tmp_path / "results.json"
    results.write_text(json.dumps({
        "schema": device_profile.RESULTS_SCHEMA, "schema_version": device_profile.RESULTS_SCHEMA_VERSION, "status": "ok",
        "device": {"model": "JVM", "manufacturer": "test", "os": "none", "abi": "jvm"}, "runtime": "executorch-android",
        "backends": [], "artifact": str(folder), "model": "tiny-pixart-edit", "threads": 0,
        "methods": answer["methods"], "pipeline": pipeline}))
    read = device_profile.read_results(results)
    assert device_profile.check_artifact_methods(read, manifest, "the JVM run") == host


def test_pipeline_benchmark_refuses_missing_vectors_in_one_line(java_classes, tmp_path):
    from edit_mobile.export.manifest import file_entry

    folder = write_pipeline_artifact(tmp_path / "pipeline")
    vectors = load_file(str(folder / "test_vectors.safetensors"))
    del vectors["decode_64x128.input.latents"]
    save_file(vectors, str(folder / "test_vectors.safetensors"))
    update_manifest(folder, lambda m: m["files"].update(test_vectors=file_entry(folder, "test_vectors.safetensors")))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"warmup": 0, "iters": 1, "load_ms": 1.0, "ms": SCRIPT_MS}))
    code, answer = run_pipeline_check(java_classes, "benchmark", str(folder), str(request))
    assert code == 3 and "has no tensor 'decode_64x128.input.latents'" in answer["error"], answer


# ---------------------------------------------------------------- one PSNR, three languages

def psnr_pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    ref = torch.randn(3, 64, generator=gen)
    zeros = torch.zeros(3, 64)
    noise = torch.randn(3, 64, generator=gen)
    with_nan, with_inf, with_neg_inf = ref.clone(), ref.clone(), ref.clone()
    with_nan[1, 7], with_inf[2, 3], with_neg_inf[0, 0] = float("nan"), float("inf"), float("-inf")
    return {
        "identical": (ref, ref.clone()),
        "all-zero-identical": (zeros, zeros.clone()),
        "zero-reference": (zeros, 1e-3 * noise),
        "small-noise": (ref, ref + 1e-4 * noise),
        "large-noise": (ref, ref + 10 * noise),  # below 0 dB
        "nan-output": (ref, with_nan),
        "inf-output": (ref, with_inf),
        "neg-inf-output": (ref, with_neg_inf),
        "nan-reference": (with_nan, ref),
    }


def test_java_psnr_is_pythons_on_shared_vectors(java_classes, tmp_path):
    from edit_mobile.runtime.metrics import PERFECT_DB, closeness

    pairs = psnr_pairs()
    tensors = {}
    for case, (ref, out) in pairs.items():
        tensors[f"ref.{case}"], tensors[f"out.{case}"] = ref.clone(), out.clone()  # no shared storage
    save_file(tensors, str(tmp_path / "pairs.safetensors"))
    completed = run_jvm_check(java_classes, "psnr", str(tmp_path / "pairs.safetensors"))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    java = {}
    for line in completed.stdout.splitlines():
        found = json.loads(line.removeprefix("EDIT_DEMO_PSNR "))
        java[found.pop("case")] = found
    assert set(java) == set(pairs)

    for case, (ref, out) in pairs.items():
        if not (torch.isfinite(ref).all() and torch.isfinite(out).all()):
            # Python is being changed to report these as failures too; Java must already.
            assert "psnr_db" not in java[case], case
            which = "reference" if "reference" in case else "output"
            assert java[case]["error"].startswith(f"non-finite {which}: "), case
            continue
        assert java[case]["psnr_db"] == pytest.approx(closeness(ref, out).psnr_db, abs=1e-6), case
    assert java["identical"]["psnr_db"] == java["all-zero-identical"]["psnr_db"] == PERFECT_DB
    assert java["zero-reference"]["psnr_db"] == -PERFECT_DB
    assert java["large-noise"]["psnr_db"] < 0 < java["small-noise"]["psnr_db"] < PERFECT_DB


def swift_function(source: str, name: str) -> str:
    """The text of `func name(...)` up to the next func / MARK (Swift is read, not compiled)."""
    start = source.index(f"func {name}(")
    end = min((i for i in (source.find("\n  static func", start + 1), source.find("\n  func", start + 1),
                           source.find("// MARK", start + 1)) if i > 0), default=len(source))
    return source[start:end]


def test_ios_psnr_has_pythons_cases():
    metrics = (SWIFT_SOURCES / "Metrics.swift").read_text()
    psnr = swift_function(metrics, "psnrDb")
    assert "static let perfectDb = 200.0" in metrics
    assert "if rmse == 0 { return perfectDb }" in psnr  # all-zero identical included
    assert "if peak == 0 { return -perfectDb }" in psnr
    assert "isFinite" in psnr and "return .nan" in psnr
    # The caller turns NaN / inf into a failure with the Android app's words.
    run = (SWIFT_SOURCES / "DemoRun.swift").read_text()
    assert '"non-finite output: ' in run and '"non-finite reference: ' in run


def test_ios_reads_hostile_files_with_checked_arithmetic():
    safetensors = (SWIFT_SOURCES / "SafeTensors.swift").read_text()
    read = swift_function(safetensors, "read")
    assert "addingReportingOverflow" in safetensors and "multipliedReportingOverflow" in safetensors
    # No trapping arithmetic on header values: every sum / product of them goes through those.
    assert not re.search(r"8 \+ headerLength|dataStart \+ end|reduce\(1, \*\)", read), read
    manifest = (SWIFT_SOURCES / "ArtifactManifest.swift").read_text()
    assert "resolvingSymlinksInPath()" in manifest and "hasPrefix(" in manifest and '".."' in manifest
    # The same refusals, in the same words, as the Android app's.
    java = "".join(p.read_text() for p in JAVA_SOURCES.glob("*.java"))
    swift = "".join(p.read_text() for p in SWIFT_SOURCES.glob("*.swift"))
    for words in ("outside the artifact folder", "climbs out with '..'", "is an absolute path",
                  "nested deeper than", "does not fit the file", "are reversed", "has too many elements",
                  "run past the end of the"):
        assert words in java and words in swift, words


def _syntax_errors(grammar_module: str, sources: list[Path]) -> dict[str, list[str]]:
    """Each source's ERROR / MISSING nodes under tree-sitter's grammar for its language."""
    tree_sitter = pytest.importorskip("tree_sitter", reason="dev extra: pip install -e '.[dev]'")
    grammar = pytest.importorskip(grammar_module, reason="dev extra: pip install -e '.[dev]'")
    parser = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
    assert parser.parse(b"func f() { let x = (1 + }").root_node.has_error  # the check can fail

    def broken(node) -> list[str]:
        here = [f"line {node.start_point[0] + 1}: {node.text[:50]!r}"] if node.type == "ERROR" or node.is_missing else []
        return here + [line for child in node.children for line in broken(child)]

    problems = {p.name: broken(parser.parse(p.read_bytes()).root_node) for p in sources}
    return {name: lines for name, lines in problems.items() if lines}


def test_ios_sources_parse_as_swift():
    """No Swift compiler here: tree-sitter's Swift grammar at least parses every source, so a
    syntax slip (an unclosed brace, a stray token) is caught; types and the SDK calls are not."""
    sources = sorted(SWIFT_SOURCES.glob("*.swift"))
    assert {"Schedulers.swift", "TextToImage.swift", "PipelineSpec.swift", "DrawScreen.swift",
            "PromptTokenizer.swift"} <= {p.name for p in sources}
    assert _syntax_errors("tree_sitter_swift", sources) == {}


def test_ios_pins_the_swift_transformers_it_was_read_against():
    """PromptTokenizer.swift's checks describe one swift-transformers release: project.yml pins it."""
    project = (REPO / "ios_demo" / "project.yml").read_text()
    package = re.search(r"\n  swift-transformers:\n    url: (\S+)\n(?:    #.*\n)*    exactVersion: (\S+)", project)
    assert package and package.group(1) == "https://github.com/huggingface/swift-transformers"
    assert re.search(r"- package: swift-transformers\n\s+product: Tokenizers", project)
    source = (SWIFT_SOURCES / "PromptTokenizer.swift").read_text()
    assert "import Tokenizers" in source and "AutoTokenizer.from(modelFolder: folder)" in source
    assert set(re.findall(r"swift-transformers (\d+\.\d+\.\d+)", source)) == {package.group(2)}


def test_ios_swift_tokenizer_checks_take_the_shipped_t5_and_refuse_clip():
    """No Swift here: TokenizerSupport's lists, read from PromptTokenizer.swift and applied as it
    applies them to the shipped pipelines' tokenizer folders: T5 passes, CLIP is refused."""
    source = (SWIFT_SOURCES / "PromptTokenizer.swift").read_text()
    lists = {name: set(re.findall(r'"([^"]+)"', body))
             for name, body in re.findall(r"static let (\w+): Set<String> = \[(.*?)\]", source, re.S)}
    classes = dict(re.findall(r'"(\w+)": "(\w+)"', re.search(r"static let classes = \[(.*?)\]", source).group(1)))
    steps = [("normalizer", lists["normalizers"], "normalizers"),
             ("pre_tokenizer", lists["preTokenizers"], "pretokenizers"),
             ("post_processor", lists["postProcessors"], "processors")]

    def unknown(node, known: set[str], nested: str) -> str | None:
        if not isinstance(node, dict):
            return None
        kind = "Metaspace without split" if node["type"] == "Metaspace" and node.get("split") is False else node["type"]
        if kind not in known:
            return kind
        return next((found for child in node.get(nested, []) if (found := unknown(child, known, nested))), None)

    def refusal(folder: Path) -> str | None:
        config = json.loads((folder / "tokenizer_config.json").read_text())
        data = json.loads((folder / "tokenizer.json").read_text())
        name = config.get("tokenizer_class", "none").replace("Fast", "")
        if classes.get(name) != data["model"]["type"] or data["model"].get("byte_fallback"):
            return name
        return next((f"{key} {found}" for key, known, nested in steps if (found := unknown(data.get(key), known, nested))), None)

    pretrained = REPO / "pretrained"
    assert refusal(pretrained / "shapes-pixart" / "tokenizer") is None
    assert refusal(pretrained / "shapes-sd3" / "tokenizer_3") is None
    assert refusal(pretrained / "shapes-sd3" / "tokenizer") == refusal(pretrained / "shapes-sd3" / "tokenizer_2") == "CLIPTokenizer"


def test_android_kotlin_sources_parse():
    """The Kotlin (activity, runners) is built on a phone's toolchain only; here it is parsed."""
    sources = sorted((REPO / "android_demo").rglob("*.kt")) + sorted((REPO / "android_demo").rglob("*.kts"))
    assert {"MainActivity.kt", "DrawRun.kt"} <= {p.name for p in sources}
    assert _syntax_errors("tree_sitter_kotlin", sources) == {}
