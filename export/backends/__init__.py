"""Backends by name. Each lives in its own module, imported only when asked for, so that
`edit-mobile --help` stays quick and a backend's SDK is touched only when it is used."""

from __future__ import annotations

import importlib

from edit_mobile.errors import UserError
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob

# name -> module defining BACKEND (a Backend instance)
BACKEND_MODULES = {
    "xnnpack": "edit_mobile.export.backends.xnnpack",
    "vulkan": "edit_mobile.export.backends.vulkan",
    "coreml-pte": "edit_mobile.export.backends.coreml_delegate",
    "qnn": "edit_mobile.export.backends.qnn",
    "coreml": "edit_mobile.export.backends.coreml",
    "onnx": "edit_mobile.export.backends.onnx",
}


def backend_names() -> list[str]:
    return list(BACKEND_MODULES)


def get_backend(name: str) -> Backend:
    if name not in BACKEND_MODULES:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_MODULES)}")
    return importlib.import_module(BACKEND_MODULES[name]).BACKEND


__all__ = ["Backend", "BackendResult", "LoweringJob", "backend_names", "get_backend"]
