"""manifest.json: the one file the runtime and the demo apps read to know how to call a model.

Schema `edit-mobile/manifest` version 1 (see ../notes or the README for the field list).
Written with sorted keys and no timestamps, so the same export gives the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from edit_mobile import __version__
from edit_mobile.fileio import sha256_file

SCHEMA = "edit-mobile/manifest"
SCHEMA_VERSION = 1  # one denoiser; version 2 adds `pipeline` (export --pipeline), v1 fields kept
PIPELINE_SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
BACKENDS = ("xnnpack", "vulkan", "coreml-pte", "qnn", "coreml", "onnx")
PRECISIONS = ("fp32", "fp16")
# Core ML: a package past this many MB of weights is split into chunks (Apple chunks models past
# ~1 GB for the Neural Engine); here, not in the backend, so the command line parses without torch.
COREML_CHUNK_MB = 1024.0

# Distributions whose versions decide the bytes of an artifact.
_TOOLS = ("torch", "executorch", "torchao", "coremltools", "onnx", "onnxruntime", "onnxscript",
          "diffusers", "safetensors")


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _directory_digest(folder: Path) -> tuple[str, int]:
    """sha256 over '<relative path>\\0<file sha256>\\n' of every file, in sorted path order."""
    digest = hashlib.sha256()
    total = 0
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\0{sha256_file(path)}\n".encode())
        total += path.stat().st_size
    return digest.hexdigest(), total


def file_entry(root: Path, relative: str) -> dict[str, Any]:
    """{"path", "sha256", "bytes"} for a file, or for a folder (hash of its files' hashes)."""
    path = root / relative
    if path.is_dir():
        digest, size = _directory_digest(path)
    else:
        digest, size = sha256_file(path), path.stat().st_size
    return {"path": relative, "sha256": digest, "bytes": size}


def build_manifest(
    *,
    model: dict[str, Any],
    resolution: tuple[int, int],
    batch: int,
    prompt_tokens: int,
    backend: str,
    precision: str,
    quantization: dict[str, Any] | None,
    passes: list[str],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    files: dict[str, dict[str, Any]],
    delegation: dict[str, Any] | None,
    program: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_by": f"edit-mobile {__version__}",
        "model": model,
        "resolution": list(resolution),
        "latent": latent_grid(inputs, resolution),
        "batch": batch,
        "prompt_tokens": prompt_tokens,
        "backend": backend,
        "precision": precision,
        "quantization": quantization,
        "passes": list(passes),
        "inputs": inputs,
        "outputs": outputs,
        "files": files,
        "delegation": delegation,
        # Backend facts a device needs or an inspector reports (op types, deployment target).
        "program": program,
        "tools": tool_versions(),
    }


def latent_grid(inputs: list[dict[str, Any]], resolution: tuple[int, int]) -> list[int]:
    """The latents' (h, w): the hidden_states input's, which the family's VAE scale set (SANA's
    DC-AE is 32x); an 8x VAE's for a manifest without that input."""
    shape = next((spec["shape"] for spec in inputs if spec.get("name") == "hidden_states"), None)
    if shape is not None and len(shape) == 4:
        return [int(shape[2]), int(shape[3])]
    return [resolution[0] // 8, resolution[1] // 8]


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(dumps(manifest), encoding="utf-8")
    return path
