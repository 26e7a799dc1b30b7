"""Calibration prompts: one a line, UTF-8, blank lines and `#` comments skipped."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.safe_read import read_text_file

DEFAULT_PROMPTS = "prompts.txt"


def default_prompts_path() -> Path:
    """The varied prompt set shipped in the package (used when no --prompts is given)."""
    return Path(str(resources.files("edit_mobile.calibration").joinpath(DEFAULT_PROMPTS)))


def parse_prompts(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_prompts(path: str | os.PathLike | None = None) -> list[str]:
    """Prompts of a file (the shipped default set when `path` is None)."""
    path = Path(path) if path is not None else default_prompts_path()
    text = read_text_file(path, "prompts file")
    prompts = parse_prompts(text)
    if not prompts:
        raise UserError(
            f"prompts file {path} has no prompts; write one prompt a line (# starts a comment)"
        )
    return prompts


def prompts_sha256(prompts: list[str]) -> str:
    """Hash of the parsed prompts, so comment or blank-line edits do not change it."""
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()
