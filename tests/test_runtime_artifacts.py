"""Artifacts the runtime tests run, built once per test session, and ways to damage them.

The tiny EDiT PixArt (tiny-pixart-edit), exported for real:
- ONNX by `edit-mobile export` itself (edit_mobile.export.export_artifact);
- XNNPACK by ExecuTorch directly, laid out as `edit-mobile export` lays it out (manifest
  schema v1 written with edit_mobile.export.manifest, test vectors, reference/, a
  BundledProgram) plus the ETRecord per-layer debugging and per-block profiling need, which the
  exporter does not write yet (manifest file role "etrecord"). When it does, `_export_xnnpack`
  becomes a call to export_artifact like `_export_onnx`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from export_artifacts import scratch_root

from edit_mobile.export.manifest import build_manifest, file_entry, write_manifest

MODEL = "tiny-pixart-edit"
RESOLUTION = 128
PERTURBED_WEIGHT = "transformer_blocks.1.ff.net.2.weight"  # the last block's MLP output projection

_built: dict[str, Path] = {}


def artifact(kind: str) -> Path:
    """'xnnpack' or 'onnx': the artifact folder, exported on first request."""
    if kind not in _built:
        builders = {"xnnpack": _export_xnnpack, "onnx": _export_onnx}
        _built[kind] = builders[kind](scratch_root() / f"tiny-{kind}")
    return _built[kind]


def copy_artifact(kind: str, destination: Path) -> Path:
    shutil.copytree(artifact(kind), destination)
    return destination


def rehash(art_dir: Path, role: str) -> None:
    """Record a changed file's new sha256 and size, as if export had written it so."""
    path = art_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][role] = file_entry(art_dir, manifest["files"][role]["path"])
    path.write_text(json.dumps(manifest, indent=2))


def perturb_program_weight(art_dir: Path, weight: str = PERTURBED_WEIGHT) -> None:
    """Scale one weight inside the program file itself (ExecuTorch and ONNX store float32
    weights verbatim, possibly transposed) and re-record its hash: the program now disagrees
    with reference/ in exactly that layer."""
    from safetensors.torch import load_file

    reference = {}
    for file in (art_dir / "reference").glob("*.safetensors"):
        reference.update(load_file(file))
    values = reference[weight].numpy()
    program = art_dir / json.loads((art_dir / "manifest.json").read_text())["files"]["program"]["path"]
    data = bytearray(program.read_bytes())
    for layout in (values, np.ascontiguousarray(values.T)):
        start = data.find(layout.tobytes())
        if start >= 0 and data.find(layout.tobytes(), start + 1) < 0:
            break
    else:
        raise AssertionError(f"{weight} is not stored verbatim once in {program.name}")
    changed = layout * 1.5 + 0.05
    data[start : start + changed.nbytes] = changed.astype(np.float32).tobytes()
    program.write_bytes(bytes(data))
    rehash(art_dir, "program")


# --- building ---------------------------------------------------------------------------------


def _model():
    from edit_mobile.models import DenoiserWrapper, TransformerSignature, load_transformer

    model = load_transformer(MODEL)
    signature = TransformerSignature.of(model, RESOLUTION, RESOLUTION)
    return model, DenoiserWrapper(model).eval(), signature


def _common_files(staging: Path, model, wrapper, signature) -> tuple[tuple, torch.Tensor]:
    from safetensors.torch import save_file

    inputs = signature.example_inputs(seed=0)
    with torch.no_grad():
        expected = wrapper(*inputs)
    model.save_pretrained(staging / "reference", safe_serialization=True)
    tensors = {f"input.{spec.name}": x.contiguous() for spec, x in zip(signature.inputs, inputs, strict=True)}
    tensors["output.noise_pred"] = expected.contiguous()
    save_file(tensors, str(staging / "test_vectors.safetensors"))
    return inputs, expected


def _write_manifest(staging: Path, model, signature, backend: str, roles: dict, delegation=None, passes=()) -> None:
    from edit_mobile.models import is_edit, model_family

    config = {key: value for key, value in dict(model.config).items() if not key.startswith("_")}
    roles = {**roles, "test_vectors": "test_vectors.safetensors", "reference_model": "reference"}
    manifest = build_manifest(
        model={"source": MODEL, "family": model_family(model), "edit": is_edit(model),
               "class_name": type(model).__name__, "config": config},
        resolution=signature.resolution, batch=1, prompt_tokens=signature.prompt_tokens,
        backend=backend, precision="fp32", quantization=None, passes=list(passes),
        inputs=[spec.to_dict() for spec in signature.inputs],
        outputs=[spec.to_dict() for spec in signature.outputs],
        files={role: file_entry(staging, path) for role, path in sorted(roles.items())},
        delegation=delegation,
    )
    write_manifest(staging, manifest)


def _export_xnnpack(folder: Path) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import (
        serialize_from_bundled_program_to_flatbuffer,
    )
    from executorch.exir import to_edge_transform_and_lower

    from edit_mobile.export.passes import apply_passes, default_passes
    from edit_mobile.models import DenoiserWrapper

    model, wrapper, signature = _model()
    folder.mkdir(parents=True)
    inputs, expected = _common_files(folder, model, wrapper, signature)
    passes = default_passes("xnnpack")  # the exporter's mobile rewrites, as `edit-mobile export` applies them
    rewritten = _model()[0]  # a second copy: the passes rebuild modules, reference/ keeps the original
    exported = torch.export.export(DenoiserWrapper(apply_passes(rewritten, passes)).eval(), inputs, strict=False)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()], generate_etrecord=True)
    program = edge.to_executorch()
    (folder / "model.pte").write_bytes(program.buffer)
    program.get_etrecord().save(str(folder / "etrecord.bin"))
    suite = MethodTestSuite("forward", [MethodTestCase(inputs=list(inputs), expected_outputs=[expected])])
    (folder / "model.bpte").write_bytes(serialize_from_bundled_program_to_flatbuffer(BundledProgram(program, [suite])))
    roles = {"program": "model.pte", "bundled_program": "model.bpte", "etrecord": "etrecord.bin"}
    _write_manifest(folder, model, signature, "xnnpack", roles, {"delegates": ["XnnpackBackend"]}, passes)
    return folder


def _export_onnx(folder: Path) -> Path:
    """The real exporter (`edit-mobile export MODEL --backend onnx`), default passes included."""
    from edit_mobile.export.artifact import ExportRequest, export_artifact

    return export_artifact(ExportRequest(model=MODEL, backend="onnx", output=folder, resolution=(RESOLUTION, RESOLUTION)))


# --- the artifacts themselves follow the schema -------------------------------------------------


@pytest.mark.parametrize("kind", ["xnnpack", "onnx"])
def test_built_artifacts_read_back_with_every_file_verified(kind):
    from edit_mobile.runtime.manifest import read_manifest

    manifest = read_manifest(artifact(kind))
    assert manifest.backend == kind
    assert [spec.name for spec in manifest.inputs] == ["hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"]
    assert manifest.outputs[0].shape == (1, 8, 16, 16)
    assert {"program", "test_vectors", "reference_model"} <= set(manifest.files)
