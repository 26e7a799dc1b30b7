"""manifest.json (schema `edit-mobile/manifest` v1): what an artifact holds and how to call it.

The runtime and the demo apps learn everything from this file: input / output specs, the
backend, precision, quantization, and every file with its sha256. Reading a manifest checks
the schema and, unless asked not to, that every listed file is present and unchanged.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edit_mobile.cli_args import MAX_PIXELS_PER_SIDE, MAX_PROMPT_TOKENS  # the one size rule
from edit_mobile.errors import UserError
from edit_mobile.export.manifest import (
    BACKENDS,
    MANIFEST_NAME,
    PIPELINE_SCHEMA_VERSION,
    PRECISIONS,
    SCHEMA,
    SCHEMA_VERSION,
)
from edit_mobile.safe_read import JsonBounds, is_int, one_line, read_json

REQUIRED_FIELDS = ("model", "resolution", "batch", "backend", "precision", "inputs", "outputs", "files")
KNOWN_DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")

# Bounds far above any real artifact, low enough that no field can make the runtime allocate,
# loop or recurse without end: a manifest is a few KiB, 4 levels deep, 4-5 tensors of at most
# ~3M elements (SD3's prompt embeddings); 2**28 float32 elements is 1 GiB.
MAX_MANIFEST_BYTES = 16 << 20
MAX_DEPTH = 32
MAX_ITEMS = 4096  # entries of any one list or object
MAX_STRING = 4096
MAX_BATCH = 1024
MAX_RANK = 8
MAX_TENSOR_ELEMENTS = 2**28
MAX_TENSORS = 64
MAX_FILE_BYTES = 2**50
SHA256_HEX = frozenset("0123456789abcdef")


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
    root: Path  # the artifact folder (resolved), which every file must stay inside

    @property
    def is_dir(self) -> bool:
        return self.path.is_dir()


class Manifest:
    """A parsed, checked manifest of the artifact folder `root`."""

    def __init__(self, root: Path, data: dict):
        self.root = root
        self.data = data
        self.inputs = tuple(_io_spec(item) for item in data["inputs"])
        self.outputs = tuple(_io_spec(item) for item in data["outputs"])
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
    def prompt_tokens(self) -> int | None:
        """The prompt length the denoiser takes (SD3: CLIP's and T5's tokens together)."""
        value = self.data.get("prompt_tokens")
        return None if value is None else int(value)

    @property
    def pipeline(self) -> dict | None:
        """Version 2 (export --pipeline): methods, resolutions, text, scheduler, defaults."""
        return self.data.get("pipeline")

    def method_specs(self, method: str) -> tuple[tuple[IOSpec, ...], tuple[IOSpec, ...]]:
        """A pipeline method's (inputs, outputs)."""
        spec = self.pipeline["methods"][method]
        return tuple(map(_io_spec, spec["inputs"])), tuple(map(_io_spec, spec["outputs"]))

    @property
    def delegates(self) -> list[str]:
        return list((self.data.get("delegation") or {}).get("delegates") or [])

    def input_spec(self, name: str) -> IOSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def has(self, role: str) -> bool:
        return role in self.files

    def weight_roles(self) -> list[str]:
        """The program's external data files: `weights` (model.ptd), then `weights.1`, ... (the
        Vulkan delegate's shards); none when the weights are in the program."""
        extra = sorted((r for r in self.files if r.startswith("weights.")), key=lambda r: int(r.split(".")[1]))
        return (["weights"] if "weights" in self.files else []) + extra

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
    _check_inside(root.resolve(), path, MANIFEST_NAME)
    data = parse_manifest_json(path)
    _check_schema(path, data)
    manifest = Manifest(root.resolve(), data)
    if verify_files:
        for entry in manifest.files.values():
            verify_file(entry)
    return manifest


def parse_manifest_json(path: Path):
    """The document, or a UserError: too big, not UTF-8 JSON, NaN / Infinity, or nested too deep."""
    bounds = JsonBounds(MAX_MANIFEST_BYTES, MAX_DEPTH, MAX_ITEMS, MAX_STRING)
    return read_json(path, "re-export the artifact", bounds)


# --- the schema: every field a consumer reads, its type and range, checked up front ---------

