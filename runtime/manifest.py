"""manifest.json (schema `edit-mobile/manifest` v1): what an artifact holds and how to call it.

The runtime and the demo apps learn everything from this file: input / output specs, the
backend, precision, quantization, and every file with its sha256. Reading a manifest checks
the schema and, unless asked not to, that every listed file is present and unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edit_mobile.errors import UserError
from edit_mobile.export.manifest import MANIFEST_NAME, PRECISIONS, SCHEMA, SCHEMA_VERSION

REQUIRED_FIELDS = ("model", "resolution", "batch", "backend", "precision", "inputs", "outputs", "files")
KNOWN_DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")


@dataclass(frozen=True)
class IOSpec:
    """One input or output as the manifest states it."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.name} {list(self.shape)} {self.dtype}"


@dataclass(frozen=True)
class FileEntry:
    role: str
    path: Path  # absolute
    relative: str
    sha256: str
    bytes: int | None

    @property
    def is_dir(self) -> bool:
        return self.path.is_dir()


class Manifest:
    """A parsed, checked manifest of the artifact folder `root`."""

    def __init__(self, root: Path, data: dict):
        self.root = root
        self.data = data
        self.inputs = tuple(_io_spec(item, "inputs") for item in data["inputs"])
        self.outputs = tuple(_io_spec(item, "outputs") for item in data["outputs"])
        self.files = {role: _file_entry(root, role, entry) for role, entry in data["files"].items()}

    # The fields every consumer reads, named.
    @property
    def backend(self) -> str:
        return self.data["backend"]

    @property
    def precision(self) -> str:
        return self.data["precision"]

    @property
    def quantization(self) -> dict | None:
        return self.data.get("quantization")

    @property
    def model(self) -> dict:
        return self.data["model"]

    @property
    def family(self) -> str:
        return self.model.get("family", "pixart")

    @property
    def resolution(self) -> tuple[int, int]:
        height, width = self.data["resolution"]
        return int(height), int(width)

    @property
    def batch(self) -> int:
        return int(self.data["batch"])

    @property
    def delegates(self) -> list[str]:
        return list((self.data.get("delegation") or {}).get("delegates") or [])

    def input_spec(self, name: str) -> IOSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def has(self, role: str) -> bool:
        return role in self.files

    def file(self, role: str) -> FileEntry:
        if role not in self.files:
            raise UserError(
                f"{self.root} has no '{role}' file in its manifest (roles: {', '.join(sorted(self.files))}); "
                f"re-export the artifact with it"
            )
        return self.files[role]

    def describe(self) -> str:
        quant = (self.quantization or {}).get("scheme")
        return f"{self.model.get('source', '?')} {self.backend} {self.precision}" + (f" {quant}" if quant else "")


def read_manifest(art_dir: str | os.PathLike, verify_files: bool = True) -> Manifest:
    """Parse ART_DIR/manifest.json, check its schema and (by default) every file's sha256."""
    root = Path(art_dir)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass an artifact folder written by edit-mobile export")
    if not path.is_file():
        raise UserError(f"{root} has no {MANIFEST_NAME}: not an edit-mobile artifact; export one with edit-mobile export")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); re-export the artifact") from err
    _check_schema(path, data)
    manifest = Manifest(root.resolve(), data)
    if verify_files:
        for entry in manifest.files.values():
            verify_file(entry)
    return manifest


def _check_schema(path: Path, data) -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path} has schema {found!r}, not {SCHEMA!r}: not an edit-mobile artifact manifest")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        hint = "update edit-mobile" if isinstance(version, int) and version > SCHEMA_VERSION else "re-export the artifact"
        raise UserError(f"{path} has schema_version {version!r}; this runtime reads version {SCHEMA_VERSION}: {hint}")
    missing = [field for field in REQUIRED_FIELDS if field not in data]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; re-export the artifact")
    if data["precision"] not in PRECISIONS:
        raise UserError(f"{path}: precision {data['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if not isinstance(data["files"], dict) or "program" not in data["files"] and "bundled_program" not in data["files"]:
        raise UserError(f"{path} lists no 'program' file; re-export the artifact")


def _io_spec(item, section: str) -> IOSpec:
    try:
        spec = IOSpec(str(item["name"]), tuple(int(d) for d in item["shape"]), str(item["dtype"]))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"manifest {section} entry {item!r} needs name, shape and dtype ({err})") from err
    if spec.dtype not in KNOWN_DTYPES:
        raise UserError(f"manifest {section} '{spec.name}' has unknown dtype {spec.dtype!r} (known: {', '.join(KNOWN_DTYPES)})")
    return spec


def _file_entry(root: Path, role: str, entry) -> FileEntry:
    if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
        raise UserError(f"manifest file '{role}' needs path and sha256, got {entry!r}; re-export the artifact")
    relative = str(entry["path"])
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise UserError(f"manifest file '{role}' path {relative!r} leaves the artifact folder; it must be relative inside it")
    size = entry.get("bytes")
    return FileEntry(role, root / pure, relative, str(entry["sha256"]).lower(), None if size is None else int(size))


def verify_file(entry: FileEntry) -> None:
    """Refuse a missing, truncated or changed file (or folder), in one line naming it.

    Hashes are computed exactly as export wrote them (edit_mobile.export.manifest.file_entry:
    a folder's is the sha256 of '<relative path>\\0<file sha256>\\n' over its files in path order)."""
    from edit_mobile.export.manifest import file_entry

    if not entry.path.exists():
        raise UserError(f"{entry.relative} ({entry.role}) listed in the manifest is missing from {entry.path.parent}")
    if entry.path.is_file() and entry.bytes is not None:
        actual = entry.path.stat().st_size
        if actual != entry.bytes:
            raise UserError(
                f"{entry.relative} ({entry.role}) is {actual} bytes but the manifest says {entry.bytes}: "
                "the file is truncated or replaced; copy the artifact again or re-export it"
            )
    actual_hash = file_entry(entry.path.parent, entry.path.name)["sha256"]
    if actual_hash != entry.sha256:
        raise UserError(
            f"{entry.relative} ({entry.role}) has sha256 {actual_hash[:12]}… but the manifest says "
            f"{entry.sha256[:12]}…: it changed after export; copy the artifact again or re-export it"
        )
