"""Run exported artifacts: one session interface over ExecuTorch, onnxruntime, Core ML and the
PyTorch reference; validation against the reference, profiling, and text-to-image.

    from edit_mobile.runtime import load, load_reference
    session = load("artifacts/tiny-xnnpack")   # verifies manifest.json and every file's sha256
    noise = session(*inputs)                   # inputs checked against the manifest first

Names load on first use (torch and the runtimes are heavy), so `edit-mobile --help`,
which imports edit_mobile.runtime.cli, stays quick.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Manifest": "edit_mobile.runtime.manifest",
    "read_manifest": "edit_mobile.runtime.manifest",
    "Session": "edit_mobile.runtime.session",
    "load": "edit_mobile.runtime.session",
    "load_reference": "edit_mobile.runtime.session",
    "profile": "edit_mobile.runtime.profiling",
    "build_pipeline": "edit_mobile.runtime.pipeline",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
