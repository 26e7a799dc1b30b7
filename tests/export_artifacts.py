"""Artifacts exported once per test session and shared by the test_export_* modules.

An export of a tiny preset costs seconds (ONNX, Core ML) to a minute (ExecuTorch lowering on
a busy 2-core machine), so each (model, backend, options) is exported once, into a private
temporary folder removed at exit, and every test reading it gets the same folder.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

_ROOT: Path | None = None
_CACHE: dict[str, Path] = {}


def scratch_root() -> Path:
    """One private temporary folder for the test session's shared artifacts, removed at exit."""
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="edit-mobile-tests-"))
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def exported(model: str, backend: str, **options) -> Path:
    """ART_DIR of `edit-mobile export model --backend backend` with ExportRequest options."""
    from edit_mobile.export.artifact import ExportRequest, export_artifact

    key = json.dumps([model, backend, options], sort_keys=True, default=str)
    if key not in _CACHE:
        output = scratch_root() / f"{model}-{backend}-{len(_CACHE)}"
        export_artifact(ExportRequest(model=model, backend=backend, output=output, **options))
        _CACHE[key] = output
    return _CACHE[key]


def manifest(art_dir: Path) -> dict:
    return json.loads((art_dir / "manifest.json").read_text())


def load_test_vectors(art_dir: Path) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Inputs in the manifest's order and the PyTorch reference output."""
    data = manifest(art_dir)
    tensors = load_file(str(art_dir / data["files"]["test_vectors"]["path"]))
    inputs = [tensors[f"input.{spec['name']}"] for spec in data["inputs"]]
    return inputs, tensors[f"output.{data['outputs'][0]['name']}"]


def max_abs_diff(a, b) -> float:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def files_of(art_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(art_dir).as_posix(): p.read_bytes() for p in sorted(art_dir.rglob("*")) if p.is_file()}


def attention_or_mlp_outside(coverage: dict) -> dict:
    """Compute ops of attention (attn*) or MLP (ff) modules that run outside the delegate."""
    return {
        path: ops
        for path, ops in coverage["non_delegated_compute"].items()
        if any(part.startswith(("attn", "ff")) for part in path.split("."))
    }
