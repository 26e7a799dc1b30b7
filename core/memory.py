"""Giving memory back between the stages of a large export.

Python frees an object when its last reference goes, but glibc keeps freed heap pages for
reuse: after lowering a real-size model ~0.7 GB of freed chunks stayed resident, and the next
stage (the runtime loading the program's weights) stacked on top of them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


def release_freed_memory() -> None:
    """Collect unreachable cycles, then return the freed heap to the system (glibc only)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
