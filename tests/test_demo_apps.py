"""The Android / iOS demo apps against the exporter, as far as this machine can check them.

No Android SDK, Kotlin compiler or Xcode here, so the apps are not built. What is checked:
- the manifest keys and values each app reads (its marked MANIFEST KEYS block) exist where the
  exporter writes them (edit_mobile.export.manifest, the models' TensorSpec, the schema in the
  helper brief), and the two apps read the same ones;
- the Android app's plain-Java logic (manifest, sha256 of files and folders, safetensors,
  PSNR, latency statistics, result line) compiled with javac and run on an artifact folder built
  with the exporter's own functions from the real tiny EDiT model, against Python's figures;
- refusals: a tampered file, a manifest whose shape disagrees with the test vectors;
- the iOS app (Swift, not compiled here) by inspection: same result-line prefix and fields.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from edit_mobile.fileio import sha256_file
from edit_mobile.models import DenoiserWrapper, TensorSpec, TransformerSignature, load_transformer

REPO = Path(__file__).resolve().parents[1]
JAVA_SOURCES = REPO / "android_demo" / "app" / "src" / "main" / "java" / "org" / "editmobile" / "demo"
JAVA_DRIVER = REPO / "android_demo" / "jvm_check" / "JvmCheck.java"
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
BRIEF_FILE_ROLES = {"program", "bundled_program", "test_vectors", "reference_model"}
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
    """What edit_mobile.export writes, where it exists; the brief's schema otherwise."""
    try:
        from edit_mobile.export import manifest as export_manifest
    except ImportError:
        return {"schema": "edit-mobile/manifest", "schema_version": 1, "backends": BRIEF_BACKENDS,
                "top_keys": BRIEF_TOP_KEYS, "file_keys": BRIEF_FILE_KEYS}
    built = build_manifest_dict(
        inputs=[TensorSpec("x", (1, 4, 16, 16)).to_dict()], outputs=[], files={}, backend="xnnpack"
    )
    return {"schema": export_manifest.SCHEMA, "schema_version": export_manifest.SCHEMA_VERSION,
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
    fields = {k for k in java if not k.startswith("BACKEND_")}
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
    """The exporter's build_manifest where it exists, else the brief's schema by hand."""
    fields = dict(model=model or {"source": "tiny-pixart-edit"}, resolution=(128, 128), batch=1,
                  prompt_tokens=120, backend=backend, precision="fp32", quantization=None,
                  passes=[], inputs=inputs, outputs=outputs, files=files, delegation=None)
    try:
        from edit_mobile.export.manifest import build_manifest
    except ImportError:
        return {"schema": "edit-mobile/manifest", "schema_version": 1, "created_by": "test",
                **fields, "resolution": [128, 128], "tools": {}}
    return build_manifest(**fields)


def file_entry_dict(root: Path, relative: str) -> dict:
    try:
        from edit_mobile.export.manifest import file_entry
    except ImportError:
        path = root / relative
        return {"path": relative, "sha256": sha256_file(path), "bytes": path.stat().st_size}
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


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory) -> Path:
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("javac/java not on PATH: the Android app's Java logic cannot be compiled here")
    classes = tmp_path_factory.mktemp("classes")
    sources = [str(p) for p in sorted(JAVA_SOURCES.glob("*.java"))] + [str(JAVA_DRIVER)]
    # --release 8: only APIs every Android version the app targets has.
    subprocess.run(["javac", "--release", "8", "-Xlint:all", "-Werror", "-d", str(classes), *sources],
                   check=True, capture_output=True, text=True, timeout=120)
    return classes


def run_java(classes: Path, folder: Path, produced: Path, warmup: int, runs_ms: list[float]):
    completed = subprocess.run(
        ["java", "-cp", str(classes), "JvmCheck", str(folder), str(produced), str(warmup),
         ",".join(repr(t) for t in runs_ms)],
        capture_output=True, text=True, timeout=60,
    )
    line = next(out for out in completed.stdout.splitlines() if out.startswith(RESULT_PREFIX))
    return completed.returncode, json.loads(line[len(RESULT_PREFIX):]), completed.stdout


def python_psnr(reference: torch.Tensor, produced: torch.Tensor) -> tuple[float, float]:
    try:
        from edit_mobile.runtime.metrics import closeness
    except ImportError:
        ref, out = reference.double().flatten(), produced.double().flatten()
        rmse = float((out - ref).square().mean().sqrt())
        return 20 * np.log10(float(ref.abs().max()) / rmse), float((out - ref).abs().max())
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
    """ExecuTorch artifacts `make demo` left in demo_out/, if any (written by the real exporter)."""
    found = []
    for manifest in sorted((REPO / "demo_out").glob("**/manifest.json")):
        backend = json.loads(manifest.read_text()).get("backend")
        if backend in {"xnnpack", "vulkan", "qnn"}:
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