def _check_schema(path: Path, data) -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path} has schema {_show(found)}, not {SCHEMA!r}: not an edit-mobile artifact manifest")
    version = data.get("schema_version")
    if version not in (SCHEMA_VERSION, PIPELINE_SCHEMA_VERSION) or not is_int(version):
        hint = "update edit-mobile" if is_int(version) and version > PIPELINE_SCHEMA_VERSION else "re-export the artifact"
        raise UserError(f"{path} has schema_version {_show(version)}; this runtime reads versions "
                        f"{SCHEMA_VERSION} and {PIPELINE_SCHEMA_VERSION}: {hint}")
    missing = [field for field in REQUIRED_FIELDS if field not in data]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; re-export the artifact")
    if data["precision"] not in PRECISIONS:
        raise UserError(f"{path}: precision {_show(data['precision'])} is not one of {', '.join(PRECISIONS)}")
    check = _Checker(path)
    check.model(data["model"])
    check.pair(data["resolution"], "resolution", MAX_PIXELS_PER_SIDE)
    if data.get("latent") is not None:
        check.pair(data["latent"], "latent", MAX_PIXELS_PER_SIDE)
    check.integer(data["batch"], "batch", 1, MAX_BATCH)
    if data.get("prompt_tokens") is not None:
        check.integer(data["prompt_tokens"], "prompt_tokens", 1, MAX_PROMPT_TOKENS)
    check.choice(data["backend"], "backend", BACKENDS)
    check.tensors(data["inputs"], "inputs")
    check.tensors(data["outputs"], "outputs")
    check.files(data["files"])
    check.quantization(data.get("quantization"))
    check.optional_object(data.get("delegation"), "delegation", strings=("delegates",))
    check.optional_object(data.get("program"), "program")
    check.strings(data.get("passes", []), "passes")
    if not isinstance(data["files"], dict) or "program" not in data["files"] and "bundled_program" not in data["files"]:
        raise UserError(f"{path} lists no 'program' file; re-export the artifact")
    if version == PIPELINE_SCHEMA_VERSION:
        check.pipeline(data.get("pipeline"), data["files"])


