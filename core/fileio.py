"""Artifacts appear whole or not at all: written to a temporary folder, renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edit_mobile.errors import UserError


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target`.

    On any exception the temporary folder is removed and `target` is left as it was.
    """
    target = Path(target).absolute()
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
    except OSError as err:
        raise UserError(
            f"cannot write to {parent}: {err.strerror}; choose a writable output folder with -o"
        ) from err
    if target.exists() and not overwrite:
        shutil.rmtree(staging)
        raise UserError(f"{target} already exists; remove it or pass another -o")
    try:
        yield staging
        if target.exists():
            # Two renames keep a complete folder at `target` at every moment but one.
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.replace(target, trash / target.name)
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
