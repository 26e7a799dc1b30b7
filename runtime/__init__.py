"""Run exported artifacts: one session interface over ExecuTorch, onnxruntime, Core ML and the
PyTorch reference; validation against the reference, profiling, and text-to-image.

    from edit_mobile.runtime import load, load_reference
    session = load("artifacts/tiny-xnnpack")   # verifies manifest.json and every file's sha256
    noise = session(*inputs)                   # inputs checked against the manifest first

Heavy runtimes load on first use, so importing this package is cheap.
"""

from edit_mobile.runtime.manifest import Manifest, read_manifest
from edit_mobile.runtime.session import Session, load, load_reference

__all__ = ["Manifest", "Session", "load", "load_reference", "read_manifest"]