class _Checker:
    """Field checks of one manifest; each failure is one line naming the field and the fix."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field: str, wanted: str, value) -> UserError:
        return UserError(f"{self.path}: {field} must be {wanted}, not {_show(value)}; re-export the artifact")

    def integer(self, value, field: str, low: int, high: int) -> int:
        if not is_int(value) or not low <= value <= high:
            raise self.fail(field, f"a whole number from {low} to {high}", value)
        return value

    def text(self, value, field: str) -> str:
        if not isinstance(value, str) or "\0" in value:
            raise self.fail(field, "a string", value)
        return value

    def choice(self, value, field: str, choices) -> str:
        if value not in choices:
            raise self.fail(field, f"one of {', '.join(choices)}", value)
        return value

    def obj(self, value, field: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, "an object", value)
        return value

    def strings(self, value, field: str) -> None:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(field, "a list of strings", value)

    def pair(self, value, field: str, high: int) -> None:
        if not isinstance(value, list) or len(value) != 2 or not all(is_int(v) and 1 <= v <= high for v in value):
            raise self.fail(field, f"[height, width] of whole numbers from 1 to {high}", value)

    def model(self, value) -> None:
        self.obj(value, "model")
        for key in ("source", "family", "class_name"):
            if key in value:
                self.text(value[key], f"model.{key}")
        if "config" in value:
            self.obj(value["config"], "model.config")

    def tensors(self, value, field: str) -> None:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_TENSORS:
            raise self.fail(field, f"a list of 1 to {MAX_TENSORS} tensors", value)
        for index, item in enumerate(value):
            self.tensor(item, f"{field}[{index}]")
        names = [item["name"] for item in value]
        if len(set(names)) != len(names):
            raise self.fail(field, "tensors of distinct names", names)

    def pipeline(self, value, files: dict) -> None:
        """Version 2: the methods (I/O as `inputs`), resolutions, text, scheduler and defaults."""
        self.obj(value, "pipeline")
        methods = self.obj(value.get("methods"), "pipeline.methods")
        if not 1 <= len(methods) <= MAX_TENSORS:
            raise self.fail("pipeline.methods", f"1 to {MAX_TENSORS} methods", len(methods))
        for name, method in methods.items():
            self.obj(method, f"pipeline.methods.{name}")
            self.tensors(method.get("inputs"), f"pipeline.methods.{name}.inputs")
            self.tensors(method.get("outputs"), f"pipeline.methods.{name}.outputs")
        resolutions = value.get("resolutions")
        if not isinstance(resolutions, list) or not resolutions:
            raise self.fail("pipeline.resolutions", "a non-empty list of [height, width]", resolutions)
        for index, pair in enumerate(resolutions):
            self.pair(pair, f"pipeline.resolutions[{index}]", MAX_PIXELS_PER_SIDE)
            for method in (f"denoise_{pair[0]}x{pair[1]}", f"decode_{pair[0]}x{pair[1]}"):
                if method not in methods:
                    raise self.fail("pipeline.methods", f"an object holding {method}", sorted(methods))
        self.text_block(self.obj(value.get("text"), "pipeline.text"), files)
        scheduler = self.obj(value.get("scheduler"), "pipeline.scheduler")
        self.text(scheduler.get("class_name"), "pipeline.scheduler.class_name")
        defaults = self.obj(value.get("defaults"), "pipeline.defaults")
        self.integer(defaults.get("steps"), "pipeline.defaults.steps", 1, 1000)

    def text_block(self, text: dict, files: dict) -> None:
        """`tokenizers` (one entry a tokenizer folder), schema v2.0's one tokenizer's fields, or
        `precomputed`: the embeddings of fixed prompts (export --fixed-prompts)."""
        if "precomputed" in text:
            self.precomputed(self.obj(text["precomputed"], "pipeline.text.precomputed"), files)
            return
        tokenizers = tokenizer_descriptions(text)
        if not isinstance(tokenizers, list) or not 1 <= len(tokenizers) <= MAX_TENSORS:
            raise self.fail("pipeline.text.tokenizers", f"a list of 1 to {MAX_TENSORS} tokenizers", tokenizers)
        for index, item in enumerate(tokenizers):
            field = f"pipeline.text.tokenizers[{index}]"
            self.obj(item, field)
            self.integer(item.get("max_length"), f"{field}.max_length", 1, MAX_PROMPT_TOKENS)
            if not self.text(item.get("input_ids"), f"{field}.input_ids"):
                raise self.fail(f"{field}.input_ids", "the encode_prompt input it fills", item.get("input_ids"))
            role = item.get("files")
            if not isinstance(role, str) or files.get(role, {}).get("path") != role:
                raise self.fail(f"{field}.files", "a tokenizer folder listed under files by that name", role)

    def precomputed(self, value: dict, files: dict) -> None:
        field = "pipeline.text.precomputed"
        prompts = value.get("prompts")
        self.strings(prompts, f"{field}.prompts")
        if not 1 <= len(prompts) <= MAX_ITEMS - 1:
            raise self.fail(f"{field}.prompts", f"1 to {MAX_ITEMS - 1} prompts", len(prompts))
        self.integer(value.get("negative_row"), f"{field}.negative_row", 0, 0)
        self.strings(value.get("outputs"), f"{field}.outputs")
        if value.get("file") not in files:
            raise self.fail(f"{field}.file", "a file role listed under files", value.get("file"))

    def tensor(self, value, field: str) -> None:
        self.obj(value, field)
        if not self.text(value.get("name"), f"{field}.name"):
            raise self.fail(f"{field}.name", "a non-empty string", value.get("name"))
        shape = value.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(is_int(d) and d >= 1 for d in shape):
            raise self.fail(f"{field}.shape", f"a list of at most {MAX_RANK} whole numbers of 1 or more", shape)
        elements = 1
        for dim in shape:
            elements *= dim
        if elements > MAX_TENSOR_ELEMENTS:
            raise self.fail(f"{field}.shape", f"a shape of at most {MAX_TENSOR_ELEMENTS} elements", shape)
        self.choice(value.get("dtype"), f"{field}.dtype", KNOWN_DTYPES)

    def files(self, value) -> None:
        self.obj(value, "files")
        for role, entry in value.items():
            self.obj(entry, f"files.{role}")
            _relative_path(self.text(entry.get("path"), f"files.{role}.path"), role)
            digest = entry.get("sha256")
            if not isinstance(digest, str) or len(digest) != 64 or not set(digest.lower()) <= SHA256_HEX:
                raise self.fail(f"files.{role}.sha256", "64 hexadecimal digits", digest)
            if entry.get("bytes") is not None:
                self.integer(entry["bytes"], f"files.{role}.bytes", 0, MAX_FILE_BYTES)

    def quantization(self, value) -> None:
        if value is None:
            return
        self.obj(value, "quantization")
        if "scheme" in value:
            self.text(value["scheme"], "quantization.scheme")
        if value.get("heldout_records") is not None:
            self.integer(value["heldout_records"], "quantization.heldout_records", 0, MAX_ITEMS * MAX_BATCH)
        if value.get("calibration") is not None:
            calibration = self.obj(value["calibration"], "quantization.calibration")
            if calibration.get("manifest_sha256") is not None:
                self.text(calibration["manifest_sha256"], "quantization.calibration.manifest_sha256")

    def optional_object(self, value, field: str, strings: tuple[str, ...] = ()) -> None:
        if value is None:
            return
        self.obj(value, field)
        for key in strings:
            if key in value:
                self.strings(value[key], f"{field}.{key}")




def tokenizer_descriptions(text: dict):
    """pipeline.text's `tokenizers` entries; a schema v2.0 manifest describes its one tokenizer
    (T5's input_ids and attention_mask) with fields of pipeline.text itself."""
    if "tokenizers" in text:
        return text["tokenizers"]
    return [{"files": text.get("tokenizer"), "max_length": text.get("max_length"), "input_ids": "input_ids",
             "attention_mask": "attention_mask", "preprocessing": text.get("preprocessing", "none")}]


def _show(value) -> str:
    """A value as the error line quotes it: repr, cut short (a field can be megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."




def _io_spec(item: dict) -> IOSpec:
    return IOSpec(item["name"], tuple(item["shape"]), item["dtype"])


def _relative_path(relative: str, role: str) -> PurePosixPath:
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise UserError(f"manifest file '{role}' path {_show(relative)} leaves the artifact folder; it must be relative inside it")
    return pure


def _file_entry(root: Path, role: str, entry: dict) -> FileEntry:
    pure = _relative_path(entry["path"], role)
    size = entry.get("bytes")
    return FileEntry(role, root / pure, entry["path"], entry["sha256"].lower(), size, root)


# --- the files themselves ------------------------------------------------------------------

def _check_inside(root: Path, path: Path, label: str) -> None:
    """Refuse a link that leaves the artifact folder, and anything but files and folders (a
    FIFO or a device would block or never end when hashed)."""
    try:
        resolved = path.resolve()
        mode = resolved.stat().st_mode if resolved.exists() else stat.S_IFREG
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop
        raise UserError(f"{label} cannot be resolved ({one_line(err)}); copy the artifact again or re-export it") from err
    if not resolved.is_relative_to(root):
        raise UserError(
            f"{label} resolves to {resolved}, outside the artifact folder {root}; "
            "copy the artifact with its files in it (no links out of it)"
        )
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"{label} is not a regular file or folder; copy the artifact again or re-export it")


def _check_folder(root: Path, folder: Path, label: str) -> list[tuple[Path, str]]:
    """Every entry below a listed folder stays inside the artifact too (links not followed);
    returns its files with their labels."""
    files = []
    for parent, folder_names, file_names in os.walk(folder):
        for name in [*folder_names, *file_names]:
            path = Path(parent) / name
            inner_label = f"{label}/{path.relative_to(folder).as_posix()}"
            _check_inside(root, path, inner_label)
            if name in file_names:
                files.append((path, inner_label))
    return files


def _check_safetensors(path: Path, label: str) -> None:
    """The header parses as safetensors' loader parses it (offsets, dtypes, sizes), so every
    consumer then loads the file without a SafetensorError escaping."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except Exception as err:  # SafetensorError, OSError, ...
        raise UserError(f"{label} is not a valid safetensors file ({one_line(err)}); re-export the artifact") from err


def verify_file(entry: FileEntry) -> None:
    """Refuse a missing, truncated, changed or escaping file (or folder), in one line naming it.

    Hashes are computed exactly as export wrote them (edit_mobile.export.manifest.file_entry:
    a folder's is the sha256 of '<relative path>\\0<file sha256>\\n' over its files in path order)."""
    from edit_mobile.export.manifest import file_entry

    label = f"{entry.relative} ({entry.role})"
    _check_inside(entry.root, entry.path, label)
    if not entry.path.exists():
        raise UserError(f"{label} listed in the manifest is missing from {entry.root}")
    files = [(entry.path, label)]
    if entry.path.is_dir():
        files = _check_folder(entry.root, entry.path, entry.relative)
    elif entry.bytes is not None:
        actual = entry.path.stat().st_size
        if actual != entry.bytes:
            raise UserError(
                f"{label} is {actual} bytes but the manifest says {entry.bytes}: "
                "the file is truncated or replaced; copy the artifact again or re-export it"
            )
    try:
        actual_hash = file_entry(entry.path.parent, entry.path.name)["sha256"]
    except OSError as err:
        raise UserError(f"cannot read {label}: {one_line(err)}; copy the artifact again or re-export it") from err
    if actual_hash != entry.sha256:
        raise UserError(
            f"{label} has sha256 {actual_hash[:12]}… but the manifest says "
            f"{entry.sha256[:12]}…: it changed after export; copy the artifact again or re-export it"
        )
    for path, file_label in files:
        if path.suffix == ".safetensors" and path.is_file():
            _check_safetensors(path, file_label)
